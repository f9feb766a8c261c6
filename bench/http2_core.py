"""Micro benchmark: gRPC-shaped request/response cycles through keelson.http2's core alone.

    python -m bench.http2_core                 # 20,000 cycles, one request per receive_data
    python -m bench.http2_core --batch 16      # 16 requests per receive_data (pipelined)
    python -m bench.http2_core --compare-h2    # the same cycles through the h2 library
    python -m bench.http2_core --deadlines     # a new grpc-timeout per call (as etcdctl)

One cycle is what a unary etcd ``KV/Put`` costs the HTTP/2 layer of a server: receive the
client's HEADERS (HPACK, mostly indexed after the first request, as grpc-go sends them) and
one DATA frame with END_STREAM plus the WINDOW_UPDATE that returns our previous response's
bytes; answer with response HEADERS (the cached ``:status 200``/``content-type`` block),
one DATA frame and ``grpc-status: 0`` trailers; acknowledge the request body; collect the
output bytes. No sockets, no event loop, no protobuf: the figure is the ceiling this layer
puts on a single core, not a server's throughput. The client bytes are prepared before the
clock starts (one HPACK encoder, in order, so the server's dynamic table stays in sync).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from hpack import Encoder

from keelson.http2 import DataReceived, H2Connection, HeaderBlock, RequestReceived, StreamEnded
from keelson.http2 import _frames as fr

REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/etcdserverpb.KV/Put"),
    (b":authority", b"127.0.0.1:2379"),
    (b"content-type", b"application/grpc"),
    (b"user-agent", b"grpc-go/1.60.1"),
    (b"te", b"trailers"),
]
REQUEST_MESSAGE = b"\x00\x00\x00\x00\x0c\x0a\x04key1\x12\x04val1"
RESPONSE_MESSAGE = b"\x00\x00\x00\x00\x0e\x0a\x0c\x08\x01\x10\x01\x18\x05\x20\x02"
GRPC_OK = HeaderBlock.static(((b":status", b"200"), (b"content-type", b"application/grpc")))
TRAILERS_OK = HeaderBlock.static(((b"grpc-status", b"0"),), trailers=True)


def client_bytes(cycles: int, batch: int, deadlines: bool = False) -> list[bytes]:
    """The client's side of ``cycles`` calls, ``batch`` calls per chunk.

    ``deadlines``: every call carries a different ``grpc-timeout`` (as etcdctl's do), so
    every request block inserts into the HPACK table and none repeats byte for byte.
    """
    encoder = Encoder()
    calls = []
    for i in range(cycles):
        sid = 2 * i + 1
        headers = REQUEST
        if deadlines:
            headers = [*REQUEST, (b"grpc-timeout", b"%dm" % (4999 - i % 1000))]
        calls.append(
            fr.headers_frame(sid, encoder.encode(headers))
            + fr.data_frame(sid, REQUEST_MESSAGE, end_stream=True)
            + fr.window_update_frame(0, len(RESPONSE_MESSAGE))
        )
    preface = fr.CONNECTION_PREFACE + fr.settings_frame([(0x4, 1 << 20)]) + fr.settings_frame(
        ack=True
    )
    chunks = [b"".join(calls[i : i + batch]) for i in range(0, cycles, batch)]
    chunks[0] = preface + chunks[0]
    return chunks


def run_keelson(chunks: list[bytes]) -> int:
    """Serve every chunk; return the number of completed calls."""
    conn = H2Connection()
    conn.data_to_send()
    done = 0
    receive = conn.receive_data
    for chunk in chunks:
        for event in receive(chunk):
            if isinstance(event, RequestReceived):
                conn.send_headers(event.stream_id, GRPC_OK)
            elif isinstance(event, DataReceived):
                conn.acknowledge_received_data(event.stream_id, event.flow_controlled_length)
            elif isinstance(event, StreamEnded):
                conn.send_data(event.stream_id, RESPONSE_MESSAGE)
                conn.send_trailers(event.stream_id, TRAILERS_OK)
                done += 1
        conn.data_to_send()
    return done


def run_h2(chunks: list[bytes]) -> int:
    """The same workload through the ``h2`` library's server connection (for reference)."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    conn.initiate_connection()
    conn.data_to_send()
    done = 0
    headers = list(GRPC_OK.headers)
    trailers = list(TRAILERS_OK.headers)
    for chunk in chunks:
        for event in conn.receive_data(chunk):
            if isinstance(event, h2.events.RequestReceived):
                conn.send_headers(event.stream_id, headers)
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                conn.send_data(event.stream_id, RESPONSE_MESSAGE)
                conn.send_headers(event.stream_id, trailers, end_stream=True)
                done += 1
        conn.data_to_send()
    return done


def measure(
    name: str, run: Callable[[list[bytes]], int], cycles: int, batch: int, deadlines: bool
) -> float:
    """Run one workload; print and return cycles per CPU-second of this process.

    CPU time (not wall time) is the figure, so other processes sharing the machine's cores
    distort it less; wall-clock cycles/s is printed beside it.
    """
    chunks = client_bytes(cycles, batch, deadlines)
    start, start_cpu = time.perf_counter(), time.process_time()
    done = run(chunks)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    if done != cycles:
        raise SystemExit(f"{name}: only {done} of {cycles} calls completed")
    rate = cycles / cpu
    label = f"{name}{' +deadline' if deadlines else ''}"
    print(
        f"{label:17} batch {batch:3}: {rate:8,.0f} cycles/CPU-s {1e6 / rate:6.1f} us CPU/cycle"
        f"  ({cycles / wall:,.0f} cycles/s wall)"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--compare-h2", action="store_true")
    parser.add_argument(
        "--deadlines", action="store_true", help="a different grpc-timeout on every call"
    )
    args = parser.parse_args()
    # MAX_CONCURRENT_STREAMS is 100: a batch is at most that many calls in flight.
    batch = max(1, min(args.batch, 100))
    measure("keelson", run_keelson, args.cycles, batch, args.deadlines)
    if args.compare_h2:
        measure("h2", run_h2, args.cycles, batch, args.deadlines)


if __name__ == "__main__":
    main()
