"""Fast tests of the torture harness's own parts: the proxy's rules, the WAL tearing and the
append workload's micro-op semantics (no keelson cluster)."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keelson.transport.frames import MAGIC, PROTOCOL_VERSION, Handshake, encode_handshake
from tests.torture.faults import tear_wal_tail
from tests.torture.proxy import PeerProxy
from tests.torture.workloads import run_micro_ops


class _Echo:
    """A listener standing in for a member: echoes every byte back on each connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                self.received += data
                conn.sendall(data)


@pytest.fixture
def proxy() -> Iterator[PeerProxy]:
    p = PeerProxy()
    try:
        yield p
    finally:
        p.close()


def _dial(port: int, sender: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(encode_handshake(Handshake(MAGIC, PROTOCOL_VERSION, 0, 1, sender, 99)))
    return s


def _roundtrip(s: socket.socket, payload: bytes) -> bytes:
    s.sendall(payload)
    got = b""
    while not got.endswith(payload):
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        got += chunk
    return got


def test_proxy_forwards_and_cuts_one_direction(proxy: PeerProxy) -> None:
    echo = _Echo()
    port = proxy.add_member("b", echo.port)
    proxy.set_member_id(7, "a")
    proxy.set_member_id(8, "c")
    s = _dial(port, 7)
    assert _roundtrip(s, b"hello").endswith(b"hello")  # handshake echoed first, then data
    proxy.cut("a", "b")
    with pytest.raises(OSError):  # the existing connection is closed
        for _ in range(50):
            _roundtrip(s, b"x")
            time.sleep(0.05)
    refused = _dial(port, 7)  # new ones are closed right after their handshake
    refused.settimeout(5)
    assert refused.recv(10) == b""
    assert _roundtrip(_dial(port, 8), b"other").endswith(b"other")  # c -> b still passes
    proxy.cut("b", "a")
    proxy.heal()
    assert _roundtrip(_dial(port, 7), b"again").endswith(b"again")


def test_proxy_learns_a_sender_id_after_it_dialled(proxy: PeerProxy) -> None:
    echo = _Echo()
    port = proxy.add_member("b", echo.port)
    s = _dial(port, 42)  # unknown sender: passes under the "?" rule
    assert _roundtrip(s, b"one").endswith(b"one")
    proxy.set_member_id(42, "late")
    proxy.cut("late", "b")
    with pytest.raises(OSError):
        for _ in range(50):
            _roundtrip(s, b"x")
            time.sleep(0.05)


def test_proxy_delay_holds_bytes(proxy: PeerProxy) -> None:
    echo = _Echo()
    port = proxy.add_member("b", echo.port)
    proxy.set_member_id(7, "a")
    s = _dial(port, 7)
    _roundtrip(s, b"warm")
    proxy.delay("a", "b", 300)
    t0 = time.monotonic()
    _roundtrip(s, b"slow")
    assert time.monotonic() - t0 >= 0.25


def test_tear_wal_tail_changes_only_the_last_written_bytes(tmp_path: Path) -> None:
    wal = tmp_path / "member" / "wal"
    wal.mkdir(parents=True)
    written = bytes(range(1, 201))
    seg = wal / "0000000000000001-0000000000000000.wal"
    seg.write_bytes(written + bytes(1000))
    (wal / "0000000000000000-0000000000000000.wal").write_bytes(b"\x01" * 50)
    for seed in range(20):
        seg.write_bytes(written + bytes(1000))
        desc = tear_wal_tail(tmp_path, random.Random(seed))
        after = seg.read_bytes()
        assert seg.name in desc
        assert len(after) in (1200,)
        changed = [i for i in range(1200) if after[i] != (written + bytes(1000))[i]]
        assert changed, desc
        assert min(changed) >= 200 - 48 and max(changed) < 200


def test_micro_ops_read_own_appends() -> None:
    mops = (("r", "k", None), ("append", "k", 3), ("r", "k", None), ("r", "j", None))
    result, state = run_micro_ops(mops, {"k": [1, 2], "j": []})
    assert result == (("r", "k", (1, 2)), ("append", "k", 3), ("r", "k", (1, 2, 3)), ("r", "j", ()))
    assert state == {"k": [1, 2, 3], "j": []}
