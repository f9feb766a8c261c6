"""keelson against etcd 3.4, side by side, with etcd's own `benchmark` load generator.

    python -m bench.run            # the full table (make bench; 24 minutes under load 14)
    python -m bench.run --quick    # 3-member put and range-l at 16/256 (make bench-quick)
    python -m bench.run --only etcd  # one system only (to check the harness)
    python -m bench.run --members 3 --skip-storage   # a subset

Each workload runs on etcd and on keelson one after the other, alternating which goes
first, on clusters started fresh for it, so machine noise falls on both; 1/1 and 16/256
workloads run ``MEDIAN_ROUNDS`` such rounds and show each system's median round. Throughput rows:
the ratio column is keelson's requests/s over etcd's in the same run (1.0 is parity, higher
is better). Resource rows (watch latency, peak RSS, db file, restart time): the ratio is
keelson's figure over etcd's (1.0 is parity, lower is better).

What is measured, per cluster size (1 and 3 members):
- put (8-byte keys in a 100,000-key space, 256-byte values), range of one key
  (linearizable and serializable) at conns/clients 1/1, 4/16, 16/256; txn-put at 4/16 and
  16/256;
- watch-latency: ``benchmark watch-latency`` with 256 watchers (``--clients 256`` over
  ``--conns 16``; one watcher per client on one key), puts at ``--put-rate 100``; each put
  yields 256 results (put acknowledged -> event received), so avg/p99 are over all events;
- storage: 100,000 distinct keys of 256 bytes (``put --sequential-keys`` at 16/256), then
  peak RSS per member (VmHWM from /proc/<pid>/status, the largest member), the db file on
  disk (etcd: ``member/snap/db``, bbolt; keelson: ``member/snap/db/data.mdb``, LMDB; apparent
  size and allocated blocks), and the time to restart one member (a follower on 3 members)
  until it answers a linearizable read on its own endpoint.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from keelson.testing.etcd import etcdctl
from keelson.testing.local_cluster import LocalCluster

REPO = Path(__file__).resolve().parent.parent
BENCH_BIN = REPO / ".etcd-bench" / "bin" / "benchmark"
BUILD_SCRIPT = REPO.parent / "shared" / "tools" / "build-etcd-benchmark.sh"

LEVELS = [(1, 1), (4, 16), (16, 256)]
KINDS = ("etcd", "keelson")
STORAGE_KEYS = 100_000
WATCHERS = 256
WATCH_PUTS = 100


@dataclass(frozen=True)
class Figures:
    rps: float
    avg_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Storage:
    """What the storage workload measures on one system."""

    load: Figures  # the 100,000-key load itself
    peak_rss_kib: int  # largest VmHWM among the members
    db_bytes: int  # apparent size of the db file (largest member)
    db_alloc_bytes: int  # blocks allocated to it on disk
    restart_s: float  # restart of one member until a linearizable read succeeds


def ensure_benchmark() -> Path:
    if BENCH_BIN.exists():
        return BENCH_BIN
    found = shutil.which("benchmark")
    if found and "etcd" in subprocess.run(
        [found, "--help"], capture_output=True, text=True
    ).stdout:
        return Path(found)
    if not BUILD_SCRIPT.exists():
        raise SystemExit(f"no etcd benchmark binary and no {BUILD_SCRIPT} to build it")
    subprocess.run(["bash", str(BUILD_SCRIPT), str(BENCH_BIN.parent)], check=True)
    return BENCH_BIN


def parse(output: str) -> Figures:
    def grab(pattern: str) -> float:
        m = re.search(pattern, output)
        if not m:
            raise RuntimeError(f"benchmark output lacks {pattern!r}:\n{output[-2000:]}")
        return float(m.group(1))

    return Figures(
        rps=grab(r"Requests/sec:\s+([0-9.]+)"),
        avg_ms=grab(r"Average:\s+([0-9.]+) secs") * 1000,
        p99_ms=grab(r"99% in ([0-9.]+) secs") * 1000,
    )


def run_benchmark(bin_: Path, endpoints: str, conns: int, clients: int, args: list[str],
                  timeout: float = 300) -> Figures:
    cmd = [str(bin_), "--endpoints", endpoints, "--conns", str(conns),
           "--clients", str(clients), "--precise", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return parse(out.stdout)


MEDIAN_ROUNDS = 3
"""Rounds of each 1/1 and 16/256 workload per system (fresh clusters, alternating); the row
shows each system's median round. A 1/1 run lasts about two seconds and waits on fsyncs and
wake-ups; a 16/256 run saturates both cores for about a second, and the same system's
rate swung from 7,349 to 10,398 req/s across four such runs on this (virtual) machine, so
one run swings by a fifth either way."""

MEDIAN_LEVELS = ((1, 1), (16, 256))


def rounds_for(conns: int, clients: int, quick: bool) -> int:
    return MEDIAN_ROUNDS if (conns, clients) in MEDIAN_LEVELS and not quick else 1


def median_run(runs: list[Figures]) -> Figures:
    """The run with the median requests/s (the lower middle one of an even count)."""
    if not runs:
        raise ValueError("no runs")
    return sorted(runs, key=lambda f: f.rps)[(len(runs) - 1) // 2]


def total_for(clients: int, quick: bool) -> int:
    """Requests per load workload: enough for a stable rate, bounded in time for 1/1
    (where each request waits for fsyncs)."""
    if quick:
        return max(2000, clients * 20)
    return {1: 1000, 16: 3000}.get(clients, max(6000, clients * 20))


PUT = ["--key-size", "8", "--val-size", "256", "--key-space-size", "100000"]


def workloads(quick: bool, sizes: list[int]) -> list[tuple[str, int, int, int, list[str]]]:
    """Throughput workloads: (name, members, conns, clients, benchmark args)."""
    out: list[tuple[str, int, int, int, list[str]]] = []
    levels = [(16, 256)] if quick else LEVELS
    for members in [3] if quick else sizes:
        for conns, clients in levels:
            n = str(total_for(clients, quick))
            out.append(("put", members, conns, clients, ["put", *PUT, "--total", n]))
            out.append(("range-l", members, conns, clients,
                        ["range", "k", "--consistency", "l", "--total", n]))
            if not quick:
                out.append(("range-s", members, conns, clients,
                            ["range", "k", "--consistency", "s", "--total", n]))
                if (conns, clients) != (1, 1):
                    out.append(("txn-put", members, conns, clients,
                                ["txn-put", *PUT, "--total", n]))
        if not quick:
            out.append(("watch-latency", members, 16, WATCHERS,
                        ["watch-latency", "--total", str(WATCH_PUTS), "--put-rate", "100",
                         "--key-size", "8", "--val-size", "256"]))
    return out


def db_file(kind: str, data_dir: Path) -> Path:
    """The backend's database file: bbolt's ``db`` for etcd, LMDB's ``data.mdb`` for keelson."""
    snap = data_dir / "member" / "snap"
    return snap / "db" / "data.mdb" if kind == "keelson" else snap / "db"


def storage_run(bin_: Path, cluster: LocalCluster) -> Storage:
    """Load 100,000 distinct keys, then read RSS and db files, then restart one member."""
    load = run_benchmark(
        bin_, cluster.endpoints, 16, 256,
        ["put", "--key-size", "8", "--val-size", "256", "--sequential-keys",
         "--key-space-size", str(STORAGE_KEYS), "--total", str(STORAGE_KEYS)],
        timeout=900,
    )
    rss = max(m.peak_rss_kib() for m in cluster.members)
    files = [db_file(cluster.kind, m.data_dir) for m in cluster.members]
    db_bytes = max(f.stat().st_size for f in files)
    db_alloc = max(f.stat().st_blocks * 512 for f in files)
    victim = 0
    if len(cluster.members) > 1:
        lead = cluster.leader_endpoint()
        victim = next(i for i, m in enumerate(cluster.members) if m.endpoint != lead)
    restart = cluster.restart_member(victim)
    return Storage(load, rss, db_bytes, db_alloc, restart)


def load_run(bin_: Path, name: str, conns: int, clients: int, args: list[str],
             cluster: LocalCluster) -> Figures:
    if name.startswith("range"):  # range reads one existing key
        etcdctl(cluster.endpoints, "put", "k", "v" * 256)
    return run_benchmark(bin_, cluster.endpoints, conns, clients, args)


STORAGE_ROWS = (
    ("peak RSS per member MiB {m}m", "peak_rss_kib", 1024, ".1f"),
    ("db file MiB {m}m (apparent size)", "db_bytes", 1024 * 1024, ".1f"),
    ("db file MiB {m}m (allocated)", "db_alloc_bytes", 1024 * 1024, ".1f"),
    ("restart to linearizable read s {m}m", "restart_s", 1, ".2f"),
)
"""Resource rows of the storage workload: (label, Storage field, divisor, format)."""


def with_cluster(kind: str, members: int, workdir: Path,
                 body: Callable[[LocalCluster], object]) -> object | None:
    """Run ``body`` on a fresh cluster; on failure once more on another fresh one (new data
    dir, new ports: on a shared machine a port the OS just called free can be taken by
    someone else's server before ours binds it). None if both attempts failed."""
    for attempt in (1, 2):
        try:
            cluster = LocalCluster(kind, members, workdir.with_name(f"{workdir.name}-{attempt}"))
            cluster.start()
            try:
                return body(cluster)
            finally:
                cluster.stop()
        except (RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
            print(f"{kind} {members}m attempt {attempt} failed: {str(exc)[-600:]}",
                  file=sys.stderr, flush=True)
    return None


def load_row(label: str, figs: dict[str, Figures]) -> str:
    e, k = figs.get("etcd"), figs.get("keelson")

    def cell(f: Figures | None) -> tuple[str, str]:
        if f is None:
            return "-", "-"
        return f"{f.rps:.0f}", f"{f.avg_ms:.2f}/{f.p99_ms:.2f}"

    er, el = cell(e)
    kr, kl = cell(k)
    ratio = f"{k.rps / e.rps:.2f}" if e and k else "-"
    return f"| {label} | {er} | {kr} | {ratio} | {el} | {kl} |"


format_row = load_row  # the name earlier callers used


def resource_row(label: str, e: float | None, k: float | None, fmt: str) -> str:
    def cell(v: float | None) -> str:
        return "-" if v is None else format(v, fmt)

    ratio = f"{k / e:.2f}" if e and k is not None else "-"
    return f"| {label} | {cell(e)} | {cell(k)} | {ratio} |"


LOAD_HEADER = ("| workload | etcd req/s | keelson req/s | ratio | etcd avg/p99 ms "
               "| keelson avg/p99 ms |\n|---|---|---|---|---|---|")
RESOURCE_HEADER = ("| measure (lower is better) | etcd | keelson | keelson/etcd |\n"
                   "|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=list(KINDS))
    ap.add_argument("--members", type=int, action="append", choices=[1, 3],
                    help="cluster sizes (default 1 and 3)")
    ap.add_argument("--skip-storage", action="store_true",
                    help="leave out the 100,000-key load, RSS, db size and restart")
    ap.add_argument("--skip-load", action="store_true",
                    help="leave out the throughput and watch workloads (storage only)")
    ns = ap.parse_args(argv)
    sizes = ns.members or [1, 3]
    bin_ = ensure_benchmark()
    kinds = [ns.only] if ns.only else list(KINDS)
    load_rows: list[str] = []
    res_rows: list[str] = []
    ratios: dict[str, float] = {}
    load1 = os.getloadavg()[0]
    t0 = time.monotonic()
    step = 0

    def order() -> list[str]:
        nonlocal step
        step += 1
        return kinds if step % 2 == 1 else list(reversed(kinds))

    with tempfile.TemporaryDirectory(prefix="keelson-bench-") as tmp:
        todo = [] if ns.skip_load else workloads(ns.quick, sizes)
        for i, (name, members, conns, clients, args) in enumerate(todo):
            runs: dict[str, list[Figures]] = {}
            rounds = rounds_for(conns, clients, ns.quick)
            for r in range(rounds):
                for kind in order():
                    body = functools.partial(load_run, bin_, name, conns, clients, args)
                    got = with_cluster(kind, members, Path(tmp) / f"{kind}-{i}-{r}", body)
                    if isinstance(got, Figures):
                        runs.setdefault(kind, []).append(got)
            figs = {kind: median_run(v) for kind, v in runs.items()}
            row = f"{name} {members}m {conns}/{clients}"
            label = row
            if rounds > 1:
                label += f" (median of {rounds})"
                print(f"{label}: " + "; ".join(
                    f"{kind} " + ", ".join(f"{f.rps:.0f}" for f in v) + " req/s"
                    for kind, v in runs.items()), flush=True)
            load_rows.append(load_row(label, figs))
            print(load_rows[-1], flush=True)
            if "etcd" in figs and "keelson" in figs:
                ratios[row] = figs["keelson"].rps / figs["etcd"].rps
            if name == "watch-latency":
                res_rows.append(resource_row(
                    f"watch-latency p99 ms {members}m ({WATCHERS} watchers)",
                    figs["etcd"].p99_ms if "etcd" in figs else None,
                    figs["keelson"].p99_ms if "keelson" in figs else None, ".2f"))
                print(res_rows[-1], flush=True)
        if not ns.quick and not ns.skip_storage:
            for members in sizes:
                st: dict[str, Storage] = {}
                for kind in order():
                    got = with_cluster(kind, members, Path(tmp) / f"{kind}-storage-{members}",
                                       functools.partial(storage_run, bin_))
                    if isinstance(got, Storage):
                        st[kind] = got
                load_rows.append(load_row(
                    f"put {STORAGE_KEYS:,} keys {members}m 16/256",
                    {k: v.load for k, v in st.items()}))
                print(load_rows[-1], flush=True)
                for label, attr, scale, fmt in STORAGE_ROWS:
                    e, k = (getattr(st[x], attr) / scale if x in st else None for x in KINDS)
                    res_rows.append(resource_row(label.format(m=members), e, k, fmt))
                    print(res_rows[-1], flush=True)
    took = time.monotonic() - t0
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    load2 = os.getloadavg()[0]
    about = (f"{os.cpu_count()} cores; 1-minute load average {load1:.1f} at the start, "
             f"{load2:.1f} at the end; took {took:.0f} s")
    table = LOAD_HEADER + "\n" + "\n".join(load_rows)
    if res_rows:
        table += "\n\n" + RESOURCE_HEADER + "\n" + "\n".join(res_rows)
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    partial = ns.only or ns.members or ns.skip_storage or ns.skip_load
    suffix = "-quick" if ns.quick else "-partial" if partial else ""
    what = ("make bench-quick" if ns.quick and not partial else
            "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
            if partial else "make bench")
    (results / f"{stamp}{suffix}.md").write_text(
        f"# bench {stamp} ({what})\n\n{about}\n\n{table}\n")
    print(table)
    print(about)
    if ns.quick and "put 3m 16/256" in ratios and "range-l 3m 16/256" in ratios:
        print(f"put ratio {ratios['put 3m 16/256']:.2f}, "
              f"range ratio {ratios['range-l 3m 16/256']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
