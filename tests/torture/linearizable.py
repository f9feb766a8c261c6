"""Linearizability of the register workload: a Wing–Gong / Lowe checker, per key.

Owns the register model and the search. Input: the :class:`~.history.Op` list of a run;
ops with ``f`` in ``read``, ``write``, ``cas`` are checked, everything else is ignored.

Model (one register per key, initial value None = absent):

- ``read``  ok when ``result`` equals the current value (None for an absent key);
- ``write`` sets the value to ``value``;
- ``cas``   ``value == (expected, new)``: allowed only when the current value equals
  ``expected``, then sets it to ``new``.

Statuses: ``fail`` ops did not happen and are dropped (so is an ``ok`` cas whose result is
not True, which the recorder should have written as ``fail``); ``info`` reads are dropped
(they constrain nothing); ``info`` writes and cas may take effect at any point after their
invocation or never: they get no return event (completion = +infinity) and the search may
leave them out. Before the search, an ``info`` write or cas whose new value no op observes is
dropped (leaving it out is always at least as good), and one that is the only writer of a
value some ok op observes becomes required, due by the first such observer's completion
(it must have taken effect before). Both are exact, and they keep timed-out ops from
blowing up the search, which otherwise tries each one at every point. A successful read is
never tried again at a later point (it changes nothing, so placing it at the first point it
fits loses no linearization).

The search (Lowe's refinement of Wing & Gong, as in Knossos and Porcupine): call and return
events sorted by time (a call before a return at the same instant, i.e. ops that touch are
concurrent) in a doubly linked list; walk it, linearizing the first call whose model step
succeeds and whose (linearized-set bitset, state) was not seen before, lifting it out of the
list; on reaching a return whose call is not linearized, backtrack (undo the last lift and
its state). The history is linearizable iff every non-info op gets linearized.

Histories are partitioned by key (P-compositionality: a history of independent registers is
linearizable iff each register's sub-history is). Each key's search is bounded by
``max_steps`` and a deadline; over budget gives an ``unknown`` anomaly, never a hang.

For a key that is not linearizable the report carries a small failing sub-history: a short
time prefix that already fails, then delta debugging (drop chunks of halving size, down to
single ops, while the rest still fails), bounded in time. A candidate never lacks the
writers of values its ops observe (they are added back), so the sub-history stays a *proof*
on its own: if the whole history were linearizable, so would be every such sub-history
(delete the dropped ops from a linearization: only ops observing a dropped write's value
could notice, and none remain). It is searched without the info promotion above, so it
reads as plain history.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .history import Anomaly, Op

CHECKER = "linearizable"
REGISTER_FS = frozenset({"read", "write", "cas"})
DEFAULT_MAX_STEPS = 50_000_000
DEFAULT_KEY_SECONDS = 10.0
DEFAULT_TOTAL_SECONDS = 60.0
DEFAULT_SHRINK_SECONDS = 1.0
DEFAULT_MAX_STATES = 1_000_000
EXACT_CACHE_BYTES = 256 * 1024 * 1024

_NOT_FOUND = object()


@dataclass(frozen=True, slots=True)
class _Call:
    """One op as the search sees it: a model step and whether it must be linearized."""

    op: Op
    kind: int  # 0 read, 1 write, 2 cas
    arg: object  # read: expected result; write: new value; cas: expected value
    new: object  # cas: new value
    required: bool  # False for info ops (may be skipped)
    complete: int | None  # when it must have taken effect by; None = never needs to

    def writes(self) -> object:
        """The value this op leaves in the register (``_NOT_FOUND`` for a read)."""
        if self.kind == 1:
            return self.arg
        if self.kind == 2:
            return self.new
        return _NOT_FOUND

    def observes(self) -> object:
        """The value this op requires to be current (``_NOT_FOUND`` for a write)."""
        if self.kind == 0 or self.kind == 2:
            return self.arg
        return _NOT_FOUND


class _Result:
    OK = 0
    FAIL = 1
    UNKNOWN = 2


def _to_call(op: Op) -> _Call | None:
    """The model step of ``op``, or None when it has no effect to check."""
    if op.status == "fail":
        return None
    required = op.status == "ok"
    if op.f == "read":
        if not required:
            return None
        return _Call(op, 0, op.result, None, True, op.complete)
    if op.f == "write":
        return _Call(op, 1, op.value, None, required, op.complete)
    if op.f == "cas":
        if required and op.result is not True:
            return None
        expected, new = op.value
        return _Call(op, 2, expected, new, required, op.complete)
    return None


def _drop_unobserved_info(calls: list[_Call]) -> list[_Call]:
    """Drop info writes/cas whose new value no op observes: leaving them out is always at
    least as good (nothing can notice their value), so the answer does not change."""
    try:
        observed = {c.observes() for c in calls if c.observes() is not _NOT_FOUND}
        return [c for c in calls if c.required or c.writes() in observed]
    except TypeError:  # unhashable values: keep everything
        return calls


def _promote_info(calls: list[_Call]) -> list[_Call]:
    """Make required the info writes/cas that some ok op shows took effect.

    An info op that is the only writer of a value an ok op observes must have taken effect
    before that observer completed: it becomes required, due by the earliest such
    completion (when that is after its invocation; otherwise it stays optional and the
    search finds the history impossible). Exact, and it spares the search from trying each
    info op at every point. Only the first search uses it: shrinking searches the original
    ops, so a reported sub-history is a proof on its own.
    """
    try:
        due: dict[object, int] = {}
        writers: dict[object, int] = {None: 1}  # the initial state "writes" None
        for c in calls:
            v = c.observes()
            if v is not _NOT_FOUND and c.required and c.complete is not None:
                due[v] = min(due.get(v, c.complete), c.complete)
            w = c.writes()
            if w is not _NOT_FOUND:
                writers[w] = writers.get(w, 0) + 1
    except TypeError:
        return calls
    out: list[_Call] = []
    for c in calls:
        if not c.required:
            w = c.writes()
            by = due.get(w)
            if writers.get(w) == 1 and by is not None and by >= c.op.invoke:
                c = _Call(c.op, c.kind, c.arg, c.new, True, by)
        out.append(c)
    return out


def _search(
    calls: Sequence[_Call],
    max_steps: int,
    deadline: float,
    exact: bool = True,
    max_states: int = DEFAULT_MAX_STATES,
) -> int:
    """Run the Wing–Gong/Lowe search over ``calls`` (one key). Returns a ``_Result``.

    The linearized set is kept as the XOR of one token per linearized op: with ``exact``
    the token of op i is ``1 << i`` (the bitset itself); otherwise a random 128-bit number
    (Zobrist hashing: O(1) per step and 16 bytes per cached state whatever the number of
    ops; two different sets collide with probability ~2**-128 per pair, and a failure
    found this way is confirmed exactly by the caller). The cache holds at most
    ``max_states`` states (and, exact, about ``EXACT_CACHE_BYTES``): beyond, UNKNOWN.
    """
    n = len(calls)
    if n == 0:
        return _Result.OK
    if exact:
        tokens = [1 << i for i in range(n)]
        max_states = min(max_states, EXACT_CACHE_BYTES // (n // 8 + 120))
    else:
        rnd = random.Random(n)
        tokens = [rnd.getrandbits(128) for _ in range(n)]
    # events: (time, 0 for call / 1 for return, op index)
    events: list[tuple[int, int, int]] = []
    required = 0
    for i, c in enumerate(calls):
        events.append((c.op.invoke, 0, i))
        if c.required:
            required += 1
            assert c.complete is not None
            events.append((c.complete, 1, i))
    events.sort()
    m = len(events)
    head, tail = m, m + 1
    nxt = list(range(1, m + 1)) + [0, 0]  # node j -> j+1; head -> 0
    prv = [j - 1 for j in range(m)] + [0, 0]
    nxt[head] = 0
    prv[0] = head
    nxt[m - 1] = tail
    prv[tail] = m - 1
    is_call = [e[1] == 0 for e in events]
    op_of = [e[2] for e in events]
    ret_node = [-1] * n
    for j, e in enumerate(events):
        if e[1] == 1:
            ret_node[e[2]] = j

    kinds = [c.kind for c in calls]
    args = [c.arg for c in calls]
    news = [c.new for c in calls]

    state: object = None
    lin = 0
    done = 0
    cache: set[tuple[int, object]] = set()
    stack: list[tuple[int, object]] = []  # (call node, state before)
    node = nxt[head]
    steps = 0
    while True:
        if done == required:
            return _Result.OK
        steps += 1
        if steps >= max_steps or (steps & 0xFFF == 0 and time.monotonic() > deadline):
            return _Result.UNKNOWN
        if node == tail:
            # only info calls are left and required ops remain: impossible by construction
            # (their returns are in the list), kept as a guard.
            return _Result.FAIL
        if is_call[node]:
            i = op_of[node]
            k = kinds[i]
            if k == 0:
                ok = args[i] == state
                new_state = state
            elif k == 1:
                ok = True
                new_state = args[i]
            else:
                ok = args[i] == state
                new_state = news[i]
            if ok:
                new_lin = lin ^ tokens[i]
                key = (new_lin, new_state)
                if key not in cache:
                    if len(cache) >= max_states:
                        return _Result.UNKNOWN
                    cache.add(key)
                    stack.append((node, state))
                    state = new_state
                    lin = new_lin
                    if calls[i].required:
                        done += 1
                    # lift the call and its return out of the list
                    nxt[prv[node]] = nxt[node]
                    prv[nxt[node]] = prv[node]
                    r = ret_node[i]
                    if r >= 0:
                        nxt[prv[r]] = nxt[r]
                        prv[nxt[r]] = prv[r]
                    node = nxt[head]
                    continue
            node = nxt[node]
        else:
            # backtrack. A read that succeeded was linearized without loss of generality
            # (it changes nothing and every op that must precede it is linearized), so
            # when the subtree after it fails, so does the point where it was chosen: undo
            # reads without trying alternatives, up to the last write or cas.
            while True:
                if not stack:
                    return _Result.FAIL
                call_node, old_state = stack.pop()
                i = op_of[call_node]
                state = old_state
                lin ^= tokens[i]
                if calls[i].required:
                    done -= 1
                r = ret_node[i]
                if r >= 0:
                    nxt[prv[r]] = r
                    prv[nxt[r]] = r
                nxt[prv[call_node]] = call_node
                prv[nxt[call_node]] = call_node
                if kinds[i] != 0:
                    break
            node = nxt[call_node]


def _closed(kept: list[_Call], dropped: list[_Call]) -> list[_Call]:
    """``kept`` plus (transitively) the dropped writers of values kept ops observe.

    The result is a sub-history whose non-linearizability proves the whole history's (see
    the module doc), sorted by invocation.
    """
    kept = list(kept)
    rest = dropped
    while rest:
        needed = {_hashable(c.observes()) for c in kept if c.observes() is not _NOT_FOUND}
        back = [c for c in rest if c.writes() is not _NOT_FOUND and _hashable(c.writes()) in needed]
        if not back:
            break
        kept += back
        rest = [c for c in rest if not any(c is x for x in back)]
    kept.sort(key=lambda c: c.op.invoke)
    return kept


def _shrink(calls: list[_Call], max_steps: int, seconds: float) -> list[_Call]:
    """A small failing sub-history of a failing ``calls`` (bounded by ``seconds``).

    First the shortest failing time prefix found by probing doubling lengths (failure is
    not monotone in the prefix, so this is a heuristic cut), then delta debugging: drop
    chunks of halving size while the rest (closed under "writers of observed values") still
    fails. Every candidate kept is itself checked to fail, so the result is always a proof.
    """
    deadline = time.monotonic() + seconds

    def fails(sub: list[_Call]) -> bool:
        d = min(deadline, time.monotonic() + seconds / 4)
        return _search(sub, max_steps, d) == _Result.FAIL

    best = calls
    times = sorted({c.complete for c in calls if c.required and c.complete is not None})
    size = 4
    while size < len(times) and time.monotonic() < deadline:
        t = times[size - 1]
        sub = _closed([c for c in calls if c.op.invoke <= t], [c for c in calls if c.op.invoke > t])
        if len(sub) < len(best) and fails(sub):
            best = sub
            break
        size *= 2
    chunk = max(len(best) // 2, 1)
    while time.monotonic() < deadline:
        j = 0
        progressed = False
        while j < len(best) and time.monotonic() < deadline:
            sub = _closed(best[:j] + best[j + chunk :], best[j : j + chunk])
            if len(sub) < len(best) and sub and fails(sub):
                best = sub
                progressed = True
            else:
                j += chunk
        if chunk == 1 and not progressed:
            break  # no single op can go: 1-minimal
        chunk = max(chunk // 2, 1)
    return best


def _describe(key: str, sub: list[_Call], all_calls: Iterable[_Call]) -> str:
    written: set[object] = {None}
    for c in all_calls:
        w = c.writes()
        if w is not _NOT_FOUND:
            written.add(_hashable(w))
    for c in sub:
        v = c.observes()
        if v is not _NOT_FOUND and _hashable(v) not in written:
            what = "read" if c.kind == 0 else "cas expected"
            return f"key {key!r}: {what} {v!r}, a value never written to this key"
    hint = _stale_hint(sub)
    return f"key {key!r}: no linearization of these {len(sub)} ops exists" + (
        f": {hint}" if hint else ""
    )


def _stale_hint(sub: list[_Call]) -> str:
    """Name the plainest contradiction in ``sub``, if there is one: an op observing a value
    some acknowledged write replaced (or, for None, preceded) before the op began."""
    for c in sub:
        v = c.observes()
        if v is _NOT_FOUND:
            continue
        what = "read" if c.kind == 0 else "cas succeeded on"
        writers = [w for w in sub if w.writes() is not _NOT_FOUND and w.writes() == v]
        if any(not w.required or w.complete is None for w in writers):
            continue  # an info writer of v may have taken effect at any later time
        writers_done = [w.complete for w in writers if w.complete is not None]
        for x in sub:
            if (
                x is c
                or not x.required
                or x.writes() is _NOT_FOUND
                or x.writes() == v
                or x.complete is None
                or x.complete >= c.op.invoke
            ):
                continue
            if v is None:
                return (
                    f"{what} an absent key after the acknowledged write of {x.writes()!r} "
                    "completed (lost write)"
                )
            if writers_done and all(x.op.invoke > d for d in writers_done):
                return (
                    f"{what} {v!r} after {x.writes()!r} replaced it: that write began after "
                    f"{v!r} was written and completed before this op began (stale)"
                )
    return ""


def _hashable(v: object) -> object:
    try:
        hash(v)
        return v
    except TypeError:
        return repr(v)


def check_linearizable(
    ops: Iterable[Op],
    max_steps: int = DEFAULT_MAX_STEPS,
    key_seconds: float = DEFAULT_KEY_SECONDS,
    shrink_seconds: float = DEFAULT_SHRINK_SECONDS,
    total_seconds: float = DEFAULT_TOTAL_SECONDS,
    max_states: int = DEFAULT_MAX_STATES,
) -> list[Anomaly]:
    """Check the register ops of ``ops`` key by key; one anomaly per bad or unknown key.

    Kinds: ``not-linearizable`` (with a small failing sub-history) and ``unknown`` (the
    search for that key exceeded ``max_steps`` steps, ``max_states`` cached states,
    ``key_seconds``, or what was left of ``total_seconds`` for the whole call; each key
    gets at least 0.1 s). The first search per key caches hashed sets; a failure is
    confirmed by an exact (bitset) search before it is reported.
    """
    overall = time.monotonic() + total_seconds
    by_key: dict[str, list[_Call]] = {}
    for op in ops:
        if op.f not in REGISTER_FS:
            continue
        c = _to_call(op)
        if c is not None:
            by_key.setdefault(op.key, []).append(c)
    anomalies: list[Anomaly] = []
    for key in sorted(by_key):
        calls = _drop_unobserved_info(by_key[key])
        calls.sort(key=lambda c: c.op.invoke)
        now = time.monotonic()
        deadline = max(min(now + key_seconds, overall), now + 0.1)
        promoted = _promote_info(calls)
        res = _search(promoted, max_steps, deadline, exact=False, max_states=max_states)
        confirmed = True
        if res == _Result.FAIL:
            now2 = time.monotonic()
            deadline = max(min(now2 + key_seconds, overall), now2 + 0.1)
            exact = _search(promoted, max_steps, deadline, exact=True, max_states=max_states)
            if exact == _Result.OK:  # a hash collision: ~never, but the answer is exact
                continue
            confirmed = exact == _Result.FAIL
        if res == _Result.OK:
            continue
        if res == _Result.UNKNOWN:
            anomalies.append(
                Anomaly(
                    CHECKER,
                    "unknown",
                    f"key {key!r}: unknown (search budget exceeded: {len(calls)} ops, "
                    f"{time.monotonic() - now:.1f} s)",
                )
            )
            continue
        sub = _shrink(calls, max_steps, min(shrink_seconds, max(overall - now, 0.1)))
        anomalies.append(
            Anomaly(
                CHECKER,
                "not-linearizable",
                _describe(key, sub, calls)
                + ("" if confirmed else " (exact re-check of the whole key over budget)"),
                tuple(c.op for c in sorted(sub, key=lambda c: c.op.invoke)),
            )
        )
    return anomalies
