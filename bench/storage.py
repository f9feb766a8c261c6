"""Storage alone, without raft or gRPC: mvcc put throughput and WAL appends per fsync.

    python -m bench.storage

mvcc: puts of 8-byte keys (100,000-key space) and 256-byte values into a fresh LMDB-backed
KVStore, applied the way the server applies them: many puts per backend write transaction
(one commit per raft Ready), each put its own revision. WAL: the concurrent group-commit
figures of ``bench.storage_wal``.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from bench import storage_wal
from keelson.backend import Backend
from keelson.mvcc import KVStore, PutRequest


def bench_mvcc_puts(directory: Path, total: int, per_batch: int) -> float:
    """Puts per second with ``per_batch`` puts in each backend commit."""
    backend = Backend(str(directory), buckets=KVStore.BUCKETS, map_size=1 << 30)
    store = KVStore(backend)
    rng = random.Random(1)
    value = b"v" * 256
    keys = [b"%08d" % rng.randrange(100_000) for _ in range(total)]
    start = time.perf_counter()
    for i in range(0, total, per_batch):
        with store.batch() as btx:
            for key in keys[i : i + per_batch]:
                store.put(btx, PutRequest(key, value))
    elapsed = time.perf_counter() - start
    backend.close()
    return total / elapsed


def main() -> None:
    print("mvcc put, 8-byte keys, 256-byte values, fresh store")
    print(f"{'puts per commit':>16} {'puts':>8} {'puts/s':>10}")
    for per_batch, total in ((1, 2_000), (16, 20_000), (128, 50_000), (1024, 50_000)):
        with tempfile.TemporaryDirectory() as tmp:
            rate = bench_mvcc_puts(Path(tmp), total, per_batch)
        print(f"{per_batch:>16} {total:>8} {rate:>10.0f}")
    print()
    print("WAL group commit under concurrent load")
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (1, 4, 16):
            storage_wal.bench_group(Path(tmp) / f"g{threads}", threads, 500, 256)


if __name__ == "__main__":
    main()
