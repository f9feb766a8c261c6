"""Before/after: two keelson source trees under the same load, alternating, in one run.

    git archive HEAD keelson | tar -x -C /tmp/before      # a tree to compare with
    python -m bench.ab /tmp/before                          # put 3m 16/256, 2 rounds each
    python -m bench.ab /tmp/before --load range --level 1/1 --total 500 --rounds 3
    python -m bench.ab . --after-env KEELSON_EXPERIMENTAL_PARALLEL_APPEND=1  # a switch alone
    python -m bench.ab /tmp/before --load watch-latency --total 300 --rounds 4
    python -m bench.ab /tmp/before --after /tmp/after   # two frozen trees (a shared checkout)
    python -m bench.ab etcd --level 1/1 --total 1500    # this checkout against a real etcd

Each round starts a fresh cluster from each tree (``before`` = the ``keelson`` package in
the given directory, or a real etcd 3.4 when it is ``etcd``; ``after`` = this checkout or
``--after``), alternating which goes first,
drives it with etcd's ``benchmark`` and reports requests/s, latency, and the CPU time the
members spent per request (utime+stime of every member process from /proc, summed over
members, divided by requests). On a shared 2-core machine the CPU per request is the steadier
figure: it does not depend on how much CPU the other processes left over. For
``watch-latency`` (at 16/256: 256 watchers on one key, 100 puts/s) ``--total`` counts puts,
the CPU is per put, and req/s, avg and p99 are over the 256 events of every put (put
acknowledged -> event received), as in bench.run's watch row.

The tree is chosen per member process with ``PYTHONSAFEPATH=1`` (the launch directory is
not put first on ``sys.path``) and ``PYTHONPATH=<tree>``, so everything else (the venv, the
benchmark binary, the flags) is identical.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.run import PUT, REPO, Figures, ensure_benchmark, run_benchmark
from keelson.testing.etcd import etcdctl
from keelson.testing.local_cluster import LocalCluster

LOADS = {
    "put": ["put", *PUT],
    "range": ["range", "k", "--consistency", "l"],
    "range-s": ["range", "k", "--consistency", "s"],
    "txn-put": ["txn-put", *PUT],
    # bench.run's watch row: 256 watchers (at --level 16/256) on one key, 100 puts/s
    "watch-latency": ["watch-latency", "--put-rate", "100", "--key-size", "8", "--val-size", "256"],
}


@dataclass(frozen=True)
class Sample:
    figures: Figures
    cpu_us_per_req: float


def _cpu_seconds(cluster: LocalCluster) -> float:
    """utime + stime of every member process so far, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for m in cluster.members:
        assert m.proc is not None
        fields = Path(f"/proc/{m.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def one(tree: Path | None, workdir: Path, members: int, conns: int, clients: int, load: str,
        total: int, env: dict[str, str] | None = None) -> Sample:
    """One fresh cluster from ``tree`` (None: a real etcd) under one load."""
    env = env or {}
    if tree is None:
        cluster = LocalCluster("etcd", members, workdir).start()
        return _measure(cluster, conns, clients, load, total)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "PYTHONSAFEPATH", *env)}
    os.environ["PYTHONPATH"] = str(tree)
    os.environ["PYTHONSAFEPATH"] = "1"
    os.environ.update(env)
    try:
        cluster = LocalCluster("keelson", members, workdir).start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return _measure(cluster, conns, clients, load, total)


def _measure(cluster: LocalCluster, conns: int, clients: int, load: str, total: int) -> Sample:
    try:
        if load.startswith("range"):
            etcdctl(cluster.endpoints, "put", "k", "v" * 256)
        c0 = _cpu_seconds(cluster)
        f = run_benchmark(ensure_benchmark(), cluster.endpoints, conns, clients,
                          [*LOADS[load], "--total", str(total)])
        return Sample(f, (_cpu_seconds(cluster) - c0) / total * 1e6)
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab")
    ap.add_argument("before", help="a directory holding the keelson package, or 'etcd'")
    ap.add_argument("--load", choices=sorted(LOADS), default="put")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--level", default="16/256", help="conns/clients")
    ap.add_argument("--total", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--after", type=Path, default=REPO,
                    help="the 'after' tree (default: this checkout)")
    ap.add_argument("--after-env", action="append", default=[], metavar="NAME=VALUE",
                    help="set for the 'after' members only (e.g. an experimental switch; "
                    "give this checkout as 'before' to compare the switch alone)")
    ns = ap.parse_args(argv)
    after_env = dict(kv.split("=", 1) for kv in ns.after_env)
    before = None if ns.before == "etcd" else Path(ns.before)
    for tree in (before, ns.after):
        if tree is not None and not (tree / "keelson" / "__init__.py").exists():
            raise SystemExit(f"{tree} holds no keelson package")
    conns, clients = (int(x) for x in ns.level.split("/"))
    trees = {"before": before.resolve() if before else None, "after": ns.after.resolve()}
    got: dict[str, list[Sample]] = {k: [] for k in trees}
    print(f"{ns.load} {ns.members}m {conns}/{clients}, {ns.total} requests, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="keelson-ab-") as tmp:
        for r in range(ns.rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for name in order:
                s = one(trees[name], Path(tmp) / f"{name}-{r}", ns.members, conns, clients,
                        ns.load, ns.total, after_env if name == "after" else None)
                got[name].append(s)
                f = s.figures
                print(f"{name:6} {f.rps:8.0f} req/s  avg {f.avg_ms:8.2f} ms  "
                      f"p99 {f.p99_ms:8.2f} ms  cpu {s.cpu_us_per_req:6.0f} us/req", flush=True)
    for name, samples in got.items():
        rps = sum(s.figures.rps for s in samples) / len(samples)
        cpu = sum(s.cpu_us_per_req for s in samples) / len(samples)
        print(f"{name:6} mean {rps:8.0f} req/s  cpu {cpu:6.0f} us/req")
        rs = sorted(s.figures.rps for s in samples)
        lat = sorted(s.figures.avg_ms for s in samples)
        print(f"{name:6} median {statistics.median(rs):8.0f} req/s (min {rs[0]:.0f}, max "
              f"{rs[-1]:.0f}), median avg latency {statistics.median(lat):.2f} ms")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
