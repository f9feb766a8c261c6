"""KVStore: revisions, ranges, txn rules, compaction, hashes, restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keelson.backend import Backend
from keelson.mvcc import (
    CompactedError,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DuplicateKeyError,
    FutureRevisionError,
    KeyNotFoundError,
    KVStore,
    LeaseProvidedError,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
    ValueProvidedError,
    prefix_end,
)


def open_store(path: Path) -> tuple[Backend, KVStore]:
    b = Backend(str(path), buckets=KVStore.BUCKETS, map_size=64 << 20)
    return b, KVStore(b, compaction_batch_limit=3)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KVStore]:
    b, s = open_store(tmp_path / "db")
    yield s
    b.close()


def put(s: KVStore, key: bytes, value: bytes = b"v", **kw: object) -> int:
    with s.batch() as btx:
        return s.put(btx, PutRequest(key, value, **kw)).revision  # type: ignore[arg-type]


def test_revisions_versions_and_generations(store: KVStore) -> None:
    assert put(store, b"a", b"1") == 2
    assert put(store, b"a", b"2") == 3
    with store.batch() as btx:
        assert store.delete_range(btx, DeleteRangeRequest(b"a")).deleted == 1
    assert put(store, b"a", b"3") == 5
    kv = store.range(RangeRequest(b"a")).kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.value) == (5, 5, 1, b"3")
    old = store.range(RangeRequest(b"a", revision=3)).kvs[0]
    assert (old.create_revision, old.version, old.value) == (2, 2, b"2")
    assert store.range(RangeRequest(b"a", revision=4)).kvs == ()
    with pytest.raises(FutureRevisionError):
        store.range(RangeRequest(b"a", revision=6))


def test_range_options(store: KVStore) -> None:
    for i, k in enumerate([b"a", b"b", b"c", b"d"]):
        put(store, k, bytes([ord("z") - i]))
    r = store.range(RangeRequest(b"a", b"c"))
    assert [kv.key for kv in r.kvs] == [b"a", b"b"] and r.count == 2
    r = store.range(RangeRequest(b"\0", b"\0", limit=2))
    assert [kv.key for kv in r.kvs] == [b"a", b"b"] and r.more and r.count == 4
    r = store.range(RangeRequest(b"b", b"\0", count_only=True))
    assert r.kvs == () and r.count == 3
    r = store.range(RangeRequest(b"a", prefix_end(b"a")))
    assert [kv.key for kv in r.kvs] == [b"a"]
    r = store.range(RangeRequest(b"\0", b"\0", sort_target=SortTarget.VALUE, limit=1))
    # etcd 3.4: order NONE keeps the limit+1 fetch, then sorts those two keys by value.
    assert [kv.key for kv in r.kvs] == [b"b"] and r.more
    r = store.range(RangeRequest(b"\0", b"\0", sort_order=SortOrder.ASCEND,
                                 sort_target=SortTarget.VALUE, limit=1))
    assert [kv.key for kv in r.kvs] == [b"d"] and r.more
    r = store.range(RangeRequest(b"\0", b"\0", sort_order=SortOrder.DESCEND, keys_only=True))
    assert [kv.key for kv in r.kvs] == [b"d", b"c", b"b", b"a"] and r.kvs[0].value == b""
    r = store.range(RangeRequest(b"\0", b"\0", min_mod_revision=3, max_mod_revision=4))
    assert [kv.key for kv in r.kvs] == [b"b", b"c"] and r.count == 4
    assert prefix_end(b"a\xff") == b"b" and prefix_end(b"\xff") == b"\0"


def test_put_errors(store: KVStore) -> None:
    with store.batch() as btx:
        with pytest.raises(KeyNotFoundError):
            store.put(btx, PutRequest(b"x", ignore_value=True))
        with pytest.raises(ValueProvidedError):
            store.put(btx, PutRequest(b"x", b"v", ignore_value=True))
        with pytest.raises(LeaseProvidedError):
            store.put(btx, PutRequest(b"x", lease=5, ignore_lease=True))
    assert store.current_revision == 1
    put(store, b"x", b"v1")
    with store.batch() as btx:
        r = store.put(btx, PutRequest(b"x", ignore_value=True, prev_kv=True))
    assert r.prev_kv is not None and r.prev_kv.value == b"v1"
    assert store.range(RangeRequest(b"x")).kvs[0].value == b"v1"


def test_txn_compare_branches_and_duplicates(store: KVStore) -> None:
    put(store, b"k", b"1")
    cmp = Compare(b"k", CompareTarget.VALUE, CompareResult.EQUAL, value=b"1")
    req = TxnRequest(
        compare=(cmp,),
        success=(PutRequest(b"k", b"2"), PutRequest(b"j", b"x"), RangeRequest(b"k")),
        failure=(DeleteRangeRequest(b"k"),),
    )
    with store.batch() as btx:
        resp = store.txn(btx, req)
    assert resp.succeeded and resp.revision == 3
    rr = resp.responses[2]
    assert isinstance(rr, type(store.range(RangeRequest(b"k"))))
    assert rr.kvs[0].value == b"2"  # reads see the txn's own writes
    with store.batch() as btx:
        assert not store.txn(btx, req).succeeded
    assert store.range(RangeRequest(b"k")).kvs == ()
    dup = TxnRequest(success=(PutRequest(b"a"), DeleteRangeRequest(b"a", b"b")))
    with store.batch() as btx, pytest.raises(DuplicateKeyError):
        store.txn(btx, dup)
    ok = TxnRequest(success=(TxnRequest(success=(PutRequest(b"a"),), failure=(PutRequest(b"a"),)),))
    with store.batch() as btx:
        store.txn(btx, ok)


def test_compaction_restart_and_hash(tmp_path: Path) -> None:
    b, s = open_store(tmp_path / "db")
    for i in range(10):
        put(s, b"k%d" % (i % 3), b"%d" % i)
    with s.batch() as btx:
        s.delete_range(btx, DeleteRangeRequest(b"k0"))
    h_before = s.hash_kv(12)
    with s.batch() as btx:
        s.compact(btx, 9)
    with s.batch() as btx, pytest.raises(CompactedError):
        s.compact(btx, 9)
    with s.batch() as btx, pytest.raises(FutureRevisionError):
        s.compact(btx, 99)
    assert not s.compaction_step()  # batch limit 3: more work left
    b.close()
    b, s = open_store(tmp_path / "db")  # resumes the unfinished compaction
    assert s.compact_revision == 9 and s.current_revision == 12
    s.finish_compaction()
    with pytest.raises(CompactedError):
        s.range(RangeRequest(b"k1", revision=8))
    assert s.range(RangeRequest(b"k1", revision=9)).kvs[0].value == b"7"
    h_after = s.hash_kv(12)
    full = s.hash()
    assert h_after[1:] == (12, 9) and h_before[1:] == (12, 0)
    b.close()
    b, s2 = open_store(tmp_path / "db")
    assert s2.hash_kv(12) == h_after and s2.hash() == full
    s2.check()
    b.close()
