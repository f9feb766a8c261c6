"""hash_kv agrees between stores with the same history (whatever their compaction batching
or restarts), and every mvcc error carries etcd's exact message."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from keelson.backend import Backend
from keelson.mvcc import (
    CompactedError,
    DeleteRangeRequest,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    KeyNotFoundError,
    KVStore,
    LeaseNotFoundError,
    LeaseProvidedError,
    MvccError,
    PutRequest,
    RangeRequest,
    ValueProvidedError,
    WatcherDuplicateIdError,
    WatcherEmptyRangeError,
    WatcherNotFoundError,
)


def run_history(path: Path, seed: int, batch_limit: int, restart_at: int | None) -> KVStore:
    """Apply the same seeded history; ``restart_at`` reopens the store mid-way."""
    rng = random.Random(seed)
    b = Backend(str(path), buckets=KVStore.BUCKETS, map_size=64 << 20)
    s = KVStore(b, compaction_batch_limit=batch_limit)
    for step in range(120):
        if step == restart_at:
            b.close()
            b = Backend(str(path), buckets=KVStore.BUCKETS, map_size=64 << 20)
            s = KVStore(b, compaction_batch_limit=batch_limit)
        op = rng.random()
        key = rng.choice([b"a", b"b", b"c", b"d"])
        with s.batch() as btx:
            if op < 0.65:
                s.put(btx, PutRequest(key, b"%d" % step))
            elif op < 0.9:
                s.delete_range(btx, DeleteRangeRequest(key, rng.choice([b"", b"c", b"\0"])))
            elif s.current_revision > s.compact_revision:
                s.compact(btx, rng.randint(s.compact_revision + 1, s.current_revision))
        s.compaction_step()
    s.finish_compaction()
    return s


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_same_history_same_hash(tmp_path: Path, seed: int) -> None:
    one = run_history(tmp_path / "one", seed, batch_limit=1000, restart_at=None)
    two = run_history(tmp_path / "two", seed, batch_limit=2, restart_at=57)
    assert one.current_revision == two.current_revision
    assert one.compact_revision == two.compact_revision
    for rev in range(one.compact_revision + 1, one.current_revision + 1):
        assert one.hash_kv(rev) == two.hash_kv(rev), (seed, rev)
    assert one.hash() == two.hash()
    other = run_history(tmp_path / "other", seed + 100, batch_limit=3, restart_at=None)
    assert other.hash_kv(0)[0] != one.hash_kv(0)[0]
    for s in (one, two, other):
        s.backend.close()


def test_hash_kv_revision_errors(tmp_path: Path) -> None:
    s = run_history(tmp_path / "db", 5, batch_limit=10, restart_at=None)
    with pytest.raises(FutureRevisionError):
        s.hash_kv(s.current_revision + 1)
    assert s.compact_revision > 0
    with pytest.raises(CompactedError):
        s.hash_kv(s.compact_revision)
    s.backend.close()


@pytest.mark.parametrize(
    ("error", "client_message"),
    [
        (CompactedError, "etcdserver: mvcc: required revision has been compacted"),
        (FutureRevisionError, "etcdserver: mvcc: required revision is a future revision"),
        (KeyNotFoundError, "etcdserver: key not found"),
        (ValueProvidedError, "etcdserver: value is provided"),
        (LeaseProvidedError, "etcdserver: lease is provided"),
        (DuplicateKeyError, "etcdserver: duplicate key given in txn request"),
        (LeaseNotFoundError, "etcdserver: requested lease not found"),
        (EmptyKeyError, "etcdserver: key is not provided"),
        (WatcherDuplicateIdError, "mvcc: duplicate watch ID provided on the WatchStream"),
        (WatcherNotFoundError, "mvcc: watcher does not exist"),
        (WatcherEmptyRangeError, "mvcc: watcher range is empty"),
    ],
)
def test_error_messages(error: type[MvccError], client_message: str) -> None:
    assert error().client_message() == client_message


def test_empty_key_errors(tmp_path: Path) -> None:
    b = Backend(str(tmp_path / "db"), buckets=KVStore.BUCKETS, map_size=64 << 20)
    s = KVStore(b)
    with pytest.raises(EmptyKeyError):
        s.range(RangeRequest(b""))
    with s.batch() as btx:
        with pytest.raises(EmptyKeyError):
            s.put(btx, PutRequest(b""))
        with pytest.raises(EmptyKeyError):
            s.delete_range(btx, DeleteRangeRequest(b""))
    assert s.current_revision == 1
    b.close()
