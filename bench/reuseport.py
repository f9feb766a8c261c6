"""Does SO_REUSEPORT help the native front end? 1 vs N worker processes on one port.

    python -m bench.reuseport                    # put and range at 16/256: 1 worker, then 2
    python -m bench.reuseport --workers 1 2 3    # other worker counts
    python -m bench.reuseport --serve PORT       # one worker (what the measurement starts)

Each worker is a process running ``keelson.api.native.NativeServer`` on uvloop in front of a
constant member (Put answers a constant ``PutResponse``, Range a constant one-key
``RangeResponse``: no keelson work at all), listening on the same 127.0.0.1 port with
SO_REUSEPORT, so the kernel spreads the load generator's connections over the workers.
The load is etcd's own ``benchmark`` (as ``bench.run``). Reported: requests/s, latency,
and the CPU the workers spent per request (summed over workers).

This measures the front end only: a real member keeps its state in one process, so using
several workers would need the member split (raft + storage in one process, front ends
forwarding to it) - not wired in anywhere; see issue 7.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from bench.grpc_floor import cpu_seconds
from bench.run import Figures, ensure_benchmark, run_benchmark
from keelson.testing.etcd import free_port, wait_for_port


class ConstantMember:
    """The part of a member the KV servicer calls, answering constants."""

    def __init__(self) -> None:
        from keelson.proto.etcdserverpb import rpc_pb2 as pb
        from keelson.proto.mvccpb import kv_pb2

        header = pb.ResponseHeader(cluster_id=1, member_id=1, revision=1, raft_term=1)
        self._put = pb.PutResponse(header=header)
        self._range = pb.RangeResponse(
            header=header,
            kvs=[kv_pb2.KeyValue(key=b"k", value=b"v" * 256, create_revision=1,
                                 mod_revision=1, version=1)],
            count=1,
        )

    async def put(self, request: Any, **kw: Any) -> Any:
        return self._put

    async def range(self, request: Any, **kw: Any) -> Any:
        return self._range


def serve(port: int) -> None:
    """One worker: the native front end on 127.0.0.1:port (SO_REUSEPORT) until SIGTERM."""
    from keelson.api.native import NativeServer
    from keelson.api.native._protocol import GrpcProtocol

    async def main() -> None:
        server = NativeServer(ConstantMember())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)
        sock.setblocking(False)
        # NativeServer binds without SO_REUSEPORT: accept on our socket with its protocol.
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(lambda: GrpcProtocol(server), sock=sock)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        listener.close()
        await server.stop(None)

    import uvloop

    uvloop.install()
    asyncio.run(main())


def measure(workers: int, total: int, conns: int, clients: int) -> list[tuple[str, Figures, float]]:
    """Start ``workers`` worker processes on one port, drive them, stop them (by PID)."""
    bin_ = ensure_benchmark()
    port = free_port()
    procs = [
        subprocess.Popen([sys.executable, "-m", "bench.reuseport", "--serve", str(port)])
        for _ in range(workers)
    ]
    out: list[tuple[str, Figures, float]] = []
    try:
        for proc in procs:
            wait_for_port(port, 30, proc)
        time.sleep(1.0)  # every worker listening before the first connection
        ep = f"127.0.0.1:{port}"
        put = ["put", "--key-size", "8", "--val-size", "256", "--total", str(total)]
        rng = ["range", "k", "--consistency", "s", "--total", str(total)]
        for name, args in (("put", put), ("range", rng)):
            c0 = sum(cpu_seconds(p.pid) for p in procs)
            f = run_benchmark(bin_, ep, conns, clients, args)
            cpu_us = (sum(cpu_seconds(p.pid) for p in procs) - c0) / total * 1e6
            out.append((f"{name} {conns}/{clients}", f, cpu_us))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reuseport")
    ap.add_argument("--serve", type=int, metavar="PORT")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--total", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2)
    ns = ap.parse_args(argv)
    if ns.serve:
        serve(ns.serve)
        return 0
    print(f"load: {os.getloadavg()[0]:.2f} (1-min load average), {os.cpu_count()} cores")
    print("| workers | workload | req/s | avg/p99 ms | worker CPU per request |")
    print("|---|---|---|---|---|")
    for _ in range(ns.rounds):  # interleaved, so a change in machine load hits every row
        for workers in ns.workers:
            for name, f, cpu_us in measure(workers, ns.total, 16, 256):
                print(f"| {workers} | {name} | {f.rps:.0f} | {f.avg_ms:.2f}/{f.p99_ms:.2f} "
                      f"| {cpu_us:.0f} µs |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
