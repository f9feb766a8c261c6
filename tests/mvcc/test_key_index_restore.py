"""TreeIndex restore: keys fed in revision order (any key order) end up sorted, and the
index behaves like one built by puts (the restore path sorts once instead of inserting)."""

from __future__ import annotations

import random
import time

from keelson.mvcc.key_index import TreeIndex
from keelson.mvcc.revision import Revision


def test_restore_in_random_key_order_sorts_and_mixes_with_puts() -> None:
    rng = random.Random(5)
    keys = [f"k{i:06d}".encode() for i in range(2000)]
    rng.shuffle(keys)
    idx = TreeIndex()
    for main, key in enumerate(keys, start=1):
        idx.restore_put(key, Revision(main, 0), main, 1, 0)
    idx.restore_tombstone(keys[0], Revision(len(keys) + 1, 0))
    assert [ki.key for ki in idx.keys_in(b"", b"")] == sorted(keys)
    idx.check()
    # a put after the restore lands in key order, and ranges see it
    idx.put(b"k000500x", Revision(len(keys) + 2, 0), 0)
    got = [ki.key for ki in idx.keys_in(b"k000500", b"k000502")]
    assert got == [b"k000500", b"k000500x", b"k000501"]
    assert idx.count(b"", b"", len(keys) + 2) == len(keys)  # one tombstoned, one added
    idx.check()


def test_restore_of_many_keys_is_not_quadratic() -> None:
    # 200,000 keys in reverse order: an insert per key moved ~2*10^10 pointers (minutes);
    # one sort takes well under a second. The bound is loose for a loaded machine.
    idx = TreeIndex()
    n = 200_000
    t0 = time.monotonic()
    for main in range(1, n + 1):
        idx.restore_put((n - main).to_bytes(8, "big"), Revision(main, 0), main, 1, 0)
    assert next(iter(idx.keys_in(b"", b""))).key == (0).to_bytes(8, "big")
    assert time.monotonic() - t0 < 60
    assert len(idx) == n
