"""How long a restarting member takes to rebuild its key index from the backend.

    python -m bench.restore               # 100,000 keys of 256 bytes, written in random order
    python -m bench.restore --keys 20000

Writes the keys straight into a ``KVStore`` on a fresh LMDB backend (1,000 puts per
backend txn, unsynced: only the restore is timed), in random key order as concurrent
clients would, closes it, and times opening a new ``KVStore`` on it: ``KVStore.restore``
reads and decodes every stored revision and rebuilds the in-memory index, which is what
``make bench`` measures end to end (with the WAL replay and an election) as the restart
time.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time

from keelson import mvcc
from keelson.backend import Backend


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.restore")
    ap.add_argument("--keys", type=int, default=100_000)
    ns = ap.parse_args(argv)
    keys = list(range(ns.keys))
    random.Random(1).shuffle(keys)
    with tempfile.TemporaryDirectory(prefix="keelson-restore-") as d:
        backend = Backend(d, buckets=mvcc.KVStore.BUCKETS, sync=False)
        kv = mvcc.KVStore(backend)
        for i in range(0, len(keys), 1000):
            with kv.batch() as btx:
                for k in keys[i : i + 1000]:
                    kv.put(btx, mvcc.PutRequest(key=k.to_bytes(8, "big"), value=b"v" * 256))
        backend.close()
        backend = Backend(d, buckets=mvcc.KVStore.BUCKETS, sync=False)
        t0 = time.monotonic()
        kv = mvcc.KVStore(backend)
        took = time.monotonic() - t0
        backend.close()
    print(f"restore of {ns.keys:,} keys: {took:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
