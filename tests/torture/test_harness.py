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

from keelson.raft.types import Entry, HardState
from keelson.transport.frames import MAGIC, PROTOCOL_VERSION, Handshake, encode_handshake
from keelson.wal import WAL
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


def test_tear_wal_tail_changes_only_bytes_after_the_last_record(tmp_path: Path) -> None:
    """A real WAL of complete records: tearing never touches them, every shape occurs, the
    member's WAL reader repairs the tail, keeps every entry and appends after it."""
    shapes: set[str] = set()
    for seed in range(30):
        data_dir = tmp_path / str(seed)
        d = data_dir / "member" / "wal"
        wal = WAL.create(d, b"m", segment_size=64 * 1024)
        rng = random.Random(seed)
        entries = [Entry(1, i, data=rng.randbytes(rng.randrange(1, 200))) for i in range(1, 40)]
        for e in entries:
            wal.save(HardState(1, 0, e.index), [e], must_sync=True)
        written = wal.segment_offset
        wal.close()
        seg = sorted(d.glob("*.wal"))[-1]
        before = seg.read_bytes()
        desc = tear_wal_tail(data_dir, random.Random(seed))
        after = seg.read_bytes()
        shapes.add(desc.split(": ")[1])
        assert after[:written] == before[:written], desc
        assert after != before, desc
        wal, got = WAL.open(d, segment_size=64 * 1024)
        assert list(got.entries) == entries, desc
        wal.save(None, [Entry(1, 40, data=b"after")], must_sync=True)
        wal.close()
        wal, got = WAL.open(d, segment_size=64 * 1024)
        assert [e.index for e in got.entries] == list(range(1, 41)), desc
        wal.close()
    assert shapes == {"partial", "garbage", "truncate"}, shapes


def test_micro_ops_read_own_appends() -> None:
    mops = (("r", "k", None), ("append", "k", 3), ("r", "k", None), ("r", "j", None))
    result, state = run_micro_ops(mops, {"k": [1, 2], "j": []})
    assert result == (("r", "k", (1, 2)), ("append", "k", 3), ("r", "k", (1, 2, 3)), ("r", "j", ()))
    assert state == {"k": [1, 2, 3], "j": []}
