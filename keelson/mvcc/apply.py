"""etcd's request semantics on top of mvcc transactions (etcd's applierV3backend).

Theory of operation. ``txn.py`` knows revisions; this module knows requests: a range's
sorting, limits, ``more``, ``count`` and revision filters; a put's ``prev_kv``,
``ignore_value`` and ``ignore_lease``; a delete's ``prev_kvs``; and a txn's compares, branch
choice, nested txns and the rule that one txn writes a key at most once. Every check that can
fail is made before the first write, so a request either applies entirely or raises an
``MvccError`` having changed nothing.

etcd details kept on purpose: a range sorts and filters after reading every key, and applies
``limit`` after sorting; ``count`` is the number of keys in the range before the revision
filters; with ``SortOrder.NONE`` a target other than KEY sorts ascending; compares of every
nested txn on the taken path are evaluated against the state before the txn's first write;
duplicate detection treats a delete's ``range_end`` as a literal interval end (so a
``b"\\0"`` end is an empty interval there, as in etcd 3.4).
"""

from __future__ import annotations

from keelson.mvcc.errors import (
    DuplicateKeyError,
    EmptyKeyError,
    KeyNotFoundError,
    LeaseNotFoundError,
    LeaseProvidedError,
    ValueProvidedError,
)
from keelson.mvcc.keyvalue import KeyValue
from keelson.mvcc.requests import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseOp,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
    index_range_end,
)
from keelson.mvcc.txn import Lessor, TxnRead, TxnWrite

# -- validation that needs no state -------------------------------------------------------


def check_put_request(req: PutRequest) -> None:
    """etcd's checkPutRequest: empty key, value/lease given with ignore_* ."""
    if not req.key:
        raise EmptyKeyError()
    if req.ignore_value and req.value:
        raise ValueProvidedError()
    if req.ignore_lease and req.lease != 0:
        raise LeaseProvidedError()


def check_range_request(req: RangeRequest) -> None:
    if not req.key:
        raise EmptyKeyError()


def check_delete_request(req: DeleteRangeRequest) -> None:
    if not req.key:
        raise EmptyKeyError()


def check_txn_request(req: TxnRequest) -> None:
    """Validate every op of every branch (recursively) and the one-write-per-key rule."""
    for c in req.compare:
        if not c.key:
            raise EmptyKeyError()
    for ops in (req.success, req.failure):
        for op in ops:
            if isinstance(op, PutRequest):
                check_put_request(op)
            elif isinstance(op, RangeRequest):
                check_range_request(op)
            elif isinstance(op, DeleteRangeRequest):
                check_delete_request(op)
            else:
                check_txn_request(op)
    _check_intervals(req.success)
    _check_intervals(req.failure)


class _Intervals:
    """A set of [begin, end) byte intervals with etcd's affine comparison: an empty end is
    +infinity. Enough for duplicate detection; O(n) per query."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[tuple[bytes, bytes]] = []

    def add(self, begin: bytes, end: bytes) -> None:
        self.items.append((begin, end))

    def contains_point(self, key: bytes) -> bool:
        for begin, end in self.items:
            # point [key, key+"\0") intersects [begin, end)
            if begin <= key and (end == b"" or key < end):
                return True
        return False


def _check_intervals(ops: tuple[RequestOp, ...]) -> tuple[set[bytes], _Intervals]:
    dels = _Intervals()
    for op in ops:
        if isinstance(op, DeleteRangeRequest):
            if op.range_end:
                dels.add(op.key, op.range_end if op.range_end else b"")
            else:
                dels.add(op.key, op.key + b"\0")
    puts: set[bytes] = set()
    for op in ops:
        if not isinstance(op, TxnRequest):
            continue
        puts_then, dels_then = _check_intervals(op.success)
        puts_else, dels_else = _check_intervals(op.failure)
        for k in sorted(puts_then):
            if k in puts or dels.contains_point(k):
                raise DuplicateKeyError()
            puts.add(k)
        for k in sorted(puts_else):
            if k in puts and k not in puts_then:
                raise DuplicateKeyError()
            if dels.contains_point(k):
                raise DuplicateKeyError()
            puts.add(k)
        dels.items.extend(dels_then.items)
        dels.items.extend(dels_else.items)
    for op in ops:
        if isinstance(op, PutRequest):
            if op.key in puts or dels.contains_point(op.key):
                raise DuplicateKeyError()
            puts.add(op.key)
    return puts, dels


# -- range ----------------------------------------------------------------------------------


def _sort_key(target: SortTarget) -> tuple[str, bool]:
    return {
        SortTarget.KEY: ("key", False),
        SortTarget.VERSION: ("version", True),
        SortTarget.CREATE: ("create_revision", True),
        SortTarget.MOD: ("mod_revision", True),
        SortTarget.VALUE: ("value", False),
    }[target]


def apply_range(view: TxnRead, req: RangeRequest) -> RangeResponse:
    """Serve a RangeRequest from ``view`` (a read view or a write txn)."""
    check_range_request(req)
    limit = req.limit
    if (
        req.sort_order != SortOrder.NONE
        or req.min_mod_revision
        or req.max_mod_revision
        or req.min_create_revision
        or req.max_create_revision
    ):
        limit = 0  # fetch everything, sort and truncate afterwards
    if limit > 0:
        limit += 1  # one more, to know whether there is more
    raw = view.range_keys(
        req.key,
        index_range_end(req.range_end),
        rev=req.revision,
        limit=limit,
        count_only=req.count_only,
    )
    kvs = list(raw.kvs)
    if req.max_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision <= req.max_mod_revision]
    if req.min_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision >= req.min_mod_revision]
    if req.max_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision <= req.max_create_revision]
    if req.min_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision >= req.min_create_revision]
    order = req.sort_order
    if req.sort_target != SortTarget.KEY and order == SortOrder.NONE:
        order = SortOrder.ASCEND
    if order != SortOrder.NONE:
        attr, _ = _sort_key(req.sort_target)
        kvs.sort(key=lambda kv: getattr(kv, attr), reverse=order == SortOrder.DESCEND)
    more = False
    if req.limit > 0 and len(kvs) > req.limit:
        kvs = kvs[: req.limit]
        more = True
    if req.keys_only:
        kvs = [
            KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease)
            for kv in kvs
        ]
    return RangeResponse(revision=raw.revision, kvs=tuple(kvs), more=more, count=raw.count)


# -- put / delete ---------------------------------------------------------------------------


def _check_put_state(view: TxnRead, req: PutRequest, lessor: Lessor | None) -> None:
    """etcd's checkRequestPut: what a put needs from the state before it is applied."""
    if req.ignore_value or req.ignore_lease:
        if not view.range_keys(req.key, None).kvs:
            raise KeyNotFoundError()
    if req.lease != 0 and lessor is not None and not lessor.lease_exists(req.lease):
        raise LeaseNotFoundError()


def apply_put(tw: TxnWrite, req: PutRequest) -> PutResponse:
    """Apply a PutRequest in ``tw``; checks first, so an error changes nothing."""
    check_put_request(req)
    if req.ignore_value or req.ignore_lease or req.lease != 0:  # else nothing to check
        _check_put_state(tw, req, tw.lessor)
    return _put(tw, req)


def _put(tw: TxnWrite, req: PutRequest) -> PutResponse:
    value, lease = req.value, req.lease
    prev: KeyValue | None = None
    if req.ignore_value or req.ignore_lease or req.prev_kv:
        got = tw.range_keys(req.key, None).kvs
        prev = got[0] if got else None
    if req.ignore_value or req.ignore_lease:
        if prev is None:
            raise KeyNotFoundError()
        if req.ignore_value:
            value = prev.value
        if req.ignore_lease:
            lease = prev.lease
    rev = tw.put(req.key, value, lease)
    return PutResponse(rev, prev if req.prev_kv else None)


def apply_delete_range(tw: TxnWrite, req: DeleteRangeRequest) -> DeleteRangeResponse:
    check_delete_request(req)
    end = index_range_end(req.range_end)
    prev: tuple[KeyValue, ...] = ()
    if req.prev_kv:
        prev = tw.range_keys(req.key, end).kvs
    deleted, rev = tw.delete_range(req.key, end)
    return DeleteRangeResponse(revision=rev, deleted=deleted, prev_kvs=prev)


# -- txn ------------------------------------------------------------------------------------


def is_txn_read_only(req: TxnRequest) -> bool:
    for ops in (req.success, req.failure):
        for op in ops:
            if isinstance(op, (PutRequest, DeleteRangeRequest)):
                return False
            if isinstance(op, TxnRequest) and not is_txn_read_only(op):
                return False
    return True


def _compare_int(a: int, b: int) -> int:
    return (a > b) - (a < b)


def _compare_kv(c: Compare, kv: KeyValue) -> bool:
    if c.target == CompareTarget.VALUE:
        result = (kv.value > c.value) - (kv.value < c.value)
    elif c.target == CompareTarget.CREATE:
        result = _compare_int(kv.create_revision, c.number)
    elif c.target == CompareTarget.MOD:
        result = _compare_int(kv.mod_revision, c.number)
    elif c.target == CompareTarget.VERSION:
        result = _compare_int(kv.version, c.number)
    else:
        result = _compare_int(kv.lease, c.number)
    if c.result == CompareResult.EQUAL:
        return result == 0
    if c.result == CompareResult.NOT_EQUAL:
        return result != 0
    if c.result == CompareResult.GREATER:
        return result > 0
    return result < 0


def evaluate_compare(view: TxnRead, c: Compare) -> bool:
    """True when every key of the compare's range satisfies it; a missing key compares as
    a KeyValue of zeroes, except that a VALUE compare on no key fails."""
    kvs = view.range_keys(c.key, index_range_end(c.range_end)).kvs
    if not kvs:
        if c.target == CompareTarget.VALUE:
            return False
        return _compare_kv(c, KeyValue(c.key))
    return all(_compare_kv(c, kv) for kv in kvs)


def _compare_path(view: TxnRead, req: TxnRequest) -> list[bool]:
    """Branch taken by the txn and by every nested txn on the taken path, depth first."""
    path: list[bool] = []

    def walk(t: TxnRequest) -> None:
        ok = all(evaluate_compare(view, c) for c in t.compare)
        path.append(ok)
        for op in t.success if ok else t.failure:
            if isinstance(op, TxnRequest):
                walk(op)

    walk(req)
    return path


def _check_path(
    view: TxnRead,
    req: TxnRequest,
    path: list[bool],
    pos: int,
    puts: bool,
    lessor: Lessor | None,
) -> int:
    """etcd's checkRequests over the taken path: the puts' state checks when ``puts``, else
    the ranges' revision checks."""
    ok = path[pos]
    pos += 1
    for op in req.success if ok else req.failure:
        if isinstance(op, TxnRequest):
            pos = _check_path(view, op, path, pos, puts, lessor)
        elif isinstance(op, RangeRequest) and not puts:
            view.check_revision(op.revision)
        elif isinstance(op, PutRequest) and puts:
            _check_put_state(view, op, lessor)
    return pos


def check_txn_state(view: TxnRead, req: TxnRequest, lessor: Lessor | None) -> list[bool]:
    """Evaluate the compares and run every state check of the taken path against ``view``;
    returns the path for ``apply_txn_path``."""
    check_txn_request(req)
    path = _compare_path(view, req)
    if not is_txn_read_only(req):
        _check_path(view, req, path, 0, True, lessor)
    _check_path(view, req, path, 0, False, lessor)
    return path


def apply_txn_path(view: TxnRead, req: TxnRequest, path: list[bool]) -> TxnResponse:
    """Execute the txn along ``path`` (from ``check_txn_state``). ``view`` must be a
    TxnWrite unless the txn is read only."""
    responses, _ = _apply_ops(view, req, path, 0)
    return TxnResponse(revision=view.rev(), succeeded=path[0], responses=responses)


def _apply_ops(
    view: TxnRead, req: TxnRequest, path: list[bool], pos: int
) -> tuple[tuple[ResponseOp, ...], int]:
    ok = path[pos]
    pos += 1
    out: list[ResponseOp] = []
    for op in req.success if ok else req.failure:
        if isinstance(op, RangeRequest):
            out.append(apply_range(view, op))
        elif isinstance(op, TxnRequest):
            sub_ok = path[pos]
            sub, pos = _apply_ops(view, op, path, pos)
            out.append(TxnResponse(revision=view.rev(), succeeded=sub_ok, responses=sub))
        else:
            if not isinstance(view, TxnWrite):
                raise AssertionError("write op in a read-only txn view")
            if isinstance(op, PutRequest):
                out.append(_put(view, op))
            else:
                out.append(apply_delete_range(view, op))
    return tuple(out), pos


__all__ = [
    "apply_delete_range",
    "apply_put",
    "apply_range",
    "apply_txn_path",
    "check_txn_request",
    "check_txn_state",
    "evaluate_compare",
    "is_txn_read_only",
]
