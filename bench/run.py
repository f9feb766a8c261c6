"""keelson against etcd 3.4, side by side, with etcd's own `benchmark` load generator.

    python -m bench.run            # the full table (make bench, ~10 minutes)
    python -m bench.run --quick    # 3-member put and range-l at 16/256 (make bench-quick)
    python -m bench.run --only etcd  # one system only (to check the harness)

Each workload runs on etcd and on keelson one after the other, alternating which goes
first, on clusters started fresh for it, so machine noise falls on both. The ratio column is
keelson's requests/s over etcd's in the same run: 1.0 is parity, higher is better.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from keelson.testing.etcd import etcdctl
from keelson.testing.local_cluster import LocalCluster

REPO = Path(__file__).resolve().parent.parent
BENCH_BIN = REPO / ".etcd-bench" / "bin" / "benchmark"
BUILD_SCRIPT = REPO.parent / "shared" / "tools" / "build-etcd-benchmark.sh"

LEVELS = [(1, 1), (4, 16), (16, 256)]


@dataclass(frozen=True)
class Figures:
    rps: float
    avg_ms: float
    p99_ms: float


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


def total_for(clients: int, quick: bool) -> int:
    base = 2000 if quick else 4000
    return max(base, clients * 20)


def workloads(quick: bool) -> list[tuple[str, int, int, int, list[str]]]:
    """(name, members, conns, clients, benchmark args)"""
    put = ["put", "--key-size", "8", "--val-size", "256", "--key-space-size", "100000"]
    out: list[tuple[str, int, int, int, list[str]]] = []
    sizes = [3] if quick else [1, 3]
    levels = [(16, 256)] if quick else LEVELS
    for members in sizes:
        for conns, clients in levels:
            n = str(total_for(clients, quick))
            out.append(("put", members, conns, clients, [*put, "--total", n]))
            out.append(("range-l", members, conns, clients,
                        ["range", "k", "--consistency", "l", "--total", n]))
            if not quick:
                out.append(("range-s", members, conns, clients,
                            ["range", "k", "--consistency", "s", "--total", n]))
                if (conns, clients) != (1, 1):
                    out.append(("txn-put", members, conns, clients,
                                ["txn-put", "--key-size", "8", "--val-size", "256",
                                 "--key-space-size", "100000", "--total", n]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["etcd", "keelson"])
    ns = ap.parse_args(argv)
    bin_ = ensure_benchmark()
    kinds = [ns.only] if ns.only else ["etcd", "keelson"]
    rows: list[str] = []
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="keelson-bench-") as tmp:
        for i, (name, members, conns, clients, args) in enumerate(workloads(ns.quick)):
            order = kinds if i % 2 == 0 else list(reversed(kinds))
            figs: dict[str, Figures] = {}
            for kind in order:
                cluster = LocalCluster(kind, members, Path(tmp) / f"{kind}-{i}").start()
                try:
                    # range reads one existing key
                    if name.startswith("range"):
                        etcdctl(cluster.endpoints, "put", "k", "v" * 256)
                    figs[kind] = run_benchmark(bin_, cluster.endpoints, conns, clients, args)
                finally:
                    cluster.stop()
            label = f"{name} {members}m {conns}/{clients}"
            rows.append(format_row(label, figs))
            print(rows[-1], flush=True)
            if "etcd" in figs and "keelson" in figs:
                ratios[label] = figs["keelson"].rps / figs["etcd"].rps
    header = ("| workload | etcd req/s | keelson req/s | ratio | etcd avg/p99 ms "
              "| keelson avg/p99 ms |\n|---|---|---|---|---|---|")
    table = header + "\n" + "\n".join(rows)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d")
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"{stamp}{'-quick' if ns.quick else ''}.md").write_text(
        f"# bench {stamp} ({os.cpu_count()} cores)\n\n{table}\n")
    print(table)
    if ns.quick and "put 3m 16/256" in ratios and "range-l 3m 16/256" in ratios:
        print(f"put ratio {ratios['put 3m 16/256']:.2f}, "
              f"range ratio {ratios['range-l 3m 16/256']:.2f}")
    return 0


def format_row(label: str, figs: dict[str, Figures]) -> str:
    e, k = figs.get("etcd"), figs.get("keelson")

    def cell(f: Figures | None) -> tuple[str, str]:
        if f is None:
            return "-", "-"
        return f"{f.rps:.0f}", f"{f.avg_ms:.2f}/{f.p99_ms:.2f}"

    er, el = cell(e)
    kr, kl = cell(k)
    ratio = f"{k.rps / e.rps:.2f}" if e and k else "-"
    return f"| {label} | {er} | {kr} | {ratio} | {el} | {kl} |"


if __name__ == "__main__":
    t0 = time.monotonic()
    rc = main()
    print(f"bench took {time.monotonic() - t0:.0f} s", file=sys.stderr)
    sys.exit(rc)
