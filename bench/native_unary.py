"""Micro benchmark: CPU per unary call of the native gRPC front end (``keelson.api.native``).

    python -m bench.native_unary                  # Put and Range, 20,000 calls each
    python -m bench.native_unary --calls 5000 --only put --profile   # cProfile, top entries

What one call costs a member's front end, without the member: the real
:class:`~keelson.api.native._protocol.GrpcProtocol` of one connection on a real event loop
(uvloop, as ``keelson serve`` runs), a fake transport that only collects the written bytes,
and the real ``KVServicer`` over a stub server whose ``put``/``range`` return one constant
response at once - so the figure is the HTTP/2 framing, the per-call object and task, the
route, the status wrapper, the servicer, metadata and the response framing, nothing of
raft or mvcc.

The client bytes are what grpc-go (etcd's ``benchmark``, ``etcdctl``) sends: one HPACK
encoder (so the server's dynamic table stays in sync), grpc-go's request headers, a
request message of ``benchmark put``'s shape (8-byte key, 256-byte value) or of a
linearizable ``benchmark range``. They are prepared before the clock starts, in batches of
``--batch`` pipelined streams per ``data_received`` (16: a connection of 16/256 carries
16 clients); the next batch is fed once every call of the previous one is answered and the
answers written, as a client waiting for its responses would. The client opens its
connection window once at the start, so the server never waits for WINDOW_UPDATE.

The figure is ``time.process_time()`` per call (CPU, not wall, so other load on the
machine distorts it less). After the clock stops every response is checked: a HEADERS
block, one DATA frame with the expected message and ``grpc-status: 0`` trailers per stream.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time
from typing import Any

import uvloop
from hpack import Decoder, Encoder

from keelson.api.native import NativeServer
from keelson.api.native._protocol import GrpcProtocol
from keelson.http2 import _frames as fr
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.mvccpb import kv_pb2

HEADER = pb.ResponseHeader(
    cluster_id=0x1C0FFEE, member_id=0xDEADBEEF, revision=123_456, raft_term=7
)
PUT_RESPONSE = pb.PutResponse(header=HEADER)
RANGE_RESPONSE = pb.RangeResponse(
    header=HEADER,
    kvs=[kv_pb2.KeyValue(key=b"k", value=b"v" * 256, create_revision=2, mod_revision=2,
                         version=1)],
    count=1,
)
PUT_REQUEST = pb.PutRequest(key=b"k" * 8, value=b"v" * 256)
RANGE_REQUEST = pb.RangeRequest(key=b"k")
REQUEST_HEADERS = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b""),  # filled per method
    (b":authority", b"127.0.0.1:2379"),
    (b"content-type", b"application/grpc"),
    (b"user-agent", b"grpc-go/1.26.0"),
    (b"te", b"trailers"),
]


class StubServer:
    """The member as far as ``KVServicer`` sees it: answers at once, with one response."""

    async def put(self, request: pb.PutRequest, **kw: Any) -> pb.PutResponse:
        return PUT_RESPONSE

    async def range(self, request: pb.RangeRequest, **kw: Any) -> pb.RangeResponse:
        return RANGE_RESPONSE


class FakeTransport:
    """An asyncio transport that keeps what is written (and counts the writes)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.writes = 0
        self.closed = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.chunks.append(data)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def client_chunks(path: bytes, request: bytes, calls: int, batch: int) -> list[bytes]:
    """The client's bytes of ``calls`` unary calls to ``path``, ``batch`` streams a chunk."""
    encoder = Encoder()
    headers = [(n, path if n == b":path" else v) for n, v in REQUEST_HEADERS]
    message = b"\x00" + len(request).to_bytes(4, "big") + request
    frames = [
        fr.headers_frame(2 * i + 1, encoder.encode(headers))
        + fr.data_frame(2 * i + 1, message, end_stream=True)
        for i in range(calls)
    ]
    chunks = [b"".join(frames[i : i + batch]) for i in range(0, calls, batch)]
    preface = (
        fr.CONNECTION_PREFACE
        + fr.settings_frame([(0x4, 1 << 20)])
        + fr.window_update_frame(0, (1 << 31) - 1 - 65_535)
        + fr.settings_frame(ack=True)
    )
    chunks[0] = preface + chunks[0]
    return chunks


async def serve(chunks: list[bytes], calls: int) -> tuple[float, FakeTransport]:
    """Feed ``chunks`` to one connection; return the CPU seconds it took and the transport."""
    loop = asyncio.get_running_loop()
    server = NativeServer(StubServer())
    protocol = GrpcProtocol(server)
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    done = loop.create_future()
    fed = 0

    def feed_next() -> None:
        # As the loop's reader callback would: one data_received per chunk, the next once
        # this batch is answered and written.
        nonlocal fed
        if fed == len(chunks):
            done.set_result(None)
            return
        protocol.data_received(chunks[fed])
        fed += 1
        loop.call_soon(wait_answered)

    def wait_answered() -> None:
        if protocol.open_calls or protocol._flush_scheduled:
            loop.call_soon(wait_answered)
        else:
            feed_next()

    start = time.process_time()
    loop.call_soon(feed_next)
    await done
    cpu = time.process_time() - start
    protocol.connection_lost(None)
    return cpu, transport


def check_output(data: bytes, calls: int, message: bytes) -> None:
    """Every stream got HEADERS, its one message, and ``grpc-status: 0``; else exit."""
    decoder = Decoder()
    framed = b"\x00" + len(message).to_bytes(4, "big") + message
    bodies: dict[int, bytes] = {}
    ok: set[int] = set()
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        kind, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFF_FFFF
        payload = data[pos + 9 : pos + 9 + length]
        pos += 9 + length
        if kind == 0x0:
            bodies[sid] = bodies.get(sid, b"") + payload
        elif kind == 0x1:
            fields = dict(decoder.decode(payload, raw=True))
            if flags & 0x1 and fields.get(b"grpc-status") == b"0":
                ok.add(sid)
    good = [sid for sid in ok if bodies.get(sid) == framed]
    if len(good) != calls:
        raise SystemExit(f"only {len(good)} of {calls} calls were answered correctly")


def run(method: str, calls: int, batch: int, profile: bool) -> float:
    """One measured run of ``calls`` calls of ``method``; print and return µs CPU per call."""
    if method == "put":
        path, request, response = b"/etcdserverpb.KV/Put", PUT_REQUEST, PUT_RESPONSE
    else:
        path, request, response = b"/etcdserverpb.KV/Range", RANGE_REQUEST, RANGE_RESPONSE
    chunks = client_chunks(path, request.SerializeToString(), calls, batch)
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    cpu, transport = uvloop.run(serve(chunks, calls))
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    check_output(b"".join(transport.chunks), calls, response.SerializeToString())
    per_call = cpu / calls * 1e6
    print(
        f"{method:5} batch {batch:3}: {per_call:6.2f} us CPU/call"
        f"  ({transport.writes / (calls / batch):.2f} writes per batch)"
    )
    return per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=1, help="repeat; print median and spread")
    parser.add_argument("--only", choices=("put", "range"))
    parser.add_argument("--profile", action="store_true", help="cProfile one run, top 30")
    args = parser.parse_args()
    for method in ("put", "range"):
        if args.only and method != args.only:
            continue
        figures = [run(method, args.calls, args.batch, args.profile) for _ in range(args.runs)]
        if args.runs > 1:
            print(
                f"{method:5} median {statistics.median(figures):6.2f} us"
                f"  min {min(figures):6.2f}  max {max(figures):6.2f}"
            )


if __name__ == "__main__":
    main()
