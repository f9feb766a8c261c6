"""Peer TLS between keelson member processes (issue 5): ``https://`` peer URLs with
certificates from a test CA and ``--peer-client-cert-auth``; a member holding a certificate
from a rogue CA can neither join nor send raft messages, and the good members say so once
per peer; ``--peer-auto-tls`` clusters.

Certificates are made by keelson.testing.certs in the test's tmp dir. Client URLs stay
plain ``http://`` (client TLS is tested in tests/compat/test_tls_vs_etcd.py).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.testing.certs import CA, make_ca
from keelson.testing.cluster import ProcessCluster, ProcessMember, free_port
from keelson.testing.etcd import EtcdProcess, etcdctl

REFUSED = "refused TLS connection from 127.0.0.1: certificate verify failed"


def eventually(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout}s: {what}")
        time.sleep(0.2)


def put(m: ProcessMember, key: bytes, value: bytes) -> int:
    with m.channel() as ch:
        resp = pbg.KVStub(ch).Put(pb.PutRequest(key=key, value=value), timeout=20)
        return int(resp.header.revision)


def local_value(m: ProcessMember, key: bytes) -> bytes | None:
    """``key`` as ``m`` has applied it (serializable read); None if absent or unreachable."""
    try:
        with m.channel() as ch:
            resp = pbg.KVStub(ch).Range(pb.RangeRequest(key=key, serializable=True), timeout=3)
    except grpc.RpcError:
        return None
    return bytes(resp.kvs[0].value) if resp.kvs else None


def peer_flags(ca: CA, pki: Path, name: str, *, trusted: CA | None = None) -> tuple[str, ...]:
    """``name``'s certificate signed by ``ca``; it trusts ``trusted`` (default ``ca``)."""
    pair = ca.issue(pki, name, cn=name)
    return (
        "--peer-cert-file", pair.cert_file,
        "--peer-key-file", pair.key_file,
        "--peer-trusted-ca-file", (trusted or ca).cert_file,
        "--peer-client-cert-auth",
    )  # fmt: skip


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, CA, CA]:
    base = tmp_path / "pki"
    return base, make_ca(base, "cluster-ca"), make_ca(base, "rogue-ca")


@pytest.fixture
def tls_cluster(tmp_path: Path, pki: tuple[Path, CA, CA]) -> Iterator[ProcessCluster]:
    base, ca, _ = pki
    c = ProcessCluster(tmp_path / "cluster", 3, peer_scheme="https")
    for m in c.members:
        m.extra_args = peer_flags(ca, base, m.name)
    c.start_all()
    try:
        yield c
    finally:
        c.stop_all()


def tls_probe(port: int, ctx: ssl.SSLContext) -> str:
    """Dial a peer port with ``ctx``, write a byte and read: "" if the connection stayed up
    (the transport waits for a handshake frame), else the TLS error seen."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.settimeout(1.0)
                s.sendall(b"\0")
                try:
                    data = s.recv(1)
                except TimeoutError:
                    return ""
                return "closed" if data == b"" else ""
        except (ssl.SSLError, OSError) as exc:
            return str(exc)


def test_three_members_with_peer_tls(tls_cluster: ProcessCluster, pki: tuple[Path, CA, CA]) -> None:
    c = tls_cluster
    base, ca, rogue_ca = pki
    lead = c.wait_ready(90)
    assert all(m.peer_url.startswith("https://") for m in c.members)

    # The peer port speaks TLS and wants a certificate from the cluster CA.
    good = ca.issue(base, "probe", cn="probe")
    ok_ctx = ssl.create_default_context(cafile=ca.cert_file)
    ok_ctx.load_cert_chain(good.cert_file, good.key_file)
    assert tls_probe(lead.peer_port, ok_ctx) == ""
    anonymous = ssl.create_default_context(cafile=ca.cert_file)
    assert re.search(r"certificate required|closed|reset", tls_probe(lead.peer_port, anonymous))
    rogue = rogue_ca.issue(base, "probe-rogue", cn="probe")
    rogue_ctx = ssl.create_default_context(cafile=ca.cert_file)
    rogue_ctx.load_cert_chain(rogue.cert_file, rogue.key_file)
    assert re.search(r"unknown ca|closed|reset", tls_probe(lead.peer_port, rogue_ctx))

    # Replication.
    follower = next(m for m in c.members if m is not lead)
    put(follower, b"k1", b"v1")
    for m in c.members:
        eventually(lambda m=m: local_value(m, b"k1") == b"v1", f"{m.name} has k1")

    # The leader dies; the two others elect a new one and go on.
    c.stop(lead, signal.SIGKILL)
    new_lead = c.wait_ready(90)
    assert new_lead is not lead
    put(new_lead, b"k2", b"v2")
    c.start(lead)
    eventually(lambda: local_value(lead, b"k2") == b"v2", "restarted member catches up", 90)
    assert local_value(lead, b"k1") == b"v1"


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")
def test_rogue_ca_member_cannot_join_or_disturb(
    tls_cluster: ProcessCluster, pki: tuple[Path, CA, CA]
) -> None:
    c = tls_cluster
    base, ca, rogue_ca = pki
    lead = c.wait_ready(90)
    before = c.status(lead, timeout=5)
    assert before is not None

    # A rogue member trusts the cluster CA (so it can verify the members) but presents a
    # certificate from another CA. It is added by an operator, then tries to join.
    rogue = c.new_member("rogue")
    rogue.extra_args = peer_flags(rogue_ca, base, "rogue", trusted=ca)
    out = etcdctl(
        c.endpoints, "--command-timeout=20s", "member", "add", "rogue",
        f"--peer-urls={rogue.peer_url}", timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    added = re.search(r"Member\s+([0-9a-f]+) added", out.stdout)
    initial = re.search(r'^ETCD_INITIAL_CLUSTER="([^"]*)"$', out.stdout, re.M)
    assert added and initial, out.stdout
    c.start(rogue, "existing", initial_cluster=initial.group(1))
    assert c.wait_exit(rogue, 60) == 1
    assert "cannot fetch cluster info from peer urls" in c.log_text(rogue)
    assert "is our certificate signed by a CA the peer trusts?" in c.log_text(rogue)
    for m in c.members[:3]:
        eventually(lambda m=m: REFUSED in c.log_text(m), f"{m.name} logs the refusal", 30)

    # The same rogue started as a member of a "new" cluster campaigns and sends raft
    # messages to the members, over and over; every attempt dies at the TLS handshake. The
    # leader also dials the added member's URL, where the rogue now answers with its
    # rogue certificate: refused by the leader's verification.
    rogue_cluster = c.initial_cluster + f",rogue={rogue.peer_url}"
    c.start(rogue, "new", initial_cluster=rogue_cluster, extra_args=("--log-level", "debug"))
    eventually(
        lambda: len(re.findall(r"cannot reach peer", c.log_text(rogue))) >= 6,
        "the rogue retried its dials",
        60,
    )
    eventually(
        lambda: "TLS handshake with peer" in c.log_text(lead), "leader logs its failed dial", 30
    )
    time.sleep(3)  # more retries from both sides
    assert rogue.proc is not None and rogue.proc.poll() is None
    for m in c.members[:3]:
        text = c.log_text(m)
        assert text.count(REFUSED) == 1, f"{m.name} logged the refusal once per peer:\n{text}"
        assert "rejecting connection from" not in text  # stopped at TLS, before any frame
    lead_log = c.log_text(lead)
    failures = re.findall(r"TLS handshake with peer ([0-9a-f]+) failed: (.*)", lead_log)
    assert len(failures) == 1, lead_log
    assert failures[0][0] == added.group(1).lstrip("0")
    assert "certificate verify failed" in failures[0][1]

    after = c.status(lead, timeout=5)
    assert after is not None
    assert (after.leader, after.raftTerm) == (before.leader, before.raftTerm)
    put(lead, b"still", b"fine")
    c.stop(rogue)
    out = etcdctl(
        c.endpoints, "--command-timeout=20s", "member", "remove", added.group(1), timeout=60
    )
    assert out.returncode == 0, out.stderr


def test_three_members_with_peer_auto_tls(tmp_path: Path) -> None:
    c = ProcessCluster(
        tmp_path / "cluster", 3, peer_scheme="https", extra_args=("--peer-auto-tls",)
    )
    c.start_all()
    try:
        lead = c.wait_ready(90)
        certs = {m.name: (m.data_dir / "fixtures" / "peer" / "cert.pem") for m in c.members}
        assert all(p.is_file() for p in certs.values())
        assert len({p.read_bytes() for p in certs.values()}) == 3  # one self-signed cert each
        put(lead, b"a", b"1")
        for m in c.members:
            eventually(lambda m=m: local_value(m, b"a") == b"1", f"{m.name} has a")
        follower = next(m for m in c.members if m is not lead)
        kept = certs[follower.name].read_bytes()
        c.stop(follower)
        put(lead, b"b", b"2")
        c.start(follower)
        eventually(lambda: local_value(follower, b"b") == b"2", "restarted member catches up")
        assert certs[follower.name].read_bytes() == kept  # reused, not regenerated
    finally:
        c.stop_all()


def test_peer_cert_allowed_cn(tmp_path: Path, pki: tuple[Path, CA, CA]) -> None:
    """``--peer-cert-allowed-cn``: a certificate from the trusted CA with another CN is
    refused after the handshake, and the member says why, once."""
    base, ca, _ = pki
    c = ProcessCluster(tmp_path / "cluster", 1, peer_scheme="https")
    pair = ca.issue(base, "m0", cn="member")
    c.members[0].extra_args = (
        "--peer-cert-file", pair.cert_file,
        "--peer-key-file", pair.key_file,
        "--peer-trusted-ca-file", ca.cert_file,
        "--peer-client-cert-auth",
        "--peer-cert-allowed-cn", "member",
    )  # fmt: skip
    c.start_all()
    try:
        c.wait_ready(90)
        port = c.members[0].peer_port
        contexts = {}
        for cn in ("member", "intruder"):
            dialer = ca.issue(base, f"dialer-{cn}", cn=cn)
            ctx = ssl.create_default_context(cafile=ca.cert_file)
            ctx.load_cert_chain(dialer.cert_file, dialer.key_file)
            contexts[cn] = ctx
        assert tls_probe(port, contexts["member"]) == ""
        for _ in range(3):
            assert tls_probe(port, contexts["intruder"]) == "closed"
        line = (
            "refused TLS connection from 127.0.0.1: client certificate authentication failed "
            "(CN intruder, allowed member)"
        )
        eventually(lambda: line in c.log_text(c.members[0]), "the refusal is logged", 30)
        assert c.log_text(c.members[0]).count(line) == 1
    finally:
        c.stop_all()


def probe_outcomes(port: int, base: Path, ca: CA, rogue_ca: CA) -> dict[str, bool]:
    """Which dialers a peer port lets through: a certificate from the cluster CA, one from
    the rogue CA, none."""
    ctxs: dict[str, ssl.SSLContext] = {}
    for name, signer in (("good", ca), ("rogue", rogue_ca), ("none", None)):
        ctx = ssl.create_default_context(cafile=ca.cert_file)
        if signer is not None:
            pair = signer.issue(base, f"probe-{name}", cn=f"probe-{name}")
            ctx.load_cert_chain(pair.cert_file, pair.key_file)
        ctxs[name] = ctx
    return {name: tls_probe(port, ctx) == "" for name, ctx in ctxs.items()}


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")
def test_peer_port_admits_the_same_dialers_as_etcd(
    tmp_path: Path, pki: tuple[Path, CA, CA]
) -> None:
    """The same flags on a real etcd 3.4 and on keelson: each peer port lets through the
    dialer with a cluster-CA certificate and refuses the rogue and the anonymous ones."""
    base, ca, rogue_ca = pki
    etcd_port = free_port()
    url = f"https://127.0.0.1:{etcd_port}"
    etcd = EtcdProcess(
        str(tmp_path / "etcd"),
        name="e",
        peer_port=etcd_port,
        extra_args=(
            "--listen-peer-urls", url,
            "--initial-advertise-peer-urls", url,
            "--initial-cluster", f"e={url}",
            *peer_flags(ca, base, "e"),
        ),
    )  # fmt: skip
    c = ProcessCluster(tmp_path / "cluster", 1, peer_scheme="https")
    c.members[0].extra_args = peer_flags(ca, base, "k")
    with etcd:
        c.start_all()
        try:
            c.wait_ready(90)
            expected = {"good": True, "rogue": False, "none": False}
            assert probe_outcomes(etcd_port, base, ca, rogue_ca) == expected
            assert probe_outcomes(c.members[0].peer_port, base, ca, rogue_ca) == expected
        finally:
            c.stop_all()
