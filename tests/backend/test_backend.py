"""The LMDB backend: buckets, ranges, the consistent index, defragmentation."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from keelson.backend import Backend, BackendError

KEY = b"key"


@pytest.fixture
def backend(tmp_path: Path) -> Backend:
    b = Backend(str(tmp_path / "db"), buckets=[KEY, b"lease"], map_size=64 << 20)
    yield b
    b.close()


def fill(b: Backend, n: int, value: bytes = b"v") -> None:
    with b.write() as tx:
        for i in range(n):
            tx.put(KEY, b"k%05d" % i, value)


def test_put_get_delete(backend: Backend) -> None:
    with backend.write() as tx:
        tx.put(KEY, b"a", b"1")
        assert tx.get(KEY, b"a") == b"1"  # a txn sees its own writes
    with backend.read() as tx:
        assert tx.get(KEY, b"a") == b"1"
        assert tx.get(b"lease", b"a") is None
    with backend.write() as tx:
        assert tx.delete(KEY, b"a")
        assert not tx.delete(KEY, b"a")
    with backend.read() as tx:
        assert tx.get(KEY, b"a") is None


def test_range_forward_reverse_and_bounds(backend: Backend) -> None:
    fill(backend, 10)
    with backend.read() as tx:
        keys = [k for k, _ in tx.range(KEY, b"k00003", b"k00006")]
        assert keys == [b"k00003", b"k00004", b"k00005"]
        keys = [k for k, _ in tx.range(KEY, b"k00003", b"k00006", reverse=True)]
        assert keys == [b"k00005", b"k00004", b"k00003"]
        assert [k for k, _ in tx.range(KEY, b"k00008", None)] == [b"k00008", b"k00009"]
        assert [k for k, _ in tx.range(KEY, b"k00008", None, reverse=True)] == [
            b"k00009",
            b"k00008",
        ]
        assert [k for k, _ in tx.range(KEY, b"z", None)] == []
        assert [k for k, _ in tx.range(KEY, b"", b"k00000", reverse=True)] == []
        assert tx.count(KEY) == 10


def test_unknown_bucket_is_an_error(backend: Backend) -> None:
    with backend.read() as tx, pytest.raises(BackendError):
        tx.get(b"nope", b"a")


def test_exception_aborts_the_write_and_the_consistent_index(backend: Backend) -> None:
    with backend.write() as tx:
        tx.put(KEY, b"a", b"1")
        tx.set_consistent_index(5, 2)
    with pytest.raises(RuntimeError), backend.write() as tx:
        tx.put(KEY, b"b", b"2")
        tx.set_consistent_index(6, 2)
        raise RuntimeError("crash between apply and commit")
    assert backend.consistent_index() == (5, 2)
    with backend.read() as tx:
        assert tx.get(KEY, b"b") is None
    # the write lock was released by the abort
    with backend.write() as tx:
        tx.put(KEY, b"c", b"3")


def test_reopen_keeps_data_and_index(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    b = Backend(path, buckets=[KEY], map_size=64 << 20)
    fill(b, 3)
    with b.write() as tx:
        tx.set_consistent_index(42, 7)
    b.close()
    b = Backend(path, buckets=[KEY], map_size=64 << 20)
    assert b.consistent_index() == (42, 7)
    with b.read() as tx:
        assert tx.count(KEY) == 3
    b.close()


def test_defragment_shrinks_and_keeps_everything(backend: Backend) -> None:
    fill(backend, 2000, b"x" * 1000)
    with backend.write() as tx:
        for i in range(0, 2000):
            if i % 10:
                tx.delete(KEY, b"k%05d" % i)
    before = backend.size()
    assert backend.size_in_use() < before
    backend.defragment()
    assert backend.size() < before
    with backend.read() as tx:
        assert tx.count(KEY) == 200
        assert tx.get(KEY, b"k00010") == b"x" * 1000


def test_defragment_waits_for_readers_and_keeps_serving(backend: Backend) -> None:
    fill(backend, 500, b"y" * 500)
    started = threading.Event()
    release = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        with backend.read() as tx:
            started.set()
            release.wait(5)
            seen.append(sum(1 for _ in tx.range(KEY, b"", None)))

    t = threading.Thread(target=reader)
    t.start()
    started.wait(5)
    d = threading.Thread(target=backend.defragment)
    d.start()
    release.set()
    t.join(10)
    d.join(10)
    assert seen == [500]
    with backend.read() as tx:
        assert tx.count(KEY) == 500


def test_bucket_names_are_sorted_and_include_meta(backend: Backend) -> None:
    assert backend.bucket_names() == (KEY, b"lease", b"meta")
