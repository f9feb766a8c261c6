"""The per-call machinery of the native front end, driven in-process through one
``GrpcProtocol`` with a fake transport (no sockets): what its hot-path shortcuts must keep.

* Calls on one connection that share a request header list (the HPACK decoder hands out the
  same tuple for a repeated block) share its routing and metadata - and calls whose lists
  differ still get their own route, deadline, identity and refusal.
* A call's cleanup (done callbacks, forgetting the call) runs exactly once: when its task
  ends normally, when it is cancelled while running, and when it is cancelled before its
  task ever ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import hpack

from keelson.api.native import NativeServer
from keelson.api.native._call import Call, metadata_of
from keelson.api.native._protocol import GrpcProtocol
from keelson.api.native._wire import decode_grpc_message, frame_message
from keelson.http2 import _frames as fr
from keelson.proto.etcdserverpb import rpc_pb2 as pb

PUT = "/etcdserverpb.KV/Put"
RANGE = "/etcdserverpb.KV/Range"


class Transport:
    """Collects what the protocol writes."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.data += data

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


@dataclass
class Answer:
    """What one stream got back."""

    headers: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    data: bytes = b""
    reset: int | None = None

    def fields(self) -> dict[bytes, bytes]:
        return {n: v for block in self.headers for n, v in block}

    @property
    def status(self) -> tuple[int, str]:
        fields = self.fields()
        return int(fields[b"grpc-status"]), decode_grpc_message(fields.get(b"grpc-message", b""))


class Member:
    """The server behind KVServicer: records what it was asked, answers when told to."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes, dict[str, Any]]] = []
        self.gate: asyncio.Event | None = None  # None: answer at once
        self.cancelled = 0

    async def put(self, req: pb.PutRequest, **kw: Any) -> pb.PutResponse:
        self.calls.append(("put", req.key, kw))
        await self._wait()
        return pb.PutResponse(header=pb.ResponseHeader(revision=len(self.calls)))

    async def range(self, req: pb.RangeRequest, **kw: Any) -> pb.RangeResponse:
        self.calls.append(("range", req.key, kw))
        await self._wait()
        return pb.RangeResponse(header=pb.ResponseHeader(revision=len(self.calls)), count=1)

    async def _wait(self) -> None:
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise


class Connection:
    """A client (hpack encoder/decoder, raw frames) on one in-process ``GrpcProtocol``."""

    def __init__(self, member: Member) -> None:
        self.protocol = GrpcProtocol(NativeServer(member))
        self.transport = Transport()
        self.protocol.connection_made(self.transport)  # type: ignore[arg-type]
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.answers: dict[int, Answer] = {}
        self._parsed = 0
        self._next_sid = 1
        self._pending = fr.CONNECTION_PREFACE + fr.settings_frame()

    def request(
        self, path: str, message: bytes | None, *extra: tuple[str, str],
        end: bool = True, method: str = "POST",
    ) -> int:
        """Queue a request (headers, then ``message`` framed); returns its stream id."""
        sid = self._next_sid
        self._next_sid += 2
        headers = [(":method", method), (":scheme", "http"), (":path", path),
                   (":authority", "a"), ("content-type", "application/grpc"),
                   ("te", "trailers"), *extra]
        no_body = message is None and end
        self._pending += fr.headers_frame(sid, self.encoder.encode(headers), end_stream=no_body)
        if message is not None:
            self._pending += fr.data_frame(sid, frame_message(message), end_stream=end)
        return sid

    def reset(self, sid: int) -> None:
        self._pending += fr.rst_stream_frame(sid, 8)

    async def send(self) -> None:
        """Deliver what is queued in one read, then let the loop run until nothing moves."""
        data, self._pending = self._pending, b""
        self.protocol.data_received(data)
        for _ in range(20):
            await asyncio.sleep(0)
        self._parse()

    def _parse(self) -> None:
        data = self.transport.data
        pos = self._parsed
        while pos + 9 <= len(data):
            length = int.from_bytes(data[pos : pos + 3], "big")
            kind = data[pos + 3]
            sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFF_FFFF
            payload = data[pos + 9 : pos + 9 + length]
            pos += 9 + length
            if sid == 0:
                continue
            answer = self.answers.setdefault(sid, Answer())
            if kind == 0x0:
                answer.data += payload
            elif kind == 0x1:
                answer.headers.append(list(self.decoder.decode(payload, raw=True)))
            elif kind == 0x3:
                answer.reset = int.from_bytes(payload, "big")
        self._parsed = pos


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def test_metadata_of_hides_reserved_headers_and_decodes_bin_values() -> None:
    headers = (
        (b":path", b"/x"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
        (b"grpc-timeout", b"1S"), (b"token", b"t\xe9"), (b"key-bin", b"AQI"),
        (b"bad-bin", b"A"), (b"user-agent", b"grpc-go"),
    )
    assert metadata_of(headers) == (
        ("token", "t\xe9"), ("key-bin", b"\x01\x02"), ("user-agent", "grpc-go"),
    )


def test_repeated_and_differing_header_lists_are_each_served_right() -> None:
    async def main() -> None:
        member = Member()
        conn = Connection(member)
        put = pb.PutRequest(key=b"k", value=b"v").SerializeToString()
        rng = pb.RangeRequest(key=b"r").SerializeToString()
        plan = [
            (PUT, put, ()), (PUT, put, ()), (PUT, put, ()),  # repeats: indexed, same tuple
            (RANGE, rng, ()), (RANGE, rng, (("token", "alice"),)),
            (PUT, put, (("token", "bob"),)), (PUT, put, ()),
            (RANGE, rng, (("token", "alice"),)),
        ]
        sids = [conn.request(path, msg, *extra) for path, msg, extra in plan]
        await conn.send()
        for sid, (path, _, _) in zip(sids, plan, strict=True):
            assert conn.answers[sid].status == (0, ""), path
        assert [(c[0], c[2]) for c in member.calls] == [
            ("put", {}), ("put", {}), ("put", {}), ("range", {}),
            ("range", {"identity": "alice"}), ("put", {"identity": "bob"}), ("put", {}),
            ("range", {"identity": "alice"}),
        ]
        revisions = []
        for sid, (path, _, _) in zip(sids, plan, strict=True):
            cls = pb.PutResponse if path == PUT else pb.RangeResponse
            revisions.append(cls.FromString(conn.answers[sid].data[5:]).header.revision)
        assert revisions == list(range(1, len(plan) + 1))  # each call its own response
        assert conn.protocol.open_calls == 0

    run(main)


def test_repeated_refusals_are_answered_every_time() -> None:
    async def main() -> None:
        member = Member()
        conn = Connection(member)
        put = pb.PutRequest(key=b"k").SerializeToString()
        bad_timeout = [conn.request(PUT, put, ("grpc-timeout", "1x")) for _ in range(3)]
        unknown = [conn.request("/etcdserverpb.KV/Nope", put) for _ in range(3)]
        get = [conn.request(PUT, put, method="GET") for _ in range(2)]
        fine = conn.request(PUT, put)
        again = conn.request(PUT, put, ("grpc-timeout", "1x"))
        await conn.send()
        for sid in [*bad_timeout, again]:
            code, message = conn.answers[sid].status
            assert code == 13 and message.startswith("malformed grpc-timeout"), sid
        for sid in unknown:
            assert conn.answers[sid].status == (12, "unknown method Nope for service "
                                                    "etcdserverpb.KV"), sid
        for sid in get:
            assert conn.answers[sid].fields()[b":status"] == b"405"
        assert conn.answers[fine].status == (0, "")
        assert len(member.calls) == 1
        assert conn.protocol.open_calls == 0

    run(main)


def test_deadline_of_each_call_comes_from_its_own_headers() -> None:
    async def main() -> None:
        member = Member()
        member.gate = asyncio.Event()
        conn = Connection(member)
        rng = pb.RangeRequest(key=b"r").SerializeToString()
        short = conn.request(RANGE, rng, ("grpc-timeout", "50m"))
        plain = conn.request(RANGE, rng)
        await conn.send()
        for _ in range(200):
            await asyncio.sleep(0.01)
            conn._parse()
            if short in conn.answers and conn.answers[short].headers:
                break
        assert conn.answers[short].status == (4, "context deadline exceeded")
        assert plain not in conn.answers or not conn.answers[plain].headers
        member.gate.set()
        await conn.send()
        assert conn.answers[plain].status == (0, "")
        assert conn.protocol.open_calls == 0

    run(main)


def _record_cleanup(conn: Connection) -> list[int]:
    """Done callbacks on every call the connection opens from now on, as stream ids."""
    done: list[int] = []
    original = conn.protocol._on_request

    def on_request(event: Any) -> None:
        original(event)
        call = conn.protocol._calls.get(event.stream_id)
        if call is not None:
            call.add_done_callback(lambda c: done.append(c.stream_id))

    conn.protocol._on_request = on_request  # type: ignore[method-assign]
    return done


def test_cleanup_runs_once_whether_a_call_ends_is_reset_running_or_before_it_ran() -> None:
    async def main() -> None:
        member = Member()
        member.gate = asyncio.Event()
        conn = Connection(member)
        done = _record_cleanup(conn)
        forgotten: list[int] = []
        original_done = conn.protocol.call_done

        def call_done(call: Call) -> None:
            forgotten.append(call.stream_id)
            original_done(call)

        conn.protocol.call_done = call_done  # type: ignore[method-assign]
        rng = pb.RangeRequest(key=b"r").SerializeToString()
        before = conn.request(RANGE, rng)
        conn.reset(before)  # in the same read: its task is cancelled before it ever runs
        running = conn.request(RANGE, rng)
        answered = conn.request(RANGE, rng)
        await conn.send()
        assert len(member.calls) == 2  # the reset call's handler never ran
        assert before not in done or done.count(before) == 1
        conn.reset(running)
        await conn.send()
        assert member.cancelled == 1
        member.gate.set()
        await conn.send()
        assert conn.answers[answered].status == (0, "")
        assert running not in conn.answers or not conn.answers[running].headers
        assert sorted(done) == sorted([before, running, answered])
        assert sorted(forgotten) == sorted([before, running, answered])
        assert conn.protocol.open_calls == 0

    run(main)


def test_calls_cancelled_at_shutdown_are_answered_once() -> None:
    async def main() -> None:
        member = Member()
        member.gate = asyncio.Event()
        conn = Connection(member)
        done = _record_cleanup(conn)
        rng = pb.RangeRequest(key=b"r").SerializeToString()
        sids = [conn.request(RANGE, rng) for _ in range(3)]
        conn.protocol.data_received(conn._pending)  # the tasks exist but have not run yet
        conn._pending = b""
        conn.protocol.cancel_calls()
        await conn.send()
        for sid in sids:
            assert conn.answers[sid].status == (14, "grpc: the server has been stopped")
            assert len(conn.answers[sid].headers) == 1
        assert sorted(done) == sids
        assert member.calls == []
        assert conn.protocol.open_calls == 0

    run(main)
