"""Profile a keelson member under one of the benchmark's loads with py-spy.

    python -m bench.profile put            # 3 members, put 16/256, profile the leader
    python -m bench.profile range --members 3 --seconds 10
    python -m bench.profile put --format raw --out /tmp/put.txt   # collapsed stacks

Starts a fresh keelson cluster (``LocalCluster``), drives it with etcd's ``benchmark`` at
the given conns/clients for long enough to cover the sampling window, and records the
leader (or ``--member``) with ``py-spy record`` (install it with ``pip install -e
'.[bench]'``). Prints the hottest functions by own and total time from the collapsed stacks,
so a profile can be read in a terminal; ``--out`` keeps the raw file (speedscope/flamegraph
input). Only processes started here are stopped, by PID.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.run import ensure_benchmark, run_benchmark
from keelson.testing.etcd import etcdctl
from keelson.testing.local_cluster import LocalCluster

LOADS = {
    "put": ["put", "--key-size", "8", "--val-size", "256", "--key-space-size", "100000"],
    "range": ["range", "k", "--consistency", "l"],
    "range-s": ["range", "k", "--consistency", "s"],
    "txn-put": ["txn-put", "--key-size", "8", "--val-size", "256", "--key-space-size", "100000"],
    # --total is the number of puts; each is seen by --clients watchers
    "watch-latency": ["watch-latency", "--put-rate", "100", "--key-size", "8",
                      "--val-size", "256"],
}


def summarize(collapsed: str, top: int) -> str:
    """Own and total sample counts per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():  # a frame name with a line break in it
            continue
        count = int(count_s)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for f in set(frames):
            total[f] += count
    out = [f"{samples} samples"]
    for title, counter in (("own", own), ("total", total)):
        out.append(f"-- top {top} by {title} time")
        for frame, n in counter.most_common(top):
            out.append(f"{100 * n / max(1, samples):5.1f}%  {frame}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile")
    ap.add_argument("load", choices=sorted(LOADS))
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--clients", type=int, default=256)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--total", type=int, default=20000)
    ap.add_argument("--member", type=int, default=-1,
                    help="index to profile (-1: the leader, -2: a follower)")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--native", action="store_true", help="include C frames (py-spy --native)")
    ap.add_argument("--out", type=Path)
    ns = ap.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    bin_ = ensure_benchmark()
    with tempfile.TemporaryDirectory(prefix="keelson-profile-") as tmp:
        cluster = LocalCluster("keelson", ns.members, Path(tmp) / "c").start()
        try:
            if ns.load.startswith("range"):
                etcdctl(cluster.endpoints, "put", "k", "v" * 256)
            if ns.member >= 0:
                target = cluster.members[ns.member]
            else:
                lead = cluster.leader_endpoint()
                want_leader = ns.member == -1
                target = next(m for m in cluster.members if (m.endpoint == lead) == want_leader)
            assert target.proc is not None
            load = threading.Thread(
                target=lambda: print(run_benchmark(
                    bin_, cluster.endpoints, ns.conns, ns.clients,
                    [*LOADS[ns.load], "--total", str(ns.total)]), flush=True),
                daemon=True,
            )
            load.start()
            out = ns.out or Path(tmp) / "profile.txt"
            cmd = [pyspy, "record", "--pid", str(target.proc.pid), "--duration",
                   str(ns.seconds), "--format", "raw", "--output", str(out), "--nonblocking"]
            if ns.native:
                cmd.append("--native")
            subprocess.run(cmd, check=True, capture_output=True, timeout=ns.seconds + 60)
            print(summarize(out.read_text(), ns.top))
            load.join(timeout=600)
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
