"""The append-workload checker: lists under a few keys, grown only by appends.

Owns the checks of ``txn`` ops (see :class:`~.history.Op`): ``value`` is a tuple of
micro-ops ``("append", k, v)`` / ``("r", k, None)``; for an ``ok`` txn ``result`` repeats
them with every read filled in as the tuple of values of the list under ``k``. Values are
unique per key. ``fail`` txns appended nothing; ``info`` txns may or may not have.

The final read of key ``k`` is the read of ``k`` in the ok read-only txn invoked last, when
that txn was invoked after every completed append to ``k`` completed (the harness issues it
once all faults healed). Without one, lost appends of ``k`` are not checked.

Anomaly kinds, each with the ops that show it:

- ``duplicate-append``: a read list holds a value twice;
- ``garbage-read``: a read list holds a value no txn appended to that key;
- ``aborted-read``: ... a value only a ``fail`` txn appended;
- ``incompatible-order``: two reads of one key where neither is a prefix of the other
  (each read is compared with the longest read of its key);
- ``lost-append``: an ok append missing from the final read of its key;
- ``stale-read``: a read invoked after an ok txn that appended ``v`` completed lacks ``v``;
- ``non-monotonic-read``: a read invoked after another read of the same key completed is
  shorter (with ``incompatible-order`` this covers "lacks a value an earlier read saw");
- ``internal-inconsistency``: inside one txn, a read of ``k`` is not the txn's previous read
  of ``k`` (or, for the first read, any list) followed by the txn's own appends to ``k``
  since.

Reports are capped at ``max_per_kind`` per (kind, key), plus one anomaly saying how many
more were found.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .history import Anomaly, Op

CHECKER = "append"
DEFAULT_MAX_PER_KIND = 5


@dataclass(frozen=True, slots=True)
class _Read:
    op: Op
    key: str
    values: tuple[object, ...]


def _micro(op: Op) -> tuple[tuple[str, str, Any], ...]:
    mops = op.result if op.status == "ok" and op.result is not None else op.value
    return tuple((str(m[0]), str(m[1]), m[2]) for m in mops)


def _is_prefix(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) <= len(b) and b[: len(a)] == a


class _Reporter:
    def __init__(self, max_per_kind: int) -> None:
        self.max = max_per_kind
        self.counts: dict[tuple[str, str], int] = {}
        self.out: list[Anomaly] = []
        self.extra: dict[tuple[str, str], int] = {}

    def add(self, kind: str, key: str, detail: str, ops: tuple[Op, ...]) -> None:
        n = self.counts.get((kind, key), 0)
        self.counts[(kind, key)] = n + 1
        if n < self.max:
            self.out.append(Anomaly(CHECKER, kind, f"key {key!r}: {detail}", ops))
        else:
            self.extra[(kind, key)] = n + 1 - self.max

    def finish(self) -> list[Anomaly]:
        for (kind, key), more in sorted(self.extra.items()):
            self.out.append(
                Anomaly(CHECKER, kind, f"key {key!r}: {more} more {kind} anomalies not shown")
            )
        return self.out


def check_appends(ops: Iterable[Op], max_per_kind: int = DEFAULT_MAX_PER_KIND) -> list[Anomaly]:
    """Check every ``txn`` op of ``ops``; returns the anomalies found (empty when none)."""
    txns = [op for op in ops if op.f == "txn"]
    rep = _Reporter(max_per_kind)

    # who appended what: (key, value) -> appending ops, by status
    appenders: dict[tuple[str, object], list[Op]] = {}
    reads: dict[str, list[_Read]] = {}
    for op in txns:
        for f, k, v in _micro(op):
            if f == "append":
                appenders.setdefault((k, v), []).append(op)
            elif f == "r" and op.status == "ok" and v is not None:
                reads.setdefault(k, []).append(_Read(op, k, tuple(v)))

    _check_internal(txns, rep)
    for key in sorted(reads):
        rs = reads[key]
        _check_values(key, rs, appenders, rep)
        _check_order(key, rs, rep)
        _check_realtime(key, rs, txns, rep)
    _check_lost(txns, reads, rep)
    return rep.finish()


def _check_internal(txns: list[Op], rep: _Reporter) -> None:
    for op in txns:
        if op.status != "ok":
            continue
        known: dict[str, tuple[object, ...]] = {}  # key -> list as this txn last saw it
        pending: dict[str, list[object]] = {}  # own appends to keys not read yet
        for f, k, v in _micro(op):
            if f == "append":
                if k in known:
                    known[k] = known[k] + (v,)
                else:
                    pending.setdefault(k, []).append(v)
            elif f == "r" and v is not None:
                seen: tuple[object, ...] = tuple(v)
                if k in known:
                    if seen != known[k]:
                        rep.add(
                            "internal-inconsistency",
                            k,
                            f"txn read {list(seen)} where its own earlier read and appends "
                            f"give {list(known[k])}",
                            (op,),
                        )
                else:
                    own = tuple(pending.pop(k, []))
                    if own and seen[len(seen) - len(own) :] != own:
                        rep.add(
                            "internal-inconsistency",
                            k,
                            f"txn appended {list(own)} then read {list(seen)}, which does not "
                            "end with them",
                            (op,),
                        )
                known[k] = seen


def _first_duplicate(values: tuple[object, ...]) -> object:
    seen: set[object] = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


def _check_values(
    key: str,
    rs: list[_Read],
    appenders: dict[tuple[str, object], list[Op]],
    rep: _Reporter,
) -> None:
    valid: set[object] = set()  # appended by an ok or info txn
    aborted: dict[object, list[Op]] = {}  # appended by fail txns only
    for (k, v), who in appenders.items():
        if k != key:
            continue
        if any(a.status != "fail" for a in who):
            valid.add(v)
        else:
            aborted[v] = who
    reported: set[object] = set()
    done: set[tuple[object, ...]] = set()
    for r in rs:
        if r.values in done:  # identical reads are common: check each list once
            continue
        done.add(r.values)
        distinct = set(r.values)
        if len(distinct) != len(r.values):
            dup = _first_duplicate(r.values)
            rep.add("duplicate-append", key, f"value {dup!r} twice in {list(r.values)}", (r.op,))
        for v in sorted(distinct - valid - reported, key=r.values.index):
            reported.add(v)
            if v in aborted:
                rep.add(
                    "aborted-read",
                    key,
                    f"read {v!r}, which only a failed txn appended",
                    (r.op, *aborted[v]),
                )
            else:
                rep.add("garbage-read", key, f"read {v!r}, which no txn appended", (r.op,))


def _check_order(key: str, rs: list[_Read], rep: _Reporter) -> None:
    longest = max(rs, key=lambda r: len(r.values))
    seen_bad: set[tuple[object, ...]] = set()
    for r in rs:
        if r.values in seen_bad or _is_prefix(r.values, longest.values):
            continue
        seen_bad.add(r.values)
        rep.add(
            "incompatible-order",
            key,
            f"{list(r.values)} is not a prefix of {list(longest.values)} (nor the reverse)",
            (r.op, longest.op),
        )


def _check_realtime(key: str, rs: list[_Read], txns: list[Op], rep: _Reporter) -> None:
    # stale reads: ok appends completed before the read was invoked must be in it
    ok_appends: list[tuple[int, object, Op]] = []
    for op in txns:
        if op.status == "ok" and op.complete is not None:
            for f, k, v in _micro(op):
                if f == "append" and k == key:
                    ok_appends.append((op.complete, v, op))
    ok_appends.sort(key=lambda t: t[0])
    by_invoke = sorted(rs, key=lambda r: r.op.invoke)
    # fast path: for a read that is a prefix of the longest one, it lacks a required value
    # iff that value's position in the longest read is past its end
    longest = max(rs, key=lambda r: len(r.values)).values
    pos = {v: i for i, v in enumerate(longest)}
    beyond = len(longest)
    j = 0
    required: list[tuple[object, Op]] = []
    max_pos = -1
    for r in by_invoke:
        while j < len(ok_appends) and ok_appends[j][0] < r.op.invoke:
            v = ok_appends[j][1]
            required.append((v, ok_appends[j][2]))
            max_pos = max(max_pos, pos.get(v, beyond))
            j += 1
        if not required:
            continue
        if max_pos < len(r.values) and _is_prefix(r.values, longest):
            continue
        have = set(r.values)
        missing = [(v, w) for v, w in required if v not in have]
        if missing:
            v, w = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            rep.add(
                "stale-read",
                key,
                f"read {list(r.values)} lacks {v!r}{more}, appended by a txn that completed "
                "before the read was invoked",
                (w, r.op),
            )
    # non-monotonic: a read invoked after another completed must not be shorter
    by_complete = sorted(
        (r for r in rs if r.op.complete is not None), key=lambda r: r.op.complete or 0
    )
    j = 0
    best: _Read | None = None
    for r in by_invoke:
        while j < len(by_complete) and (by_complete[j].op.complete or 0) < r.op.invoke:
            c = by_complete[j]
            if best is None or len(c.values) > len(best.values):
                best = c
            j += 1
        if best is not None and len(r.values) < len(best.values):
            rep.add(
                "non-monotonic-read",
                key,
                f"read {list(r.values)} is shorter than {list(best.values)}, read by a txn "
                "that completed before it was invoked",
                (best.op, r.op),
            )


def _check_lost(txns: list[Op], reads: dict[str, list[_Read]], rep: _Reporter) -> None:
    last_append_done: dict[str, int] = {}
    ok_appends: dict[str, list[tuple[object, Op]]] = {}
    for op in txns:
        for f, k, v in _micro(op):
            if f != "append":
                continue
            if op.complete is not None and op.status != "info":
                last_append_done[k] = max(last_append_done.get(k, op.complete), op.complete)
            if op.status == "ok":
                ok_appends.setdefault(k, []).append((v, op))
    for key, appended in sorted(ok_appends.items()):
        finals = [
            r
            for r in reads.get(key, [])
            if all(m[0] == "r" for m in _micro(r.op))
            and r.op.invoke > last_append_done.get(key, -1)
        ]
        if not finals:
            continue
        final = max(finals, key=lambda r: r.op.invoke)
        have = set(final.values)
        for v, op in appended:
            if v not in have:
                rep.add(
                    "lost-append",
                    key,
                    f"ok append of {v!r} missing from the final read {list(final.values)}",
                    (op, final.op),
                )
