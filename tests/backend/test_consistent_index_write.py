"""The consistent index is written once per write txn, yet every reader sees each call.

``WriteTxn.set_consistent_index`` keeps the value and writes it into LMDB before the
commit or before anything could read it back. What must hold: the same bytes in LMDB as
writing on every call, every read (through the txn, through a pending view, by key)
returns the latest value, an explicit put of the key keeps its order against the calls,
and an aborted txn leaves nothing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from keelson.backend import META_BUCKET, Backend

B = b"kv"
CI_KEY = b"consistent_index"


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    b = Backend(str(tmp_path / "db"), map_size=64 * 1024 * 1024, buckets=[B], sync=False)
    yield b
    b.close()


def _meta(b: Backend) -> dict[bytes, bytes]:
    with b.read() as tx:
        return dict(tx.range(META_BUCKET, b"", None))


@pytest.mark.parametrize("defer", [True, False])
def test_last_value_is_stored_with_the_commit(backend: Backend, defer: bool) -> None:
    with backend.write(defer=defer) as w:
        for i in range(1, 17):
            w.put(B, b"k%d" % i, b"v")
            w.set_consistent_index(i, 3)
    assert backend.pending_writes == (32 if defer else 0)  # each call still counts
    backend.flush()
    assert _meta(backend) == {CI_KEY: struct.pack(">QQ", 16, 3)}
    assert backend.consistent_index() == (16, 3)


def test_reads_inside_the_txn_see_every_call(backend: Backend) -> None:
    with backend.write(defer=True) as w:
        w.set_consistent_index(5, 1)
        assert w.consistent_index() == (5, 1)
        w.set_consistent_index(6, 1)
        assert w.get(META_BUCKET, CI_KEY) == struct.pack(">QQ", 6, 1)
        w.set_consistent_index(7, 2)
        with backend.read() as view:  # a view of the pending txn, while the write is open
            assert view.consistent_index() == (7, 2)
        w.set_consistent_index(8, 2)
        assert dict(w.range(META_BUCKET, b"", None)) == {CI_KEY: struct.pack(">QQ", 8, 2)}
        w.set_consistent_index(9, 2)
    with backend.read() as view:
        assert view.consistent_index() == (9, 2)
    backend.flush()
    assert backend.consistent_index() == (9, 2)


def test_an_explicit_put_of_the_key_keeps_its_order(backend: Backend) -> None:
    with backend.write() as w:
        w.set_consistent_index(4, 1)
        w.put(META_BUCKET, CI_KEY, struct.pack(">QQ", 40, 1))  # after the call: it wins
    assert backend.consistent_index() == (40, 1)
    with backend.write() as w:
        w.put(META_BUCKET, CI_KEY, struct.pack(">QQ", 50, 1))
        w.set_consistent_index(41, 1)  # after the put: the call wins
    assert backend.consistent_index() == (41, 1)


def test_an_aborted_txn_leaves_the_index_alone(backend: Backend) -> None:
    with backend.write(defer=True) as w:
        w.set_consistent_index(3, 1)
    with pytest.raises(RuntimeError), backend.write(defer=True) as w:
        w.set_consistent_index(4, 1)
        raise RuntimeError("abort")
    assert backend.consistent_index() == (3, 1)
    backend.flush()
    assert backend.consistent_index() == (3, 1)
    with pytest.raises(RuntimeError), backend.write() as w:
        w.set_consistent_index(5, 1)
        raise RuntimeError("abort")
    assert backend.consistent_index() == (3, 1)
