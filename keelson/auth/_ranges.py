"""Key-range permissions as etcd 3.4 interprets them: intervals, points, coverage.

Theory of operation. etcd turns every permission and every request into an interval of
"bytes-affine" keys, where the empty byte string stands for +infinity (``adt``'s
``BytesAffineComparable``) and otherwise keys compare as bytes:

- a permission or request on a single key ``k`` (``range_end == b""``) is the *point*
  ``[k, k + b"\\x00")``, the smallest interval holding ``k`` and nothing else;
- ``range_end == b"\\x00"`` (from-key, or the prefix of the empty key) is ``[k, +inf)``;
- any other ``range_end`` gives ``[k, range_end)``; a prefix ``p`` arrives as
  ``[p, prefix_end(p))`` because clients compute the end.

A request on a single key is allowed when some permission interval *intersects* its point;
a request on a range when the union of the permission intervals that intersect it is
contiguous and *covers* it (``IntervalTree.Contains``). "Intersects" is etcd's
``Interval.Compare(...) == 0``, reproduced here so that degenerate inputs (an empty key, which
is +inf; ``range_end <= key``) answer exactly as etcd does: an empty-key permission grants
nothing, and an inverted request is allowed iff some permission overlaps it that way.

Invariant: :class:`KeyPermissions` holds its intervals sorted by begin (affine order), the
order etcd's interval tree visits them in; it is immutable and built once per user and
auth revision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from keelson.proto.authpb import auth_pb2

Interval = tuple[bytes, bytes]
"""(begin, end) in affine order: ``b""`` is +infinity; the end is exclusive."""

READ = auth_pb2.Permission.READ
WRITE = auth_pb2.Permission.WRITE
READWRITE = auth_pb2.Permission.READWRITE


def affine_compare(a: bytes, b: bytes) -> int:
    """-1, 0 or 1 as ``a`` sorts before, with or after ``b``; ``b""`` is +infinity."""
    if not a:
        return 0 if not b else 1
    if not b:
        return -1
    return (a > b) - (a < b)


def _affine_key(b: bytes) -> tuple[bool, bytes]:
    return (not b, b)


def point(key: bytes) -> Interval:
    """The interval holding exactly ``key``."""
    return (key, key + b"\x00")


def permission_interval(key: bytes, range_end: bytes) -> Interval:
    """The interval a permission (or a request) on ``key``/``range_end`` denotes."""
    if not range_end:
        return point(key)
    if range_end == b"\x00":
        return (key, b"")
    return (key, range_end)


def intersects(a: Interval, b: Interval) -> bool:
    """etcd's ``a.Compare(b) == 0``: neither left of ``b`` nor right of it."""
    left = affine_compare(a[0], b[0]) < 0 and affine_compare(a[1], b[0]) <= 0
    right = affine_compare(a[0], b[1]) >= 0
    return not left and not right


@dataclass(frozen=True, slots=True)
class KeyPermissions:
    """The merged READ and WRITE intervals of one user (etcd's unifiedRangePermissions)."""

    read: tuple[Interval, ...]
    write: tuple[Interval, ...]

    @classmethod
    def merge(cls, permissions: Iterable[auth_pb2.Permission]) -> KeyPermissions:
        """Merge the permissions of all of a user's roles; READWRITE counts as both."""
        read: list[Interval] = []
        write: list[Interval] = []
        for perm in permissions:
            ivl = permission_interval(perm.key, perm.range_end)
            if perm.permType in (READ, READWRITE):
                read.append(ivl)
            if perm.permType in (WRITE, READWRITE):
                write.append(ivl)
        # Stable sort by affine begin: the in-order walk of etcd's interval tree.
        read.sort(key=lambda ivl: _affine_key(ivl[0]))
        write.sort(key=lambda ivl: _affine_key(ivl[0]))
        return cls(tuple(read), tuple(write))

    def permits(self, key: bytes, range_end: bytes, *, write: bool) -> bool:
        """Whether a request on ``key``/``range_end`` is allowed for this user (read
        permissions unless ``write``)."""
        intervals = self.write if write else self.read
        if not range_end:
            pt = point(key)
            return any(intersects(pt, ivl) for ivl in intervals)
        return covers(intervals, permission_interval(key, range_end))


def covers(intervals: Iterable[Interval], request: Interval) -> bool:
    """etcd's ``IntervalTree.Contains``: the intervals intersecting ``request``, taken in
    begin order, are contiguous and reach from at or before its begin to at or after its
    end. ``intervals`` must be sorted by affine begin."""
    min_begin: bytes | None = None
    max_end = b""
    for ivl in intervals:
        if not intersects(request, ivl):
            continue
        if min_begin is None:
            min_begin, max_end = ivl
            continue
        if affine_compare(max_end, ivl[0]) < 0:
            return False  # a gap between what is covered so far and this interval
        if affine_compare(ivl[1], max_end) > 0:
            max_end = ivl[1]
    if min_begin is None:
        return False
    return affine_compare(max_end, request[1]) >= 0 and affine_compare(min_begin, request[0]) <= 0
