"""Group commit: concurrent submitters share fsyncs and hear back only after durability."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

from keelson.raft.types import Entry, HardState
from keelson.wal import WAL, GroupCommitter, WALClosedError

THREADS = 16
PER_THREAD = 40


def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_size=64 * 1024)
    synced: list[int] = []  # durable index after each fsync, recorded before futures resolve
    committer = GroupCommitter(wal, on_durable=synced.append)
    order = threading.Lock()
    next_index = [1]
    failures: list[str] = []

    def worker(t: int) -> None:
        for k in range(PER_THREAD):
            with order:  # indexes are handed out and submitted in order, as raft does
                idx = next_index[0]
                next_index[0] += 1
                fut = committer.submit(
                    HardState(1, 1, idx - 1), [Entry(1, idx, data=b"%d-%d" % (t, k))]
                )
            durable = fut.result(timeout=30)
            if durable < idx or not any(s >= idx for s in list(synced)):
                failures.append(f"thread {t}: index {idx} acknowledged before its fsync")
            if committer.durable_index < idx:
                failures.append(f"thread {t}: durable_index behind {idx}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    committer.close()
    stats = committer.stats()
    wal.close()
    assert failures == []
    total = THREADS * PER_THREAD
    assert stats.batches == total
    assert stats.syncs == len(synced)
    assert stats.syncs < total, stats
    _, got = WAL.open(tmp_path)
    assert [e.index for e in got.entries] == list(range(1, total + 1))
    assert got.hard_state == HardState(1, 1, total - 1)


def test_a_gap_fails_only_its_own_batch(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m")
    committer = GroupCommitter(wal)
    ok = committer.submit(None, [Entry(1, 1)])
    bad = committer.submit(None, [Entry(1, 5)])
    assert ok.result(timeout=10) >= 1
    with pytest.raises(ValueError, match="gap"):
        bad.result(timeout=10)
    assert committer.submit(None, [Entry(1, 2)]).result(timeout=10) == 2
    committer.close()
    wal.close()


def test_sync_failure_fails_every_waiter_and_later_submits(tmp_path: Path) -> None:
    gate = threading.Event()

    def faults(point: str) -> None:
        if point == "wal.sync.before":
            gate.wait(10)
            raise OSError(5, "injected EIO")

    wal = WAL.create(tmp_path, b"m", faults=faults)
    committer = GroupCommitter(wal)
    futs: list[Future[int]] = [committer.submit(None, [Entry(1, i)]) for i in range(1, 4)]
    gate.set()
    for f in futs:
        with pytest.raises(OSError, match="injected"):
            f.result(timeout=10)
    with pytest.raises(WALClosedError):
        committer.submit(None, [Entry(1, 4)]).result(timeout=10)
    committer.close()
    with pytest.raises(WALClosedError):
        committer.submit(None, [])
    wal.close()
    assert committer.durable_index == 0
