"""Transport over real sockets on 127.0.0.1 (OS-assigned ports)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from keelson.raft.types import (
    ConfState,
    Entry,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from keelson.transport.codec import encode_message
from keelson.transport.frames import (
    MAGIC,
    PROTOCOL_VERSION,
    Channel,
    FrameKind,
    Handshake,
    RejectReason,
    decode_rejection,
    encode_handshake,
    encode_snap_begin,
    frame,
)
from keelson.transport.snapshot import split_snapshot
from keelson.transport.transport import Transport, TransportError

CLUSTER = 0xC1


def run(coro: Coroutine[Any, Any, None], timeout: float = 20.0) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro, timeout)

    asyncio.run(main())


async def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class Node:
    """A transport plus everything its callbacks saw."""

    def __init__(self, node_id: int, **kwargs: Any) -> None:
        self.id = node_id
        self.received: list[Message] = []
        self.unreachable: list[int] = []
        self.snap_status: list[tuple[int, bool]] = []
        self.removed_calls = 0
        self.kwargs = kwargs
        self.t = self._make()
        self.port = 0

    def _make(self) -> Transport:
        return Transport(
            self.id,
            CLUSTER,
            self.received.append,
            on_unreachable=self.unreachable.append,
            on_snapshot_status=lambda i, f: self.snap_status.append((i, f)),
            on_removed=self._on_removed,
            **self.kwargs,
        )

    def _on_removed(self) -> None:
        self.removed_calls += 1

    async def start(self, port: int = 0) -> None:
        self.port = await self.t.start("127.0.0.1", port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def cluster(n: int, **kwargs: Any) -> list[Node]:
    nodes = [Node(i + 1, **kwargs) for i in range(n)]
    for node in nodes:
        await node.start()
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.t.add_peer(b.id, [b.url])
    return nodes


async def stop_all(nodes: list[Node]) -> None:
    for node in nodes:
        await node.t.stop()


def hb(frm: int, to: int, term: int = 1) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, frm=frm, term=term, commit=term)


def test_two_transports_exchange_messages() -> None:
    async def body() -> None:
        a, b = await cluster(2)
        app = Message(
            MessageType.APP,
            to=2,
            frm=1,
            term=3,
            index=7,
            log_term=2,
            commit=5,
            entries=(Entry(3, 8, data=b"put x"),),
            context=b"ctx",
        )
        a.t.send([app])
        b.t.send([Message(MessageType.APP_RESP, to=1, frm=2, term=3, index=8, reject=True)])
        await eventually(lambda: len(a.received) == 1 and len(b.received) == 1)
        assert b.received == [app]
        assert a.received[0].reject and a.received[0].index == 8
        since = a.t.active_since(2)
        assert since is not None
        assert a.t.active_since(99) is None
        await stop_all([a, b])
        assert a.t.active_since(2) is None

    run(body())


def test_three_transports_all_to_all() -> None:
    async def body() -> None:
        nodes = await cluster(3)
        for a in nodes:
            a.t.send([hb(a.id, b.id, term=a.id * 10 + b.id) for b in nodes if b is not a])
        await eventually(lambda: all(len(n.received) == 2 for n in nodes))
        for n in nodes:
            assert sorted(m.frm for m in n.received) == sorted(x.id for x in nodes if x is not n)
            assert all(m.term == m.frm * 10 + n.id for m in n.received)
        await stop_all(nodes)

    run(body())


def test_batching_coalesces_frames_into_few_writes() -> None:
    async def body() -> None:
        a, b = await cluster(2)
        for i in range(1000):
            a.t.send([hb(1, 2, term=i + 1)])
        await eventually(lambda: len(b.received) == 1000)
        assert [m.term for m in b.received] == list(range(1, 1001))
        stats = a.t.peer_stats(2)
        assert stats is not None
        assert stats.frames_sent == 1000
        assert stats.writes <= 10, stats
        await stop_all([a, b])

    run(body())


def test_an_idle_connection_is_written_at_once_and_in_order() -> None:
    async def body() -> None:
        a, b = await cluster(2)
        a.t.send([hb(1, 2, term=1)])  # dials: queued for the writer task
        await eventually(lambda: len(b.received) == 1)
        stats = a.t.peer_stats(2)
        assert stats is not None
        writes = stats.writes
        a.t.send([hb(1, 2, term=2), hb(1, 2, term=3)])  # one call: one write, right now
        after = a.t.peer_stats(2)
        assert after is not None and after.writes == writes + 1 and after.frames_sent == 3
        for i in range(4, 204):
            a.t.send([hb(1, 2, term=i)])
        await eventually(lambda: len(b.received) == 203)
        assert [m.term for m in b.received] == list(range(1, 204))
        await stop_all([a, b])

    run(body())


def test_reconnect_after_peer_restarts_on_same_port() -> None:
    async def body() -> None:
        a, b = await cluster(2, backoff_max=0.1)
        a.t.send([hb(1, 2, 1)])
        await eventually(lambda: len(b.received) == 1)
        first = a.t.active_since(2)
        port = b.port
        await b.t.stop()
        await eventually(lambda: a.t.active_since(2) is None)
        a.t.send([hb(1, 2, 2)])
        await eventually(lambda: 2 in a.unreachable)
        b2 = Node(2, backoff_max=0.1)
        await b2.start(port)

        async def keep_sending() -> None:
            term = 3
            while not b2.received:
                a.t.send([hb(1, 2, term)])
                term += 1
                await asyncio.sleep(0.02)

        await asyncio.wait_for(keep_sending(), 5)
        second = a.t.active_since(2)
        assert first is not None and second is not None and second > first
        await stop_all([a, b2])

    run(body())


def test_unreachable_peer_and_queue_overflow_are_reported() -> None:
    async def body() -> None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        a = Node(1, max_queue=3, backoff_initial=0.01)
        await a.start()
        a.t.add_peer(2, [f"http://127.0.0.1:{dead}"])
        a.t.send([hb(1, 2)])
        await eventually(lambda: 2 in a.unreachable)
        a.unreachable.clear()
        a.t.send([hb(1, 2, i) for i in range(10)])  # 3 fit, 7 overflow
        await asyncio.sleep(0)
        await eventually(lambda: a.unreachable.count(2) >= 7)
        stats = a.t.peer_stats(2)
        assert stats is not None and stats.dropped >= 7
        a.t.send([hb(1, 42)])  # unknown peer: dropped silently
        assert 42 not in a.unreachable
        await a.t.stop()

    run(body())


async def raw_connect(port: int, payload: bytes) -> bytes:
    """Send ``payload`` and return everything the listener sends before closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def handshake(cluster: int = CLUSTER, receiver: int = 2, magic: bytes = MAGIC) -> bytes:
    return encode_handshake(
        Handshake(magic, PROTOCOL_VERSION, Channel.MESSAGES, cluster, 9, receiver)
    )


def rejection(answer: bytes) -> tuple[int, str]:
    """The (reason, text) of a listener's whole answer, which must be one REJECTED frame."""
    (length,) = struct.unpack_from(">I", answer)
    assert len(answer) == 4 + length and answer[4] == FrameKind.REJECTED
    r = decode_rejection(answer[5:])
    return r.reason, r.text


def test_bad_handshakes_and_garbage_are_rejected_and_listener_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        a, b = await cluster(2, handshake_timeout=0.5)
        caplog.set_level(logging.WARNING, logger="keelson.transport.transport")
        assert rejection(await raw_connect(b.port, handshake(cluster=0xBAD))) == (
            RejectReason.MISMATCH, "cluster id bad, want c1"
        )
        assert rejection(await raw_connect(b.port, handshake(receiver=3))) == (
            RejectReason.MISMATCH, "addressed to member 3, this is 2"
        )
        assert rejection(await raw_connect(b.port, handshake(magic=b"HTTP")))[0] == (
            RejectReason.MISMATCH
        )
        assert await raw_connect(b.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""
        assert await raw_connect(b.port, struct.pack(">I", 0xFFFFFFF0) + b"x") == b""
        assert await raw_connect(b.port, bytes(range(256)) * 4) == b""
        assert await raw_connect(b.port, b"") == b""  # silent: handshake timeout
        # A good handshake followed by a corrupt message frame: answered OK, then closed.
        ok = await raw_connect(b.port, handshake() + struct.pack(">IB", 3, 3) + b"zz")
        assert ok == struct.pack(">IB", 1, 2)
        text = caplog.text
        assert "cluster id bad" in text and "addressed to member 3" in text
        assert "bad magic" in text and "outside" in text and "no frame in time" in text
        a.t.send([hb(1, 2, 5)])
        await eventually(lambda: len(b.received) == 1)
        assert b.received[0].term == 5 and b.received[0].frm == 1
        await stop_all([a, b])

    run(body())


def test_frames_over_the_cap_close_the_connection() -> None:
    async def body() -> None:
        a, b = await cluster(2, max_frame_bytes=2048, snapshot_chunk_bytes=1024)
        a.t.send([Message(MessageType.APP, to=2, frm=1, entries=(Entry(1, 1, data=b"x" * 4096),))])

        def written() -> bool:
            stats = a.t.peer_stats(2)
            return stats is not None and stats.writes == 1

        await eventually(written)
        await eventually(lambda: a.t.active_since(2) is None)  # b closed it
        assert b.received == []

        async def until_received() -> None:
            while not b.received:
                a.t.send([hb(1, 2, 7)])
                await asyncio.sleep(0.02)

        await asyncio.wait_for(until_received(), 5)
        assert b.received[0].term == 7
        await stop_all([a, b])

    run(body())


def test_request_response_errors_and_timeout() -> None:
    async def body() -> None:
        a, b = await cluster(2)

        async def echo(p: bytes) -> bytes:
            return b"echo:" + p

        async def fail(p: bytes) -> bytes:
            raise ValueError("lease not found")

        async def slow(p: bytes) -> bytes:
            await asyncio.sleep(10)
            return p

        b.t.set_request_handler("echo", echo)
        b.t.set_request_handler("fail", fail)
        b.t.set_request_handler("slow", slow)
        answers = await asyncio.gather(
            *(a.t.request(2, "echo", str(i).encode(), timeout=5) for i in range(50))
        )
        assert answers == [b"echo:" + str(i).encode() for i in range(50)]
        with pytest.raises(TransportError, match="lease not found"):
            await a.t.request(2, "fail", b"", timeout=5)
        with pytest.raises(TransportError, match="no handler for 'nope'"):
            await a.t.request(2, "nope", b"", timeout=5)
        with pytest.raises(TransportError, match="timed out"):
            await a.t.request(2, "slow", b"", timeout=0.2)
        with pytest.raises(TransportError, match="unknown peer"):
            await a.t.request(7, "echo", b"", timeout=1)
        # Still usable after all that.
        assert await a.t.request(2, "echo", b"z", timeout=5) == b"echo:z"
        # Requests to a stopped peer fail promptly, not after the timeout.
        await b.t.stop()
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TransportError):
            await a.t.request(2, "echo", b"", timeout=10)
        assert loop.time() - start < 5
        await a.t.stop()

    run(body())


def snap_message(size: int) -> Message:
    data = bytes(i % 251 for i in range(size))
    md = SnapshotMetadata(index=100, term=4, conf_state=ConfState(voters=(1, 2, 3)))
    return Message(MessageType.SNAP, to=2, frm=1, term=4, snapshot=Snapshot(md, data))


def test_large_snapshot_streams_while_heartbeats_flow() -> None:
    async def body() -> None:
        a, b = await cluster(2, snapshot_chunk_bytes=64 * 1024)
        a.t.send([hb(1, 2, 1)])
        await eventually(lambda: len(b.received) == 1)
        snap = snap_message(4 * 1024 * 1024)
        a.t.send([snap])
        term = 2

        def got_snap() -> bool:
            return any(m.type == MessageType.SNAP for m in b.received)

        while not got_snap():
            a.t.send([hb(1, 2, term)])
            term += 1
            await asyncio.sleep(0.001)
            assert term < 100_000
        kinds = [m.type for m in b.received]
        snap_at = kinds.index(MessageType.SNAP)
        assert kinds[1:snap_at].count(MessageType.HEARTBEAT) >= 1, "heartbeats were blocked"
        assert b.received[snap_at] == snap
        await eventually(lambda: a.snap_status == [(2, False)])
        await stop_all([a, b])

    run(body())


def test_snapshot_to_down_peer_reports_failure() -> None:
    async def body() -> None:
        a, b = await cluster(2)
        await b.t.stop()
        a.t.send([snap_message(1000)])
        await eventually(lambda: a.snap_status == [(2, True)])
        assert 2 in a.unreachable
        await a.t.stop()

    run(body())


def test_update_and_remove_peer() -> None:
    async def body() -> None:
        a, b, c = await cluster(3)
        a.t.send([hb(1, 2, 1)])
        await eventually(lambda: len(b.received) == 1)
        # Member 2 moves: a new transport with id 2 on another port.
        b2 = Node(2)
        await b2.start()
        a.t.update_peer(2, [b2.url])
        a.t.send([hb(1, 2, 2)])
        await eventually(lambda: len(b2.received) == 1)
        assert len(b.received) == 1
        a.t.remove_peer(3)
        a.t.send([hb(1, 3, 3)])
        await asyncio.sleep(0.1)
        assert c.received == [] and a.t.active_since(3) is None
        with pytest.raises(ValueError):
            a.t.add_peer(4, ["ftp://x:1"])
        with pytest.raises(ValueError):
            a.t.add_peer(4, ["https://127.0.0.1:1"])  # no client TLS context
        await stop_all([a, b, b2, c])

    run(body())


def test_stop_leaves_no_tasks_behind() -> None:
    async def body() -> None:
        before = asyncio.all_tasks()
        a, b = await cluster(2)

        async def slow(p: bytes) -> bytes:
            await asyncio.sleep(30)
            return p

        b.t.set_request_handler("slow", slow)
        pending = asyncio.ensure_future(a.t.request(2, "slow", b"", timeout=30))
        a.t.send([hb(1, 2, 1), snap_message(2 * 1024 * 1024)])
        await eventually(lambda: len(b.received) >= 1)
        await stop_all([a, b])
        with pytest.raises(TransportError):
            await pending
        await asyncio.sleep(0)
        assert asyncio.all_tasks() - before == set()

    run(body())


def test_removed_member_is_rejected_and_its_requests_fail() -> None:
    async def body() -> None:
        a, b = await cluster(2)

        async def slow(p: bytes) -> bytes:
            await asyncio.sleep(30)
            return p

        b.t.set_request_handler("slow", slow)
        pending = asyncio.ensure_future(a.t.request(2, "slow", b"", timeout=30))
        await eventually(lambda: a.t.active_since(2) is not None)
        a.t.remove_peer(2)
        with pytest.raises(TransportError, match="peer removed"):
            await pending
        # b removes a: a's connections are refused from now on.
        b.t.remove_peer(1)
        a.t.add_peer(2, [b.url])
        a.t.send([hb(1, 2, 9)])
        await eventually(lambda: 2 in a.unreachable)
        assert b.received == []
        assert a.removed_calls >= 1  # told why: it must stop, as etcd's removed member does
        await stop_all([a, b])

    run(body())


def test_tls_between_members(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))

    async def body() -> None:
        a = Node(1, ssl_server=server, ssl_client=client)
        b = Node(2, ssl_server=server, ssl_client=client)
        await a.start()
        await b.start()
        a.t.add_peer(2, [f"https://127.0.0.1:{b.port}"])
        b.t.add_peer(1, [f"https://127.0.0.1:{a.port}"])
        a.t.send([hb(1, 2, 3)])
        b.t.send([hb(2, 1, 4)])
        await eventually(lambda: len(a.received) == 1 and len(b.received) == 1)
        assert b.received[0].term == 3 and a.received[0].term == 4
        # A plain-TCP dialer is not served by a TLS listener.
        plain = Node(3)
        await plain.start()
        plain.t.add_peer(2, [b.url])
        plain.t.send([hb(3, 2)])
        await eventually(lambda: 2 in plain.unreachable)
        assert len(b.received) == 1
        await stop_all([a, b, plain])

    run(body())


def test_malformed_snapshot_streams_are_refused() -> None:
    async def body() -> None:
        a, b = await cluster(2, max_snapshot_bytes=1000)
        hs = encode_handshake(Handshake(MAGIC, PROTOCOL_VERSION, Channel.SNAPSHOT, CLUSTER, 1, 2))
        header, _ = split_snapshot(snap_message(10))
        ok = struct.pack(">IB", 1, FrameKind.HANDSHAKE_OK)
        # Announces more than max_snapshot_bytes.
        assert await raw_connect(b.port, hs + encode_snap_begin(10_000, header)) == ok
        # Chunks overrun the announced length.
        overrun = encode_snap_begin(4, header) + frame(FrameKind.SNAP_CHUNK, b"12345")
        assert await raw_connect(b.port, hs + overrun) == ok
        # A message frame where a chunk belongs.
        wrong = encode_snap_begin(4, header) + frame(FrameKind.MESSAGE, b"")
        assert await raw_connect(b.port, hs + wrong) == ok
        # Header that is not a MsgSnap.
        not_snap = encode_snap_begin(0, encode_message(hb(1, 2)))
        assert await raw_connect(b.port, hs + not_snap) == ok
        assert b.received == []
        # A well-formed one is delivered and acknowledged.
        good = encode_snap_begin(10, header) + frame(FrameKind.SNAP_CHUNK, bytes(range(10)))
        assert await raw_connect(b.port, hs + good) == ok + frame(FrameKind.SNAP_DONE)
        assert b.received == [snap_message(10)]
        await stop_all([a, b])

    run(body())


def test_remove_peer_closes_its_inbound_connection_and_it_learns_it_was_removed() -> None:
    async def body() -> None:
        a, b = await cluster(2)
        a.t.send([hb(1, 2, 3)])
        await eventually(lambda: len(b.received) == 1)
        assert a.removed_calls == 0
        b.t.remove_peer(1)  # a's established connection to b is closed by b

        async def until_told() -> None:
            while a.removed_calls == 0:
                a.t.send([hb(1, 2, 4)])
                await asyncio.sleep(0.02)

        await asyncio.wait_for(until_told(), 5)
        assert [m.term for m in b.received] == [3]
        await stop_all([a, b])

    run(body())
