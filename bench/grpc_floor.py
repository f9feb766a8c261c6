"""The floor under keelson: a bare grpc.aio server answering KV calls with a constant.

    python -m bench.grpc_floor                 # put and range at 16/256, 1/1 with etcd's benchmark
    python -m bench.grpc_floor --serve 23790   # just serve (to point other tools at it)

The server is what every keelson member runs in front of its own work (grpc.aio on uvloop,
one process, the generated etcd KV servicer) minus all of keelson: Put answers a constant
``PutResponse``, Range a constant one-key ``RangeResponse``. Requests/s measured here is the
most a keelson member could answer on this machine through grpc.aio, so keelson's own budget
per request is ``1/keelson_rps - 1/floor_rps``. The server runs in a child process (started
and stopped here, by PID) so the load generator and the server compete for the CPU as in
the real benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.run import Figures, ensure_benchmark, run_benchmark
from keelson.testing.etcd import free_port, wait_for_port


def serve(port: int) -> None:
    """Serve the constant KV service on 127.0.0.1:port until SIGTERM."""
    import grpc.aio

    from keelson.proto.etcdserverpb import rpc_pb2 as pb
    from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
    from keelson.proto.mvccpb import kv_pb2

    header = pb.ResponseHeader(cluster_id=1, member_id=1, revision=1, raft_term=1)
    put_resp = pb.PutResponse(header=header)
    range_resp = pb.RangeResponse(
        header=header,
        kvs=[kv_pb2.KeyValue(key=b"k", value=b"v" * 256, create_revision=1,
                             mod_revision=1, version=1)],
        count=1,
    )

    class Constant(pbg.KVServicer):
        async def Put(self, request: pb.PutRequest, context: Any) -> pb.PutResponse:
            return put_resp

        async def Range(self, request: pb.RangeRequest, context: Any) -> pb.RangeResponse:
            return range_resp

    async def main() -> None:
        server = grpc.aio.server()
        pbg.add_KVServicer_to_server(Constant(), server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(0)

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # keelson depends on uvloop; tolerate its absence here
        pass
    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads) so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(levels: list[tuple[int, int]], total: int) -> list[tuple[str, Figures, float]]:
    """Start the constant server in a child process, drive it, stop it; rows of
    (workload, figures, server CPU microseconds per request)."""
    bin_ = ensure_benchmark()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.grpc_floor", "--serve", str(port)])
    out: list[tuple[str, Figures, float]] = []
    try:
        wait_for_port(port, 30, proc)
        ep = f"127.0.0.1:{port}"
        for conns, clients in levels:
            n = max(total, clients * 20)
            put = ["put", "--key-size", "8", "--val-size", "256", "--total", str(n)]
            rng = ["range", "k", "--consistency", "s", "--total", str(n)]
            for name, args in (("put", put), ("range", rng)):
                c0 = cpu_seconds(proc.pid)
                f = run_benchmark(bin_, ep, conns, clients, args)
                cpu_us = (cpu_seconds(proc.pid) - c0) / n * 1e6
                out.append((f"{name} {conns}/{clients}", f, cpu_us))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.grpc_floor")
    ap.add_argument("--serve", type=int, metavar="PORT")
    ap.add_argument("--total", type=int, default=10000)
    ns = ap.parse_args(argv)
    if ns.serve:
        serve(ns.serve)
        return 0
    print(f"load: {os.getloadavg()[0]:.2f} (1-min load average), {os.cpu_count()} cores")
    t0 = time.monotonic()
    print("| workload | req/s | avg/p99 ms | server CPU per request |\n|---|---|---|---|")
    for name, f, cpu_us in measure([(16, 256), (1, 1)], ns.total):
        print(f"| bare grpc.aio {name} | {f.rps:.0f} | {f.avg_ms:.2f}/{f.p99_ms:.2f} "
              f"| {cpu_us:.0f} µs |", flush=True)
    print(f"took {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
