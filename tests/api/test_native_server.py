"""The native gRPC front end (``--grpc-server=native``) of a real member process.

Three kinds of clients talk to one member started with ``--grpc-server=native``: the real
``etcdctl`` (grpc-go), keelson's generated grpcio stubs, and a raw HTTP/2 client (the
``h2`` library over a plain socket) for what well-behaved clients never send - split and
batched messages, compressed flags, bad timeouts, garbage, floods. The framing helpers of
``keelson.api.native._wire`` are checked on their own first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hyperframe.frame import (
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

from keelson.api.front_end import front_end_factory
from keelson.api.native import NativeServer
from keelson.api.native._call import WRITE_HIGH_WATER
from keelson.api.native._wire import (
    MessageReader,
    WireError,
    decode_grpc_message,
    encode_grpc_message,
    frame_message,
    parse_timeout,
)
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.testing.cluster import ProcessCluster, ProcessMember
from keelson.testing.etcd import etcdctl, free_port, wait_for_port
from tests.http2.wire import PREFACE, parse_frames

MAX_REQUEST_BYTES = 4 * 1024 * 1024  # so a 3 MB value fits; the gRPC limit is this + 512 KiB
RECEIVE_LIMIT = MAX_REQUEST_BYTES + 512 * 1024
T = TypeVar("T")

# ----------------------------------------------------------------------------- framing


def test_reader_reassembles_split_and_batched_messages() -> None:
    a, b, c = frame_message(b"one"), frame_message(b""), frame_message(b"three" * 100)
    stream = a + b + c
    reader = MessageReader(1000)
    got: list[bytes] = []
    for i in range(0, len(stream), 3):  # 3-byte pieces: prefixes split too
        got += reader.feed(stream[i : i + 3])
    assert got == [b"one", b"", b"three" * 100]
    assert not reader.partial
    assert MessageReader(1000).feed(stream) == [b"one", b"", b"three" * 100]
    assert MessageReader(1000).feed(a) == [b"one"]  # the one-message fast path


def test_reader_refuses_oversized_and_compressed_before_buffering() -> None:
    reader = MessageReader(10)
    with pytest.raises(WireError) as err:
        reader.feed(b"\x00" + (11).to_bytes(4, "big"))  # only the prefix: refused already
    assert (err.value.code, err.value.message) == (
        8, "grpc: received message larger than max (11 vs. 10)"
    )
    with pytest.raises(WireError) as err:
        MessageReader(10).feed(b"\x01\x00\x00\x00\x01x")
    assert (err.value.code, err.value.message) == (
        13, "grpc: compressed flag set with identity or empty encoding"
    )
    with pytest.raises(WireError) as err:
        MessageReader(10, b"gzip").feed(b"\x01\x00\x00\x00\x01x")
    assert err.value.code == 12
    assert err.value.message == 'grpc: Decompressor is not installed for grpc-encoding "gzip"'


def test_timeout_and_message_encoding() -> None:
    assert parse_timeout(b"5S") == 5.0
    assert parse_timeout(b"250m") == pytest.approx(0.25)
    assert parse_timeout(b"1H") == 3600.0
    assert parse_timeout(b"99999999n") == pytest.approx(0.099999999)
    for bad in (b"", b"S", b"5", b"5s", b"123456789S", b"-1S", b"1.5S"):
        with pytest.raises(ValueError):
            parse_timeout(bad)
    assert encode_grpc_message("plain text: ok") == b"plain text: ok"
    assert encode_grpc_message("50% caf\u00e9\n") == b"50%25 caf%C3%A9%0A"
    assert decode_grpc_message(b"50%25 caf%C3%A9%0A") == "50% caf\u00e9\n"


# ----------------------------------------------------------------------------- a member


@dataclass
class Member:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None


def _start_member(tmp: Path, *extra: str) -> Member:
    client, peer = free_port(), free_port()
    log = tmp / "log"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "keelson.cli.main", "serve",
            "--data-dir", str(tmp / "m"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--grpc-server", "native",
            "--max-request-bytes", str(MAX_REQUEST_BYTES),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115 - the child owns it
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    member = Member(client, proc, log)
    try:
        wait_for_port(client, 30, proc)
        deadline = time.monotonic() + 30
        while etcdctl(member.endpoint, "endpoint", "health").returncode != 0:
            assert time.monotonic() < deadline, "the member never became healthy"
            time.sleep(0.2)
    except BaseException:
        _stop_member(member)
        raise
    return member


def _stop_member(member: Member) -> int:
    """SIGTERM, then SIGKILL after 15 s; the exit status (negative: killed by a signal)."""
    member.proc.send_signal(signal.SIGTERM)
    try:
        return member.proc.wait(15)
    except subprocess.TimeoutExpired:
        member.proc.kill()
        return member.proc.wait()


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Member]:
    m = _start_member(tmp_path_factory.mktemp("native"))
    status = None
    try:
        yield m
        assert m.alive(), m.log.read_text()[-3000:]
        # A watch left open: the graceful stop must still end within its grace.
        watcher = subprocess.Popen(
            ["etcdctl", "--endpoints", m.endpoint, "watch", "open/at/exit"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        try:
            time.sleep(1)
            started = time.monotonic()
            status = _stop_member(m)
            assert time.monotonic() - started < 10
        finally:
            watcher.kill()
            watcher.wait()
    finally:
        if status is None:
            status = _stop_member(m)
    assert status == 0, m.log.read_text()[-3000:]
    log = m.log.read_text()
    assert "keelson/api/native" not in log and "keelson.api.native" not in log, log[-3000:]


# ----------------------------------------------------------------------------- etcdctl


def ctl(member: Member, *args: str, stdin: str | None = None) -> str:
    result = etcdctl(member.endpoint, *args, stdin=stdin)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


def test_etcdctl_put_get_del_txn(member: Member) -> None:
    assert ctl(member, "put", "ctl/a", "1") == "OK\n"
    assert ctl(member, "put", "ctl/b", "2") == "OK\n"
    assert ctl(member, "get", "ctl/", "--prefix") == "ctl/a\n1\nctl/b\n2\n"
    txn = 'value("ctl/a") = "1"\n\nput ctl/c 3\n\nput ctl/c 4\n\n'
    assert ctl(member, "txn", stdin=txn) == "SUCCESS\n\nOK\n"
    assert ctl(member, "get", "ctl/c", "--print-value-only") == "3\n"
    assert ctl(member, "del", "ctl/", "--prefix") == "3\n"
    assert ctl(member, "get", "ctl/", "--prefix") == ""
    failed = etcdctl(member.endpoint, "get", "x", "--rev", "999999")
    assert failed.returncode != 0
    assert "etcdserver: mvcc: required revision is a future revision" in failed.stderr


def test_etcdctl_watch_sees_a_put(member: Member) -> None:
    exe = ["etcdctl", "--endpoints", member.endpoint, "watch", "ctlw/k"]
    watcher = subprocess.Popen(
        exe, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    try:
        lines: list[bytes] = []
        reader = threading.Thread(
            target=lambda: lines.extend(iter(watcher.stdout.readline, b"")),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        deadline = time.monotonic() + 20
        while len(lines) < 3:  # PUT / key / value; the watch may start after the first put
            assert time.monotonic() < deadline, lines
            ctl(member, "put", "ctlw/k", "v")
            time.sleep(0.3)
        assert lines[:3] == [b"PUT\n", b"ctlw/k\n", b"v\n"]
    finally:
        watcher.kill()
        watcher.wait()


def test_etcdctl_lease_keep_alive_member_list_status_snapshot(
    member: Member, tmp_path: Path
) -> None:
    granted = ctl(member, "lease", "grant", "30").split()
    lease = granted[1]
    assert granted[0] == "lease" and granted[-1] == "TTL(30s)"
    ctl(member, "put", "leased", "x", "--lease", lease)
    alive = ctl(member, "lease", "keep-alive", "--once", lease)
    assert f"lease {lease} keepalived with TTL(30)" in alive
    assert "leased" in ctl(member, "lease", "timetolive", lease, "--keys")
    listed = ctl(member, "member", "list")
    assert listed.count("\n") == 1 and ", started, default, " in listed
    status = ctl(member, "endpoint", "status", "-w", "json")
    assert '"leader"' in status and member.endpoint in status
    ctl(member, "lease", "revoke", lease)
    assert ctl(member, "get", "leased") == ""
    snap = tmp_path / "snap.db"
    out = etcdctl(member.endpoint, "snapshot", "save", str(snap))
    assert out.returncode == 0, out.stderr
    assert snap.stat().st_size > 0
    checked = subprocess.run(
        ["etcdctl", "snapshot", "status", str(snap), "-w", "json"],
        capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=20, check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert b'"hash"' in checked.stdout


# ----------------------------------------------------------------------------- grpcio client


@pytest.fixture
def channel(member: Member) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        member.endpoint,
        options=[("grpc.max_receive_message_length", 16 << 20),
                 ("grpc.max_send_message_length", 16 << 20)],
    ) as ch:
        yield ch


def test_grpcio_unary_calls_and_etcd_errors(channel: grpc.Channel) -> None:
    kv = pbg.KVStub(channel)  # type: ignore[no-untyped-call]
    put = kv.Put(pb.PutRequest(key=b"g/1", value=b"one"), timeout=10)
    assert put.header.revision > 0
    got = kv.Range(pb.RangeRequest(key=b"g/1"), timeout=10)
    assert [(x.key, x.value) for x in got.kvs] == [(b"g/1", b"one")]
    assert got.header.revision == put.header.revision
    with pytest.raises(grpc.RpcError) as err:
        kv.Put(pb.PutRequest(key=b""), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "etcdserver: key is not provided"
    lease = pbg.LeaseStub(channel)  # type: ignore[no-untyped-call]
    ttl = lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=12345), timeout=10)
    assert ttl.TTL == -1


def test_grpcio_watch_stream(channel: grpc.Channel) -> None:
    watch = pbg.WatchStub(channel)  # type: ignore[no-untyped-call]
    kv = pbg.KVStub(channel)  # type: ignore[no-untyped-call]
    requests: list[pb.WatchRequest] = [
        pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"w/", range_end=b"w0")),
    ]
    more = threading.Event()

    def feed() -> Iterator[pb.WatchRequest]:
        yield requests[0]
        more.wait(20)
        yield pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=0))

    responses = watch.Watch(feed(), timeout=30)
    created = next(responses)
    assert created.created and created.watch_id == 0
    for i in range(3):
        kv.Put(pb.PutRequest(key=b"w/%d" % i, value=b"v%d" % i), timeout=10)
    seen: list[bytes] = []
    while len(seen) < 3:
        resp = next(responses)
        seen += [e.kv.key for e in resp.events]
    assert seen == [b"w/0", b"w/1", b"w/2"]
    more.set()
    canceled = next(responses)
    assert canceled.canceled and canceled.watch_id == 0
    responses.cancel()


def test_many_watch_streams_get_every_event_in_order(member: Member) -> None:
    """48 Watch streams over 4 connections on one key (etcd's watch-latency shape, where
    the member pushes each write to every stream in one loop turn): every stream sees
    every put, in order, with the right watch id and header revision."""

    async def main() -> None:
        channels = [grpc.aio.insecure_channel(member.endpoint) for _ in range(4)]
        try:
            calls = []
            for i in range(48):
                call = pbg.WatchStub(channels[i % 4]).Watch(timeout=60)  # type: ignore[no-untyped-call]
                await call.write(pb.WatchRequest(
                    create_request=pb.WatchCreateRequest(key=b"fan/k")))
                created = await call.read()
                assert created.created
                calls.append(call)
            kv = pbg.KVStub(channels[0])  # type: ignore[no-untyped-call]
            revs = []
            for i in range(20):
                put = await kv.Put(pb.PutRequest(key=b"fan/k", value=b"%d" % i), timeout=10)
                revs.append(put.header.revision)

            async def events_of(call: Any) -> list[tuple[int, bytes]]:
                seen: list[tuple[int, bytes]] = []
                while len(seen) < len(revs):
                    resp = await call.read()
                    assert resp.watch_id == created.watch_id
                    assert resp.header.revision == resp.events[-1].kv.mod_revision
                    seen += [(e.kv.mod_revision, e.kv.value) for e in resp.events]
                return seen

            got = await asyncio.wait_for(asyncio.gather(*(events_of(c) for c in calls)), 60)
            want = [(r, b"%d" % i) for i, r in enumerate(revs)]
            assert all(g == want for g in got)
            for call in calls:
                call.cancel()
        finally:
            for ch in channels:
                await ch.close()

    asyncio.run(main())


def test_grpcio_large_value_and_too_large_message(channel: grpc.Channel) -> None:
    kv = pbg.KVStub(channel)  # type: ignore[no-untyped-call]
    value = os.urandom(3_000_000)
    kv.Put(pb.PutRequest(key=b"big", value=value), timeout=30)
    got = kv.Range(pb.RangeRequest(key=b"big"), timeout=30)
    assert got.kvs[0].value == value
    # Over --max-request-bytes but within gRPC's headroom: etcd's own check answers.
    with pytest.raises(grpc.RpcError) as err:
        kv.Put(pb.PutRequest(key=b"big", value=b"x" * (MAX_REQUEST_BYTES + 1024)), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "etcdserver: request is too large"
    # Over the gRPC limit: refused by the framing layer.
    with pytest.raises(grpc.RpcError) as err:
        kv.Put(pb.PutRequest(key=b"big", value=b"x" * (RECEIVE_LIMIT + 10)), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "grpc: received message larger than max" in (err.value.details() or "")
    assert kv.Range(pb.RangeRequest(key=b"big"), timeout=30).kvs[0].value == value


def test_grpcio_unknown_method_and_service(channel: grpc.Channel) -> None:
    nope = channel.unary_unary("/etcdserverpb.KV/Nope")
    with pytest.raises(grpc.RpcError) as err:
        nope(b"", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert err.value.details() == "unknown method Nope for service etcdserverpb.KV"
    other = channel.unary_unary("/foo.Bar/Baz")
    with pytest.raises(grpc.RpcError) as err:
        other(b"", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert err.value.details() == "unknown service foo.Bar"


def test_grpcio_deadline(channel: grpc.Channel) -> None:
    lease = pbg.LeaseStub(channel)  # type: ignore[no-untyped-call]
    blocked = threading.Event()

    def idle() -> Iterator[pb.LeaseKeepAliveRequest]:
        blocked.wait(5)
        return
        yield  # pragma: no cover

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        list(lease.LeaseKeepAlive(idle(), timeout=0.5))
    blocked.set()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 4


# ----------------------------------------------------------------------------- raw HTTP/2


@dataclass
class Answer:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytes = b""
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    reset: int | None = None

    @property
    def status(self) -> tuple[int, str]:
        """grpc-status and message, from the trailers or a Trailers-Only response."""
        fields = self.trailers or self.headers
        return int(fields[b"grpc-status"]), decode_message(fields.get(b"grpc-message", b""))


def decode_message(value: bytes) -> str:
    return decode_grpc_message(value)


class RawClient:
    """An HTTP/2 client on a blocking socket, for requests grpc clients never make."""

    def __init__(self, port: int, window: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.initiate_connection()
        if window is not None:
            self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.answers: dict[int, Answer] = {}
        self.done: set[int] = set()
        self.auto_ack = True  # False: received DATA keeps our windows closed
        self.unacked: list[tuple[int, int]] = []
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.goaways: list[int | None] = []  # last_stream_id of every GOAWAY, in order
        self.pings: list[bytes] = []  # PINGs the server sent (h2 answers them itself)
        self.ping_acks: list[bytes] = []
        self._inbound = bytearray()
        self.flush()

    def close(self) -> None:
        self.sock.close()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def open(self, path: str, *extra: tuple[str, str], end: bool = False) -> int:
        sid: int = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "127.0.0.1"), ("content-type", "application/grpc"),
            ("te", "trailers"), *extra,
        ]
        self.h2.send_headers(sid, headers, end_stream=end)
        self.answers[sid] = Answer()
        self.flush()
        return sid

    def send(self, sid: int, data: bytes, end: bool = False) -> None:
        self.h2.send_data(sid, data, end_stream=end)
        self.flush()

    def wait(self, sid: int, timeout: float = 10) -> Answer:
        deadline = time.monotonic() + timeout
        while sid not in self.done:
            assert time.monotonic() < deadline, f"no answer on stream {sid}"
            assert self.pump(deadline - time.monotonic()), "the server closed the connection"
        return self.answers[sid]

    def pump(self, timeout: float) -> bool:
        """Read and process what arrives within ``timeout`` s; False once the server closed."""
        self.sock.settimeout(max(0.05, timeout))
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            return True
        if not data:
            return False
        self.feed(data)
        self.flush()
        return True

    def feed(self, data: bytes) -> None:
        """Hand received bytes to h2 one whole frame at a time (no writes).

        h2 treats any GOAWAY as the end and refuses frames after it in the same call;
        ``_on`` reopens it after each GOAWAY, so a graceful one's PING and DATA get through.
        """
        self._inbound += data
        while len(self._inbound) >= 9:
            size = 9 + int.from_bytes(self._inbound[:3], "big")
            if len(self._inbound) < size:
                break
            frame, self._inbound = bytes(self._inbound[:size]), self._inbound[size:]
            for event in self.h2.receive_data(frame):
                self._on(event)

    def ack_all(self) -> None:
        for sid, n in self.unacked:
            self.h2.acknowledge_received_data(n, sid)
        self.unacked.clear()
        self.flush()

    def _on(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", 0)
        answer = self.answers.get(sid)
        if isinstance(event, h2.events.ResponseReceived) and answer is not None:
            answer.headers = dict(event.headers)
        elif isinstance(event, h2.events.TrailersReceived) and answer is not None:
            answer.trailers = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            if answer is not None:
                answer.data += event.data
            if self.auto_ack:
                self.h2.acknowledge_received_data(event.flow_controlled_length, sid)
            else:
                self.unacked.append((sid, event.flow_controlled_length))
        elif isinstance(event, h2.events.PingAckReceived):
            self.ping_acks.append(event.ping_data)
        elif isinstance(event, h2.events.PingReceived):
            self.pings.append(event.ping_data)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
            self.goaways.append(event.last_stream_id)
            # h2 treats any GOAWAY as the end; a graceful one lets open streams finish, so
            # keep the client reading them.
            self.h2.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        elif isinstance(event, h2.events.StreamReset) and answer is not None:
            answer.reset = event.error_code
            self.done.add(sid)
        if isinstance(event, h2.events.StreamEnded):
            self.done.add(sid)


@pytest.fixture
def raw(member: Member) -> Iterator[RawClient]:
    client = RawClient(member.port)
    try:
        yield client
    finally:
        client.close()


def _messages(data: bytes) -> list[bytes]:
    reader = MessageReader(1 << 24)
    return reader.feed(data)


def test_raw_messages_split_across_frames_and_batched(raw: RawClient) -> None:
    sid = raw.open("/etcdserverpb.Lease/LeaseKeepAlive")
    one = frame_message(pb.LeaseKeepAliveRequest(ID=7).SerializeToString())
    two = frame_message(pb.LeaseKeepAliveRequest(ID=8).SerializeToString())
    three = frame_message(pb.LeaseKeepAliveRequest(ID=9).SerializeToString())
    raw.send(sid, one + two[:3])  # one whole message and the start of the next
    raw.send(sid, two[3:])
    raw.send(sid, three, end=True)
    answer = raw.wait(sid)
    assert answer.status == (0, "")
    ids = [pb.LeaseKeepAliveResponse.FromString(m).ID for m in _messages(answer.data)]
    assert ids == [7, 8, 9]  # unknown leases answer TTL 0, in order
    # A unary call whose message arrives in 1-byte DATA frames.
    put = frame_message(pb.PutRequest(key=b"raw/split", value=b"v").SerializeToString())
    sid = raw.open("/etcdserverpb.KV/Put")
    for i in range(len(put)):
        raw.send(sid, put[i : i + 1], end=i == len(put) - 1)
    answer = raw.wait(sid)
    assert answer.status == (0, "")
    assert answer.headers[b"content-type"] == b"application/grpc"
    assert pb.PutResponse.FromString(_messages(answer.data)[0]).header.revision > 0


def test_raw_compressed_flag_is_refused(raw: RawClient) -> None:
    sid = raw.open("/etcdserverpb.KV/Range")
    payload = pb.RangeRequest(key=b"k").SerializeToString()
    raw.send(sid, b"\x01" + len(payload).to_bytes(4, "big") + payload, end=True)
    assert raw.wait(sid).status == (
        13, "grpc: compressed flag set with identity or empty encoding"
    )
    sid = raw.open("/etcdserverpb.KV/Range", ("grpc-encoding", "gzip"))
    raw.send(sid, b"\x01" + len(payload).to_bytes(4, "big") + payload, end=True)
    assert raw.wait(sid).status == (
        12, 'grpc: Decompressor is not installed for grpc-encoding "gzip"'
    )


def test_raw_grpc_timeout_ends_the_call(raw: RawClient) -> None:
    sid = raw.open("/etcdserverpb.Watch/Watch", ("grpc-timeout", "300m"))
    started = time.monotonic()
    answer = raw.wait(sid)
    assert answer.status == (4, "context deadline exceeded")
    assert 0.25 < time.monotonic() - started < 5
    sid = raw.open("/etcdserverpb.KV/Range", ("grpc-timeout", "soon"), end=True)
    code, message = raw.wait(sid).status
    assert code == 13 and message.startswith("malformed grpc-timeout")


def test_raw_bad_requests_are_answered(raw: RawClient) -> None:
    sid = raw.open("/etcdserverpb.KV/Range", end=True)  # no message at all
    assert raw.wait(sid).status[0] == 13
    sid = raw.open("/etcdserverpb.KV/Range")
    raw.send(sid, frame_message(b"\xff\xff\xff"), end=True)  # not a RangeRequest
    code, message = raw.wait(sid).status
    assert code == 13 and message.startswith("grpc: error unmarshalling request")
    sid = raw.h2.get_next_available_stream_id()
    raw.h2.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", "/x"),
                              (":authority", "a"), ("content-type", "text/plain")], True)
    raw.answers[sid] = Answer()
    raw.flush()
    assert raw.wait(sid).headers[b":status"] == b"415"


def test_raw_reset_cancels_a_streaming_call(member: Member, raw: RawClient) -> None:
    sid = raw.open("/etcdserverpb.Watch/Watch")
    create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"rst"))
    raw.send(sid, frame_message(create.SerializeToString()))
    raw.h2.reset_stream(sid)
    raw.flush()
    # The connection keeps working after the reset.
    sid = raw.open("/etcdserverpb.KV/Range")
    raw.send(sid, frame_message(pb.RangeRequest(key=b"rst").SerializeToString()), end=True)
    assert raw.wait(sid).status == (0, "")


def test_raw_keepalive_ping_is_answered(raw: RawClient) -> None:
    raw.h2.ping(b"keelson!")
    raw.flush()
    deadline = time.monotonic() + 10
    while not raw.ping_acks:
        assert time.monotonic() < deadline, "no PING ACK"
        assert raw.pump(1)
    assert raw.ping_acks == [b"keelson!"]


def test_front_end_factory_selects_the_implementation() -> None:
    async def build() -> tuple[object, object, object]:  # grpc.aio wants a running loop
        native = front_end_factory([], 5.0, grpc_server="native")(object(), ["127.0.0.1:0"])
        grpcio = front_end_factory([], 5.0, grpc_server="grpcio")(object(), ["127.0.0.1:0"])
        default = front_end_factory([], 5.0)(object(), ["127.0.0.1:0"])
        for fe in (native, grpcio, default):
            await fe.grpc.stop(None)
        return native.grpc, grpcio.grpc, default.grpc

    native, grpcio, default = asyncio.run(build())
    assert isinstance(native, NativeServer)
    assert isinstance(grpcio, grpc.aio.Server)
    assert isinstance(default, NativeServer)  # native is the default
    with pytest.raises(ValueError, match="unknown gRPC server"):
        front_end_factory([], 5.0, grpc_server="h2o")


def _still_serving(member: Member) -> None:
    with grpc.insecure_channel(member.endpoint) as ch:
        kv = pbg.KVStub(ch)  # type: ignore[no-untyped-call]
        kv.Put(pb.PutRequest(key=b"alive", value=b"yes"), timeout=10)
    assert member.alive()


def _read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server writes until it closes the connection (fails on a timeout)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(1 << 16):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def test_misbehaving_clients_leave_the_member_serving(member: Member) -> None:
    # Garbage instead of the preface: GOAWAY(PROTOCOL_ERROR), then the connection closes.
    with socket.create_connection(("127.0.0.1", member.port), timeout=10) as s:
        s.sendall(b"\x00" + os.urandom(4095))
        frames = parse_frames(_read_until_closed(s))
    assert [type(f) for f in frames] == [GoAwayFrame]
    assert isinstance(frames[0], GoAwayFrame) and frames[0].error_code == 1
    # HTTP/1.1: a readable refusal.
    with socket.create_connection(("127.0.0.1", member.port), timeout=10) as s:
        s.sendall(b"GET /v3/kv/range HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_until_closed(s).startswith(b"HTTP/1.1 505")
    # A stream flood: 1,500 streams opened and never finished, far over the server's limit.
    encoder = hpack.Encoder()
    request = [(b":method", b"POST"), (b":scheme", b"http"),
               (b":path", b"/etcdserverpb.Watch/Watch"), (b":authority", b"a"),
               (b"content-type", b"application/grpc")]
    flood = [PREFACE, SettingsFrame(0).serialize()]
    for i in range(1500):
        flood.append(HeadersFrame(2 * i + 1, encoder.encode(request), flags=["END_HEADERS"])
                     .serialize())
    with socket.create_connection(("127.0.0.1", member.port), timeout=10) as s:
        s.sendall(b"".join(flood))
        s.shutdown(socket.SHUT_WR)
        frames = parse_frames(_read_until_closed(s, 20))
    refused = [f for f in frames if isinstance(f, RstStreamFrame) and f.error_code == 7]
    ended = [f for f in frames if isinstance(f, GoAwayFrame) and f.error_code != 0]
    assert refused, frames[:5]
    assert ended or len(refused) == 500  # the rest refused, or the connection ended (calm)
    assert all(f.stream_id > 2 * 1000 for f in refused)  # the first 1,000 were accepted
    _still_serving(member)


def test_auth_token_metadata(tmp_path: Path) -> None:
    m = _start_member(tmp_path)
    try:
        ctl(m, "user", "add", "root:pw")
        ctl(m, "role", "add", "root")
        ctl(m, "user", "grant-role", "root", "root")
        ctl(m, "auth", "enable")
        denied = etcdctl(m.endpoint, "put", "a", "1")
        assert denied.returncode != 0
        assert "etcdserver: user name is empty" in denied.stderr
        assert ctl(m, "--user", "root:pw", "put", "a", "1") == "OK\n"
        assert ctl(m, "--user", "root:pw", "get", "a", "--print-value-only") == "1\n"
        wrong = etcdctl(m.endpoint, "--user", "root:nope", "get", "a")
        assert "etcdserver: authentication failed, invalid user ID or password" in wrong.stderr
    finally:
        _stop_member(m)


# ----------------------------------------------------------------------------- in process
# A NativeServer on its own event loop (a thread) in front of a scripted member, so the
# test can see what the handlers saw: cancellations, closed watch streams, backlogs.


class ScriptedWatchStream:
    def __init__(self) -> None:
        self.closed = False
        self._events: asyncio.Queue[pb.WatchResponse | None] = asyncio.Queue()

    def create(self, req: pb.WatchCreateRequest) -> pb.WatchResponse:
        return pb.WatchResponse(created=True, watch_id=1)

    def cancel(self, watch_id: int) -> pb.WatchResponse:
        return pb.WatchResponse(canceled=True, watch_id=watch_id)

    def request_progress(self) -> pb.WatchResponse:
        return pb.WatchResponse()

    async def next(self) -> pb.WatchResponse | None:
        return await self._events.get()

    def close(self) -> None:
        self.closed = True


class ScriptedMember:
    """Answers Range after ``gate`` opens; records cancellations and watch streams."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.cancelled_ranges = 0
        self.watch_streams: list[ScriptedWatchStream] = []
        self.snapshot_data = os.urandom(4 * 1024 * 1024)

    def header(self) -> pb.ResponseHeader:
        return pb.ResponseHeader(cluster_id=1, member_id=2, revision=3, raft_term=4)

    async def range(self, req: pb.RangeRequest) -> pb.RangeResponse:
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled_ranges += 1
            raise
        return pb.RangeResponse(header=self.header(), count=7)

    def new_watch_stream(self) -> ScriptedWatchStream:
        stream = ScriptedWatchStream()
        self.watch_streams.append(stream)
        return stream

    async def snapshot(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.snapshot_data), 1 << 20):
            yield self.snapshot_data[i : i + (1 << 20)]


class InProcess:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.member = self.run(self._make_member())
        self.server = NativeServer(self.member)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.run(self.server.start())

    @staticmethod
    async def _make_member() -> ScriptedMember:
        return ScriptedMember()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_in_loop(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self.run(call())

    def poll(self, condition: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not self.call_in_loop(condition):
            assert time.monotonic() < deadline, "condition never held"
            time.sleep(0.02)

    def close(self) -> None:
        try:
            self.run(self.server.stop(None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def inproc() -> Iterator[InProcess]:
    server = InProcess()
    try:
        yield server
    finally:
        server.close()


def _range_call(client: RawClient, *extra: tuple[str, str]) -> int:
    sid = client.open("/etcdserverpb.KV/Range", *extra)
    client.send(sid, frame_message(pb.RangeRequest(key=b"k").SerializeToString()), end=True)
    return sid


def test_reset_and_deadline_cancel_the_handler(inproc: InProcess) -> None:
    client = RawClient(inproc.port)
    try:
        sid = client.open("/etcdserverpb.Watch/Watch")
        create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"k"))
        client.send(sid, frame_message(create.SerializeToString()))
        deadline = time.monotonic() + 10
        while not client.answers[sid].data:
            assert time.monotonic() < deadline
            client.pump(1)
        assert pb.WatchResponse.FromString(_messages(client.answers[sid].data)[0]).created
        stream = inproc.member.watch_streams[0]
        assert not stream.closed
        client.h2.reset_stream(sid)
        client.flush()
        inproc.poll(lambda: stream.closed)  # the handler was cancelled and cleaned up
        started = time.monotonic()
        answer = client.wait(_range_call(client, ("grpc-timeout", "200m")))
        assert answer.status == (4, "context deadline exceeded")
        assert time.monotonic() - started >= 0.19
        inproc.poll(lambda: inproc.member.cancelled_ranges == 1)
        inproc.poll(lambda: all(c.open_calls == 0 for c in inproc.server._connections))
    finally:
        client.close()


def test_graceful_stop_drains_calls_then_ends_the_rest(inproc: InProcess) -> None:
    client = RawClient(inproc.port)
    try:
        slow = _range_call(client)
        watch = client.open("/etcdserverpb.Watch/Watch")
        inproc.poll(lambda: sum(c.open_calls for c in inproc.server._connections) == 2)
        stopping = inproc.submit(inproc.server.stop(3.0))
        deadline = time.monotonic() + 10
        while client.goaway is None:  # GOAWAY first, while both calls are still open
            assert time.monotonic() < deadline
            client.pump(1)
        assert client.goaway.error_code == 0
        assert slow not in client.done
        inproc.call_in_loop(inproc.member.gate.set)
        answer = client.wait(slow)
        assert answer.status == (0, "")
        assert pb.RangeResponse.FromString(_messages(answer.data)[0]).count == 7
        # The watch never ends by itself: after the grace it is ended with UNAVAILABLE.
        assert client.wait(watch).status == (14, "grpc: the server has been stopped")
        stopping.result(10)
        assert not client.pump(5)  # and the connection is closed
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", inproc.port), timeout=2).close()
    finally:
        client.close()


def test_graceful_stop_is_a_two_step_goaway(inproc: InProcess) -> None:
    """GOAWAY(2^31-1) + PING, then GOAWAY(last stream): a request in flight is served."""
    client = RawClient(inproc.port)
    try:
        first = _range_call(client)
        inproc.poll(lambda: sum(c.open_calls for c in inproc.server._connections) == 1)
        stopping = inproc.submit(inproc.server.stop(5.0))
        deadline = time.monotonic() + 10
        while not (client.goaways and client.pings):
            assert time.monotonic() < deadline, "no GOAWAY + PING"
            data = client.sock.recv(1 << 16)  # not pump(): our PING ACK must wait
            assert data, "the server closed the connection"
            client.feed(data)
        assert client.goaways == [(1 << 31) - 1]
        assert client.goaway is not None and client.goaway.error_code == 0
        held_ack = client.h2.data_to_send()
        # A request the client sent before it read the first GOAWAY: still served.
        late = _range_call(client)
        client.sock.sendall(held_ack)
        while len(client.goaways) < 2:
            assert time.monotonic() < deadline, "no second GOAWAY"
            assert client.pump(1)
        assert client.goaways == [(1 << 31) - 1, late]
        inproc.call_in_loop(inproc.member.gate.set)
        assert client.wait(first).status == (0, "")
        assert client.wait(late).status == (0, "")
        stopping.result(10)
        assert not client.pump(5)  # closed once both calls are done
    finally:
        client.close()


def test_graceful_stop_does_not_wait_for_a_silent_client(inproc: InProcess) -> None:
    client = RawClient(inproc.port)
    try:
        client.pump(1)  # the server's preface; from now on we never read nor answer
        inproc.poll(lambda: len(inproc.server._connections) == 1)
        started = time.monotonic()
        inproc.run(inproc.server.stop(10.0))
        assert time.monotonic() - started < 5  # the PING timeout, not the grace
    finally:
        client.close()


def test_streaming_writes_wait_for_the_client_window(inproc: InProcess) -> None:
    client = RawClient(inproc.port, window=16384)
    client.auto_ack = False
    try:
        sid = client.open("/etcdserverpb.Maintenance/Snapshot")
        client.send(sid, frame_message(b""), end=True)
        time.sleep(0.5)
        for _ in range(5):
            client.pump(0.2)
        received = len(client.answers[sid].data)
        assert 0 < received <= 16384  # the stream window, never more
        # The handler is parked in write(): the server holds a bounded backlog, not 4 MiB.
        backlog = inproc.call_in_loop(
            lambda: sum(c.h2.queued_bytes(sid) for c in inproc.server._connections)
        )
        assert 0 < backlog <= WRITE_HIGH_WATER + (1 << 20) + 64
        client.auto_ack = True
        client.ack_all()
        answer = client.wait(sid, timeout=60)
        assert answer.status == (0, "")
        chunks = [pb.SnapshotResponse.FromString(m) for m in _messages(answer.data)]
        data = b"".join(c.blob for c in chunks[:-1])
        assert data == inproc.member.snapshot_data
        assert chunks[-1].blob == hashlib.sha256(data).digest()
    finally:
        client.close()


def test_calls_ended_before_their_task_ran_leave_nothing_behind(inproc: InProcess) -> None:
    """A call whose handler task is created and ended in the same read (reset by the
    client, or failed for a second, oversized message) is forgotten all the same."""
    encoder = hpack.Encoder()
    request = [(b":method", b"POST"), (b":scheme", b"http"),
               (b":path", b"/etcdserverpb.KV/Range"), (b":authority", b"a"),
               (b"content-type", b"application/grpc")]
    body = frame_message(pb.RangeRequest(key=b"k").SerializeToString())
    oversized = b"\x00" + (1 << 30).to_bytes(4, "big")
    wire = [PREFACE, SettingsFrame(0).serialize()]
    for sid in range(1, 41, 4):  # 10 calls reset at once, 10 failed at once
        wire.append(HeadersFrame(sid, encoder.encode(request), flags=["END_HEADERS"]).serialize())
        wire.append(DataFrame(sid, body, flags=["END_STREAM"]).serialize())
        wire.append(RstStreamFrame(sid, error_code=8).serialize())
        wire.append(HeadersFrame(sid + 2, encoder.encode(request), flags=["END_HEADERS"])
                    .serialize())
        wire.append(DataFrame(sid + 2, body).serialize())
        wire.append(DataFrame(sid + 2, oversized).serialize())
    with socket.create_connection(("127.0.0.1", inproc.port), timeout=10) as s:
        s.sendall(b"".join(wire))
        inproc.poll(lambda: len(inproc.server._connections) == 1)
        inproc.poll(lambda: all(c.open_calls == 0 for c in inproc.server._connections))
        s.settimeout(5)
        received = b""
        frames: list[Any] = []
        while sum(isinstance(f, RstStreamFrame) for f in frames) < 10:
            received += s.recv(1 << 20)
            with contextlib.suppress(AssertionError, ValueError):  # a frame cut in two
                frames = parse_frames(received)
    statuses = [f for f in frames if isinstance(f, HeadersFrame)]
    assert len(statuses) == 10  # one Trailers-Only RESOURCE_EXHAUSTED per failed call
    assert all(f.stream_id % 4 == 3 for f in statuses)


def test_three_native_members_serve_through_followers(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, 3, extra_args=("--grpc-server", "native"))
    try:
        cluster.start_all()
        leader = cluster.wait_ready(60)
        followers = [m for m in cluster.members if m is not leader]

        def on(m: ProcessMember, *args: str) -> str:
            result = etcdctl(m.client_addr, *args)
            assert result.returncode == 0, (m.name, args, result.stderr)
            return result.stdout

        assert on(followers[0], "put", "three", "1") == "OK\n"
        assert on(followers[1], "get", "three", "--print-value-only") == "1\n"
        assert on(leader, "get", "three", "--print-value-only") == "1\n"
        lease = on(followers[1], "lease", "grant", "60").split()[1]
        assert "keepalived with TTL(60)" in on(followers[0], "lease", "keep-alive", "--once", lease)
        listed = on(followers[0], "member", "list")
        assert listed.count(", started, ") == 3
    finally:
        cluster.stop_all()
