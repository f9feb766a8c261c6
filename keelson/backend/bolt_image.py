"""Writing buckets out as a bbolt database file, the format etcd's snapshots are in.

Theory of operation. ``etcdctl snapshot status`` and ``snapshot restore`` open the file a
``Snapshot`` RPC streamed with bbolt (etcd's storage engine), so a member whose backend is
LMDB must hand out its buckets in bbolt's on-disk format. :func:`write_bolt_image` writes one
consistent view of the buckets (the caller holds the read transaction) as a fresh, compact
bbolt file: two meta pages (0 and 1), an empty freelist (page 2), then every bucket's B+tree
written bottom-up, leaves in key order then the branch levels above them, and last the root
bucket's tree naming each bucket. Pages are allocated in file order with no gaps, so every
page below the high-water mark is reachable exactly once, which is what ``tx.Check()``
(run by ``snapshot status``) verifies.

The format (bbolt 1.3, little-endian as on every platform etcd ships for): a page starts with
``id u64, flags u16, count u16, overflow u32``; a page holding more than one page size of
data spans ``1 + overflow`` consecutive pages. Leaf elements are ``flags, pos, ksize, vsize``
(u32 each), branch elements ``pos, ksize u32, child pgid u64``; ``pos`` is the distance from
the element to its key, the value follows the key. A bucket is a leaf element with flag 1
whose value is ``root pgid u64, sequence u64``. The meta page holds ``magic, version,
page size, flags, root bucket, freelist pgid, high-water pgid, txid`` and an FNV-1a 64
checksum of those fields.

Invariants: keys within a bucket are written in strictly increasing byte order (the input
must be sorted, as LMDB and bbolt both sort bytewise); a branch element's key is the first
key of its child. Pure: no locks, no I/O but the file object it is given.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import BinaryIO

PAGE_SIZE = 4096
MAGIC = 0xED0CDAED
VERSION = 2

_BRANCH_PAGE, _LEAF_PAGE, _META_PAGE, _FREELIST_PAGE = 0x01, 0x02, 0x04, 0x10
_BUCKET_LEAF_FLAG = 0x01

_PAGE_HEADER = struct.Struct("<QHHI")
_META_FIELDS = struct.Struct("<IIIIQQQQQ")
_LEAF_ELEMENT = struct.Struct("<IIII")
_BRANCH_ELEMENT = struct.Struct("<IIQ")
_BUCKET_HEADER = struct.Struct("<QQ")
_MAX_ELEMENTS = 0xFFFF  # a page's element count is a u16


def fnv64a(data: bytes) -> int:
    """FNV-1a, 64 bits: bbolt's meta page checksum."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class _PageWriter:
    """Allocates page ids in file order and writes each page (padded) at its offset."""

    def __init__(self, out: BinaryIO, page_size: int) -> None:
        self.out = out
        self.page_size = page_size
        self.next_id = 3  # 0 and 1: meta, 2: freelist

    def write(self, flags: int, count: int, body: bytes, page_id: int | None = None) -> int:
        pid = self.next_id if page_id is None else page_id
        size = _PAGE_HEADER.size + len(body)
        pages = max(1, -(-size // self.page_size))
        self.out.seek(pid * self.page_size)
        self.out.write(_PAGE_HEADER.pack(pid, flags, count, pages - 1))
        self.out.write(body)
        self.out.write(b"\0" * (pages * self.page_size - size))
        if page_id is None:
            self.next_id += pages
        return pid

    def leaf(self, items: list[tuple[bytes, bytes, int]]) -> int:
        heads, data = [], bytearray()
        base = _LEAF_ELEMENT.size * len(items)
        for i, (key, value, flags) in enumerate(items):
            pos = base + len(data) - i * _LEAF_ELEMENT.size
            heads.append(_LEAF_ELEMENT.pack(flags, pos, len(key), len(value)))
            data += key
            data += value
        return self.write(_LEAF_PAGE, len(items), b"".join(heads) + bytes(data))

    def branch(self, children: list[tuple[bytes, int]]) -> int:
        heads, data = [], bytearray()
        base = _BRANCH_ELEMENT.size * len(children)
        for i, (key, child) in enumerate(children):
            pos = base + len(data) - i * _BRANCH_ELEMENT.size
            heads.append(_BRANCH_ELEMENT.pack(pos, len(key), child))
            data += key
        return self.write(_BRANCH_PAGE, len(children), b"".join(heads) + bytes(data))

    def tree(self, items: Iterable[tuple[bytes, bytes, int]]) -> int:
        """Write one bucket's B+tree from its sorted items; return the root page id."""
        room = self.page_size - _PAGE_HEADER.size
        level: list[tuple[bytes, int]] = []
        page: list[tuple[bytes, bytes, int]] = []
        used = 0
        previous: bytes | None = None
        for key, value, flags in items:
            if previous is not None and key <= previous:
                raise ValueError(f"keys out of order: {previous!r} then {key!r}")
            previous = key
            cost = _LEAF_ELEMENT.size + len(key) + len(value)
            if page and (used + cost > room or len(page) == _MAX_ELEMENTS):
                level.append((page[0][0], self.leaf(page)))
                page, used = [], 0
            page.append((key, value, flags))
            used += cost
        if page or not level:
            level.append((page[0][0] if page else b"", self.leaf(page)))
        while len(level) > 1:
            upper: list[tuple[bytes, int]] = []
            group: list[tuple[bytes, int]] = []
            used = 0
            for key, child in level:
                cost = _BRANCH_ELEMENT.size + len(key)
                if group and (used + cost > room or len(group) == _MAX_ELEMENTS):
                    upper.append((group[0][0], self.branch(group)))
                    group, used = [], 0
                group.append((key, child))
                used += cost
            upper.append((group[0][0], self.branch(group)))
            level = upper
        return level[0][1]


def write_bolt_image(
    buckets: Iterable[tuple[bytes, Iterable[tuple[bytes, bytes]]]],
    out: BinaryIO,
    page_size: int = PAGE_SIZE,
) -> int:
    """Write ``buckets`` (name, sorted (key, value) pairs), in any bucket order, to ``out``
    (a seekable binary file, empty) as a bbolt database; return its size in bytes."""
    pages = _PageWriter(out, page_size)
    roots: list[tuple[bytes, int]] = []
    for name, items in buckets:
        roots.append((name, pages.tree((k, v, 0) for k, v in items)))
    roots.sort()
    root = pages.tree(
        (name, _BUCKET_HEADER.pack(pid, 0), _BUCKET_LEAF_FLAG) for name, pid in roots
    )
    high_water = pages.next_id
    pages.write(_FREELIST_PAGE, 0, b"", page_id=2)
    for meta_id in (0, 1):
        fields = _META_FIELDS.pack(MAGIC, VERSION, page_size, 0, root, 0, 2, high_water, 1)
        body = fields + struct.pack("<Q", fnv64a(fields))
        pages.write(_META_PAGE, 0, body, page_id=meta_id)
    out.seek(high_water * page_size)
    out.truncate()
    return high_water * page_size
