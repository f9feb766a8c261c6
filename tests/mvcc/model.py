"""A small in-memory model of etcd 3.4's key-space semantics, for the stateful test.

Theory of operation. The model keeps one immutable snapshot of the whole key space per
revision (a dict key -> KeyValue), which is slow but obviously right: a range at revision r
reads snapshot r; a write transaction copies the newest snapshot, changes the copy and
appends it as the next revision if it changed anything. Compaction only moves the compact
revision (reads below it fail); the model never forgets anything. Requests and responses are
keelson.mvcc's own value types, so a test compares them with ``==``. Nested txns are not
modelled (the stateful test does not generate them).
"""

from __future__ import annotations

from keelson.mvcc import (
    CompactedError,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    DuplicateKeyError,
    Event,
    EventType,
    FutureRevisionError,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)
from keelson.mvcc.requests import ResponseOp

Snapshot = dict[bytes, KeyValue]


def in_range(key: bytes, begin: bytes, end: bytes) -> bool:
    """etcd's range_end convention: b"" single key, b"\\0" every key >= begin."""
    if end == b"":
        return key == begin
    if end == b"\0":
        return key >= begin
    return begin <= key < end


_SORT_ATTR = {
    SortTarget.KEY: "key",
    SortTarget.VERSION: "version",
    SortTarget.CREATE: "create_revision",
    SortTarget.MOD: "mod_revision",
    SortTarget.VALUE: "value",
}


class Model:
    def __init__(self) -> None:
        # revision 0 does not exist and revision 1 is the empty store, as in etcd
        self.snapshots: list[Snapshot] = [{}, {}]
        self.events: list[list[Event]] = [[], []]  # the changes of each revision, in op order
        self.compact_rev = 0

    @property
    def current(self) -> int:
        return len(self.snapshots) - 1

    # -- reads -------------------------------------------------------------------------

    def _range_in(self, snap: Snapshot, cur: int, req: RangeRequest) -> RangeResponse:
        keys = sorted(k for k in snap if in_range(k, req.key, req.range_end))
        count = len(keys)
        if req.count_only:
            return RangeResponse(revision=cur, count=count)
        filtered = (
            req.sort_order != SortOrder.NONE
            or req.min_mod_revision
            or req.max_mod_revision
            or req.min_create_revision
            or req.max_create_revision
        )
        if req.limit > 0 and not filtered:
            keys = keys[: req.limit + 1]  # etcd fetches limit+1 before sorting
        kvs = [snap[k] for k in keys]
        if req.max_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision <= req.max_mod_revision]
        if req.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision >= req.min_mod_revision]
        if req.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= req.max_create_revision]
        if req.min_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision >= req.min_create_revision]
        order = req.sort_order
        if order == SortOrder.NONE and req.sort_target != SortTarget.KEY:
            order = SortOrder.ASCEND
        if order != SortOrder.NONE:
            attr = _SORT_ATTR[req.sort_target]
            kvs.sort(key=lambda kv: getattr(kv, attr), reverse=order == SortOrder.DESCEND)
        more = False
        if req.limit > 0 and len(kvs) > req.limit:
            kvs, more = kvs[: req.limit], True
        if req.keys_only:
            kvs = [
                KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease)
                for kv in kvs
            ]
        return RangeResponse(revision=cur, kvs=tuple(kvs), more=more, count=count)

    def range(self, req: RangeRequest) -> RangeResponse:
        rev = req.revision
        if rev > self.current:
            raise FutureRevisionError()
        if rev <= 0:
            rev = self.current
        if rev < self.compact_rev:
            raise CompactedError()
        return self._range_in(self.snapshots[rev], self.current, req)

    # -- writes ------------------------------------------------------------------------

    def put(self, req: PutRequest) -> PutResponse:
        w = _Write(self)
        resp = w.put(req)
        w.commit()
        return resp

    def delete_range(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        w = _Write(self)
        resp = w.delete(req)
        w.commit()
        return resp

    def txn(self, req: TxnRequest) -> TxnResponse:
        _check_duplicates(req.success)
        _check_duplicates(req.failure)
        snap = self.snapshots[-1]
        ok = all(_compare(snap, c) for c in req.compare)
        ops = req.success if ok else req.failure
        for op in ops:
            if isinstance(op, RangeRequest) and op.revision != 0:
                if op.revision > self.current:
                    raise FutureRevisionError()
                if op.revision < self.compact_rev:
                    raise CompactedError()
        w = _Write(self)
        out: list[ResponseOp] = []
        for op in ops:
            if isinstance(op, PutRequest):
                out.append(w.put(op))
            elif isinstance(op, DeleteRangeRequest):
                out.append(w.delete(op))
            elif isinstance(op, RangeRequest):
                out.append(w.range(op))
            else:
                raise NotImplementedError("nested txns are not modelled")
        w.commit()
        return TxnResponse(revision=w.rev(), succeeded=ok, responses=tuple(out))

    def compact(self, rev: int) -> None:
        if rev <= self.compact_rev:
            raise CompactedError()
        if rev > self.current:
            raise FutureRevisionError()
        self.compact_rev = rev


class _Write:
    """One write transaction of the model: all changes share revision current + 1."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.begin = model.current
        self.snap = dict(model.snapshots[-1])
        self.changed = False
        self.events: list[Event] = []

    def rev(self) -> int:
        return self.begin + 1 if self.changed else self.begin

    def put(self, req: PutRequest) -> PutResponse:
        rev = self.begin + 1
        prev = self.snap.get(req.key)
        if prev is None:
            kv = KeyValue(req.key, rev, rev, 1, req.value, req.lease)
        else:
            kv = KeyValue(req.key, prev.create_revision, rev, prev.version + 1, req.value,
                          req.lease)
        self.snap[req.key] = kv
        self.changed = True
        self.events.append(Event(EventType.PUT, kv))
        return PutResponse(revision=rev, prev_kv=prev if req.prev_kv else None)

    def delete(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        keys = sorted(k for k in self.snap if in_range(k, req.key, req.range_end))
        prev = tuple(self.snap[k] for k in keys)
        for k in keys:
            del self.snap[k]
            self.events.append(Event(EventType.DELETE, KeyValue(k, mod_revision=self.begin + 1)))
        if keys:
            self.changed = True
        return DeleteRangeResponse(
            revision=self.rev(), deleted=len(keys), prev_kvs=prev if req.prev_kv else ()
        )

    def range(self, req: RangeRequest) -> RangeResponse:
        rev = req.revision
        cur = self.rev()
        if rev <= 0 or rev == cur:
            return self.model._range_in(self.snap, cur, req)
        if rev > cur:
            raise AssertionError("checked before the txn started")
        return self.model._range_in(self.model.snapshots[rev], cur, req)

    def commit(self) -> None:
        if self.changed:
            self.model.snapshots.append(self.snap)
            self.model.events.append(self.events)


def _compare(snap: Snapshot, c: Compare) -> bool:
    kv = snap.get(c.key)
    if kv is None:
        if c.target == CompareTarget.VALUE:
            return False
        kv = KeyValue(c.key)
    a: int | bytes
    b: int | bytes
    if c.target == CompareTarget.VALUE:
        a, b = kv.value, c.value
    elif c.target == CompareTarget.VERSION:
        a, b = kv.version, c.number
    elif c.target == CompareTarget.CREATE:
        a, b = kv.create_revision, c.number
    elif c.target == CompareTarget.MOD:
        a, b = kv.mod_revision, c.number
    else:
        a, b = kv.lease, c.number
    if c.result == CompareResult.EQUAL:
        return a == b
    if c.result == CompareResult.NOT_EQUAL:
        return a != b
    if c.result == CompareResult.GREATER:
        return a > b  # type: ignore[operator]
    return a < b  # type: ignore[operator]


def _check_duplicates(ops: tuple[object, ...]) -> None:
    """etcd 3.4: a branch may write a key once; a put inside a deleted interval is a
    duplicate too (a delete's end of b"\\0" is taken literally: an empty interval)."""
    dels: list[tuple[bytes, bytes]] = []
    for op in ops:
        if isinstance(op, DeleteRangeRequest):
            dels.append((op.key, op.range_end or op.key + b"\0"))
    puts: set[bytes] = set()
    for op in ops:
        if isinstance(op, PutRequest):
            if op.key in puts or any(b <= op.key < e for b, e in dels):
                raise DuplicateKeyError()
            puts.add(op.key)
