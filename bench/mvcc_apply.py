"""CPU per applied put, the way a member applies committed entries (no raft, no gRPC).

    python -m bench.mvcc_apply [--puts N] [--runs R] [--profile]

What one timed put includes, as ``Applier._apply`` / ``_apply_request`` and the KV service
do it: parsing the entry's ``InternalRaftRequest`` bytes, ``convert.put_from_pb``,
``KVStore.put`` inside ``KVStore.batch()`` (16 puts per batch, as committed entries arrive
in one Ready), the consistent index written per entry, and, after the batch, building the
client's ``PutResponse`` with ``convert.put_to_pb`` and a full header. The store is the
server's: a real LMDB ``Backend`` in a temp dir, ``KVStore(deferred=True)`` with a lessor,
flushed every 100 batches (about the server's 100 ms ``--backend-batch-interval`` at its
put rate). 8-byte keys drawn at random from a 100,000-key space, 256-byte values.

The ``watchers`` variant adds a ``WatchableStore`` with 10 synced range watchers splitting
the key space (each put matches one) whose stream is drained after every batch, and the
``sync_watchers`` call the server makes after each apply.

Reported: ``time.process_time()`` microseconds per put (CPU of this process, so disk
waits do not count; LMDB runs with ``sync=False`` to keep fsync out of a shared machine's
figures). The entry bytes are encoded before the clock starts (that is the proposer's work).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import tempfile
import time
from typing import Any

from keelson import mvcc
from keelson.backend import Backend
from keelson.lease import LEASE_BUCKET, Lessor
from keelson.proto.etcdserverpb import raft_internal_pb2 as ipb
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server import convert

KEY_SPACE = 100_000
VALUE_SIZE = 256
PER_BATCH = 16
FLUSH_EVERY_BATCHES = 100
WATCHERS = 10


def _entries(n: int, seed: int) -> list[bytes]:
    """The raft entries' payloads: one encoded InternalRaftRequest put each."""
    rng = random.Random(seed)
    value = bytes(rng.randrange(256) for _ in range(VALUE_SIZE))
    out = []
    for i in range(n):
        key = b"%08d" % rng.randrange(KEY_SPACE)
        req = ipb.InternalRaftRequest(put=pb.PutRequest(key=key, value=value))
        req.header.ID = i + 1
        out.append(req.SerializeToString())
    return out


def _which(req: ipb.InternalRaftRequest) -> str | None:
    """The request an entry carries, found as ``Applier._apply_request`` finds it
    (InternalRaftRequest has no oneof: the first set field other than the header/ID)."""
    for fd, _ in req.ListFields():
        if fd.name not in ("header", "ID"):
            return str(fd.name)
    return None


def run(n: int, *, watchers: bool, seed: int = 1, profile: cProfile.Profile | None = None
        ) -> float:
    """Apply ``n`` puts; returns CPU microseconds per put."""
    entries = _entries(n, seed)
    with tempfile.TemporaryDirectory() as tmp:
        backend = Backend(
            tmp, buckets=(*mvcc.KVStore.BUCKETS, LEASE_BUCKET), map_size=1 << 30, sync=False
        )
        lessor = Lessor(lambda keys: None)
        kv = mvcc.KVStore(backend, lessor=lessor, deferred=True)
        ws: mvcc.WatchableStore | None = None
        stream: mvcc.WatchStream | None = None
        if watchers:
            ws = mvcc.WatchableStore(kv)
            stream = ws.new_stream(max_pending=1024)
            step = KEY_SPACE // WATCHERS
            for w in range(WATCHERS):
                stream.watch(b"%08d" % (w * step), b"%08d" % ((w + 1) * step))
        delivered = 0
        responses: list[Any] = []
        index = 0
        if profile is not None:
            profile.enable()
        start = time.process_time()
        for b in range(0, n, PER_BATCH):
            results: list[tuple[int, Any]] = []
            with kv.batch() as btx:
                for data in entries[b : b + PER_BATCH]:
                    index += 1
                    req = ipb.InternalRaftRequest()
                    req.ParseFromString(data)
                    rid = req.header.ID or req.ID
                    if _which(req) == "put":  # a plain put, as Applier._apply_request does it
                        results.append((rid, kv.put_plain(btx, req.put.key, req.put.value)))
                    btx.set_consistent_index(index, 2)
            if (b // PER_BATCH + 1) % FLUSH_EVERY_BATCHES == 0:
                backend.flush()
            if ws is not None and stream is not None:
                if ws.pending_sync():
                    ws.sync_watchers()
                for resp in stream.poll():
                    delivered += len(resp.events)
            for _rid, r in results:
                header = pb.ResponseHeader(
                    cluster_id=0x1234, member_id=0x5678, revision=kv.current_revision,
                    raft_term=2,
                )
                header.revision = r.revision
                responses.append(convert.put_to_pb(r, header))
            responses.clear()
        backend.flush()
        elapsed = time.process_time() - start
        if profile is not None:
            profile.disable()
        if kv.current_revision != n + 1:
            raise AssertionError(f"applied up to {kv.current_revision}, expected {n + 1}")
        if watchers and delivered != n:
            raise AssertionError(f"watchers saw {delivered} events, expected {n}")
        backend.close()
    return elapsed / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--puts", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one run of each variant")
    ap.add_argument("--only", choices=("plain", "watchers"))
    args = ap.parse_args()
    variants = [v for v in ("plain", "watchers") if args.only in (None, v)]
    for variant in variants:
        if args.profile:
            prof = cProfile.Profile()
            us = run(args.puts, watchers=variant == "watchers", profile=prof)
            print(f"{variant}: {us:.1f} us/put (profiled)")
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
            continue
        figures = [run(args.puts, watchers=variant == "watchers") for _ in range(args.runs)]
        print(
            f"{variant:>8}: {statistics.median(figures):6.1f} us/put median of {args.runs} "
            f"(min {min(figures):.1f}, max {max(figures):.1f}) over {args.puts} puts"
        )


if __name__ == "__main__":
    main()
