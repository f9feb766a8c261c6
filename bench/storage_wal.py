"""WAL benchmark: appends per fsync and appends/s, alone and under concurrent load.

Run: ``.venv/bin/python -m bench.storage_wal [--threads 16] [--per-thread 500] [--size 256]``.
Prints one line per scenario. Data goes to a temporary directory (``--dir`` to choose the
disk to measure).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from keelson.raft.types import Entry, HardState
from keelson.wal import WAL, GroupCommitter


def bench_serial(directory: Path, n: int, size: int) -> None:
    wal = WAL.create(directory, b"bench")
    data = b"x" * size
    start = time.perf_counter()
    for i in range(1, n + 1):
        wal.save(HardState(1, 1, i - 1), [Entry(1, i, data=data)], must_sync=True)
    elapsed = time.perf_counter() - start
    wal.close()
    print(
        f"serial save+fsync      : {n} appends, {n / elapsed:9.0f} appends/s, "
        f"{elapsed / n * 1e6:7.0f} us/append, 1.0 appends/fsync"
    )


def bench_unsynced(directory: Path, n: int, size: int) -> None:
    wal = WAL.create(directory, b"bench")
    data = b"x" * size
    start = time.perf_counter()
    for i in range(1, n + 1):
        wal.save(HardState(1, 1, i - 1), [Entry(1, i, data=data)])
    wal.sync()
    elapsed = time.perf_counter() - start
    wal.close()
    print(f"encode+write, 1 fsync  : {n} appends, {n / elapsed:9.0f} appends/s")


def bench_group(directory: Path, threads: int, per_thread: int, size: int) -> None:
    wal = WAL.create(directory, b"bench")
    committer = GroupCommitter(wal)
    order = threading.Lock()
    next_index = [1]
    data = b"x" * size
    latencies: list[float] = []

    def worker() -> None:
        mine: list[float] = []
        for _ in range(per_thread):
            t0 = time.perf_counter()
            with order:
                idx = next_index[0]
                next_index[0] += 1
                fut = committer.submit(HardState(1, 1, idx - 1), [Entry(1, idx, data=data)])
            fut.result()
            mine.append(time.perf_counter() - t0)
        with order:
            latencies.extend(mine)

    ths = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    elapsed = time.perf_counter() - start
    committer.close()
    wal.close()
    stats = committer.stats()
    n = threads * per_thread
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1e3
    p99 = latencies[int(len(latencies) * 0.99)] * 1e3
    print(
        f"group commit {threads:2d} thr   : {n} appends, {n / elapsed:9.0f} appends/s, "
        f"{stats.syncs} fsyncs, {stats.batches / stats.syncs:5.1f} appends/fsync, "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--per-thread", type=int, default=500)
    ap.add_argument("--size", type=int, default=256, help="entry data bytes")
    ap.add_argument("--serial", type=int, default=1000, help="appends in the serial runs")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        print(f"entry size {args.size} B, directory {root}")
        bench_serial(root / "serial", args.serial, args.size)
        bench_unsynced(root / "unsynced", args.serial * 20, args.size)
        for threads in sorted({1, 4, args.threads}):
            bench_group(root / f"group{threads}", threads, args.per_thread, args.size)


if __name__ == "__main__":
    main()
