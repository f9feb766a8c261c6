"""Deferred commit: writes pending in one transaction until ``flush()`` (etcd's batch tx).

What must hold: the owning thread reads its pending writes, other threads see only the
flushed state, a failed deferred write is dropped alone, a crash loses exactly the pending
transaction (data and consistent index together), and nothing can deadlock the owner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from keelson.backend import Backend, BackendError

B = b"kv"


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    b = Backend(str(tmp_path / "db"), map_size=64 * 1024 * 1024, buckets=[B], sync=False)
    yield b
    b.close()


def _in_thread(fn: object) -> object:
    """Run ``fn`` on another thread and return its result (or raise its exception)."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())  # type: ignore[operator]
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            out.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    assert not t.is_alive(), "the other thread is stuck"
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def _other_thread_get(b: Backend, key: bytes) -> bytes | None:
    def get() -> bytes | None:
        with b.read() as tx:
            return tx.get(B, key)

    return _in_thread(get)  # type: ignore[return-value]


def test_pending_writes_are_read_by_the_owner_only_until_flushed(backend: Backend) -> None:
    with backend.write(defer=True) as w:
        w.put(B, b"a", b"1")
        w.set_consistent_index(7, 2)
    with backend.write(defer=True) as w:
        assert w.get(B, b"a") == b"1"  # a later write sees the earlier one
        w.put(B, b"b", b"2")
    with backend.read() as tx:
        assert tx.get(B, b"a") == b"1" and tx.get(B, b"b") == b"2"
        assert [k for k, _ in tx.range(B, b"", None)] == [b"a", b"b"]
        assert [k for k, _ in tx.range(B, b"", None, reverse=True)] == [b"b", b"a"]
        assert tx.consistent_index() == (7, 2)
    assert backend.pending_writes == 3 and backend.pending_bytes == 4  # index: a write, no bytes
    assert backend.pending_age() >= 0.0
    assert _other_thread_get(backend, b"a") is None
    backend.flush()
    assert backend.pending_writes == 0 and backend.pending_age() == 0.0
    assert _other_thread_get(backend, b"a") == b"1"
    assert backend.consistent_index() == (7, 2)


def test_a_failed_deferred_write_is_dropped_alone(backend: Backend) -> None:
    with backend.write(defer=True) as w:
        w.put(B, b"kept", b"1")
    with pytest.raises(RuntimeError), backend.write(defer=True) as w:
        w.put(B, b"lost", b"2")
        w.delete(B, b"kept")
        raise RuntimeError("apply failed")
    with backend.read() as tx:
        assert tx.get(B, b"kept") == b"1" and tx.get(B, b"lost") is None
    backend.flush()
    assert _other_thread_get(backend, b"kept") == b"1"
    assert _other_thread_get(backend, b"lost") is None


def test_a_failed_first_write_gives_the_writer_lock_back(backend: Backend) -> None:
    with pytest.raises(RuntimeError), backend.write(defer=True) as w:
        w.put(B, b"x", b"1")
        raise RuntimeError("boom")

    def write_elsewhere() -> None:
        with backend.write() as w:
            w.put(B, b"y", b"2")

    _in_thread(write_elsewhere)  # would hang if the pending txn still held the lock
    assert _other_thread_get(backend, b"y") == b"2"


def test_a_plain_write_on_the_owner_flushes_everything(backend: Backend) -> None:
    with backend.write(defer=True) as w:
        w.put(B, b"a", b"1")
    with backend.write() as w:
        w.put(B, b"b", b"2")
    assert backend.pending_writes == 0
    assert _other_thread_get(backend, b"a") == b"1"
    assert _other_thread_get(backend, b"b") == b"2"


def test_another_threads_write_waits_for_the_flush(backend: Backend) -> None:
    with backend.write(defer=True) as w:
        w.put(B, b"a", b"1")
    done = threading.Event()

    def write_elsewhere() -> None:
        with backend.write() as w:
            assert w.get(B, b"a") == b"1"  # it starts after the flush, so it sees it
            w.put(B, b"b", b"2")
        done.set()

    t = threading.Thread(target=write_elsewhere)
    t.start()
    assert not done.wait(0.3)
    backend.flush()
    assert done.wait(10)
    t.join(10)
    with backend.read() as tx:
        assert tx.get(B, b"b") == b"2"


def test_misuse_is_an_error_not_a_hang(backend: Backend) -> None:
    with backend.write(defer=True) as w:
        w.put(B, b"a", b"1")
        with pytest.raises(BackendError):
            backend.write(defer=True)  # nested write on the same thread
        with pytest.raises(BackendError):
            backend.flush()  # flush with the write still open
    view = backend.read()
    backend.flush()
    with pytest.raises(BackendError):
        view.get(B, b"a")  # a view of the pending txn does not outlive the flush
    with backend.write(defer=True) as w:
        w.put(B, b"c", b"3")
    with pytest.raises(BackendError):
        _in_thread(backend.close)  # another thread cannot commit this thread's txn
    backend.flush()


def test_sync_copy_and_close_flush_first(tmp_path: Path) -> None:
    backend = Backend(str(tmp_path / "db"), buckets=[B], sync=False)
    with backend.write(defer=True) as w:
        w.put(B, b"a", b"1")
    backend.sync()
    assert backend.pending_writes == 0
    with backend.write(defer=True) as w:
        w.put(B, b"b", b"2")
    backend.copy_to(str(tmp_path / "copy"))
    copy = Backend(str(tmp_path / "copy"), buckets=[B], sync=False)
    try:
        with copy.read() as tx:
            assert tx.get(B, b"b") == b"2"
    finally:
        copy.close()
    with backend.write(defer=True) as w:
        w.put(B, b"c", b"3")
    backend.close()
    again = Backend(backend.path, buckets=[B], sync=False)
    try:
        with again.read() as tx:
            assert tx.get(B, b"c") == b"3"
    finally:
        again.close()


def test_defragment_keeps_flushed_and_pending_writes(backend: Backend) -> None:
    with backend.write() as w:
        for i in range(200):
            w.put(B, b"k%03d" % i, b"v" * 100)
    with backend.write(defer=True) as w:
        w.put(B, b"pending", b"p")
    backend.defragment()
    assert _other_thread_get(backend, b"pending") == b"p"
    assert _other_thread_get(backend, b"k199") == b"v" * 100


_CRASH = textwrap.dedent(
    """
    import os, signal, sys
    from keelson.backend import Backend
    b = Backend(sys.argv[1], buckets=[b"kv"], sync=True)
    with b.write(defer=True) as w:
        w.put(b"kv", b"flushed", b"1")
        w.set_consistent_index(10, 1)
    b.flush()
    with b.write(defer=True) as w:
        w.put(b"kv", b"pending", b"2")
        w.set_consistent_index(11, 1)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_crash_loses_the_pending_transaction_and_its_index_together(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH, path], timeout=60, capture_output=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    b = Backend(path, buckets=[B])
    try:
        with b.read() as tx:
            assert tx.get(B, b"flushed") == b"1"
            assert tx.get(B, b"pending") is None
        assert b.consistent_index() == (10, 1)  # the server re-applies entry 11 from its WAL
    finally:
        b.close()


def test_size_follows_commits_not_pending_writes(backend: Backend) -> None:
    before = backend.size()
    with backend.write(defer=True) as w:
        for i in range(2000):
            w.put(B, b"k%05d" % i, b"v" * 1000)
    assert backend.size() == before  # pending: the file has not grown yet
    backend.flush()
    assert backend.size() > before
    assert backend.size() == os.path.getsize(os.path.join(backend.path, "data.mdb"))
