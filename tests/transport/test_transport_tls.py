"""The peer transport over mutual TLS (certificates from keelson.testing.certs): members of
the CA talk; a member with a rogue-CA certificate cannot deliver a raft message, and both
the listener that refuses it and the dialer that cannot verify it log one line per peer
however often it retries. Runs on asyncio and on uvloop (what ``keelson serve`` uses)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from keelson.cli import tls
from keelson.raft.types import Message, MessageType
from keelson.testing.certs import CA, make_ca
from keelson.transport.transport import Transport

CLUSTER = 0xC1


def member(
    mid: int,
    on_message: Callable[[Message], None],
    ca: CA,
    signer: CA,
    base: Path,
    *,
    allowed_cn: str = "",
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> Transport:
    """A transport for member ``mid`` with a certificate from ``signer`` for ``hosts``,
    trusting ``ca``, requiring client certificates and checking them as ``keelson serve``
    does (SANs against the dialer's address, ``allowed_cn``)."""
    pair = signer.issue(base, f"m{mid}", cn=f"m{mid}", hosts=hosts)
    info = tls.TLSInfo(pair.cert_file, pair.key_file, ca.cert_file, True, allowed_cn=allowed_cn)
    return Transport(
        mid,
        CLUSTER,
        on_message,
        ssl_server=tls.server_context(info),
        ssl_client=tls.client_context(info),
        peer_cert_check=tls.peer_cert_check(info),
        backoff_max=0.1,
    )


async def eventually(pred: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def hb(frm: int, to: int) -> Message:
    return Message(type=MessageType.HEARTBEAT, to=to, frm=frm, term=1)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_rogue_member_is_refused_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, loop: str
) -> None:
    base = tmp_path / "pki"
    ca, rogue_ca = make_ca(base, "ca"), make_ca(base, "rogue")
    got: dict[int, list[Message]] = {1: [], 2: [], 3: []}

    async def body() -> None:
        a = member(1, got[1].append, ca, ca, base)
        b = member(2, got[2].append, ca, ca, base)
        rogue = member(3, got[3].append, ca, rogue_ca, base)
        ports = {1: await a.start("127.0.0.1", 0), 2: await b.start("127.0.0.1", 0)}
        ports[3] = await rogue.start("127.0.0.1", 0)
        a.add_peer(2, [f"https://127.0.0.1:{ports[2]}"])
        a.add_peer(3, [f"https://127.0.0.1:{ports[3]}"])
        rogue.add_peer(2, [f"https://127.0.0.1:{ports[2]}"])
        for _ in range(15):  # every round redials: the failed dial dropped the queue
            a.send([hb(1, 2), hb(1, 3)])
            rogue.send([hb(3, 2)])
            await asyncio.sleep(0.1)
        await eventually(lambda: len(got[2]) >= 1)
        assert {m.frm for m in got[2]} == {1}  # nothing from the rogue got through
        assert got[3] == []  # and the good member did not talk to it either
        await a.stop()
        await b.stop()
        await rogue.stop()
        # stop() released the TLS listeners
        for port in ports.values():
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))

    with caplog.at_level(logging.DEBUG, logger="keelson.transport"):
        if loop == "uvloop":
            uvloop = pytest.importorskip("uvloop")
            uvloop.run(asyncio.wait_for(body(), 120))
        else:
            asyncio.run(asyncio.wait_for(body(), 120))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    refused = [w for w in warnings if "certificate verify failed" in w and "refused TLS" in w]
    assert refused == [
        "transport: refused TLS connection from 127.0.0.1: certificate verify failed: "
        "unable to get local issuer certificate (logged once per host and reason)"
    ]
    dial = [w for w in warnings if "TLS handshake with peer 3 failed" in w]
    assert dial == [
        "transport: TLS handshake with peer 3 failed: certificate verify failed: unable to "
        "get local issuer certificate (logged once until it succeeds)"
    ]
    rogue_dial = [w for w in warnings if "TLS handshake with peer 2 failed" in w]
    assert len(rogue_dial) == 1 and "is our certificate signed by a CA" in rogue_dial[0]
    retries = [
        r for r in caplog.records if r.levelno == logging.DEBUG and "refused TLS" in r.getMessage()
    ]
    assert len(retries) >= 3  # it did retry; later refusals went to debug


@pytest.mark.parametrize(
    ("allowed_cn", "hosts", "reason"),
    [
        ("m1", ("127.0.0.1",), "client certificate authentication failed (CN m3, allowed m1)"),
        ("", ("10.1.2.3",), "x509: certificate is valid for 10.1.2.3, not 127.0.0.1"),
    ],
)
def test_verified_certificate_refused_after_the_handshake(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    allowed_cn: str,
    hosts: tuple[str, ...],
    reason: str,
) -> None:
    """A certificate from the trusted CA is still refused when its CN is not the allowed
    one (``--peer-cert-allowed-cn``) or it does not name the address it dials from (etcd
    3.4's SAN check)."""
    base = tmp_path / "pki"
    ca = make_ca(base, "ca")
    got: list[Message] = []

    async def body() -> None:
        b = member(2, got.append, ca, ca, base, allowed_cn=allowed_cn)
        port = await b.start("127.0.0.1", 0)
        ok = member(1, lambda m: None, ca, ca, base, hosts=("127.0.0.1",))
        other = member(3, lambda m: None, ca, ca, base, hosts=hosts)
        for t in (ok, other):
            t.add_peer(2, [f"https://127.0.0.1:{port}"])
        for _ in range(5):
            ok.send([hb(1, 2)])
            other.send([hb(3, 2)])
            await asyncio.sleep(0.1)
        await eventually(lambda: len(got) >= 1)
        await asyncio.sleep(0.3)
        assert {m.frm for m in got} == {1}
        for t in (ok, other, b):
            await t.stop()

    with caplog.at_level(logging.WARNING, logger="keelson.transport"):
        asyncio.run(asyncio.wait_for(body(), 120))
    refusals = [r.getMessage() for r in caplog.records if "refused TLS" in r.getMessage()]
    assert refusals == [
        f"transport: refused TLS connection from 127.0.0.1: {reason} "
        "(logged once per host and reason)"
    ]
