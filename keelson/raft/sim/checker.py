"""The safety and liveness invariants of a simulated raft cluster, fed with observations.

The checker knows nothing about RawNode or the network: the simulator reports what it saw
(a node leading a term, entries handed out for persistence, a node's commit index, an
applied entry, an acknowledged write, a served read) and the checker compares each
observation with the whole history so far. That keeps every rule testable on a hand-made
history (tests/raft/test_sim_checker.py).

The rules, named as the simulator reports them:

1. ``election-safety``: at most one leader per term over the whole run.
2. ``log-matching``: every copy of entry (index, term), in any log, durable or unstable,
   has the same type and data and follows an entry of the same term; by induction two logs
   holding (index, term) agree on every entry up to it.
3. ``leader-completeness``: a leader of term t holds every entry committed in a term
   before t (checked when it is first seen leading, and again for each entry whose commit
   is observed while it leads).
4. ``state-machine-safety``: no two members commit or apply different entries at one
   index, and a snapshot holds exactly the applied history up to its index.
5. ``commit-monotonic``: a member's commit index never decreases, in memory or on disk,
   and a restarted member starts from at least what it persisted.
6. ``read-linearizable``: a ReadIndex read returns a state containing every write that was
   acknowledged to the client before the read began.
7. ``progress``: once faults heal, a leader is elected and a proposal commits in bounded
   virtual time.

``core-error`` is reported when the core raises something it should not (its own
invariant failures included). Violations are collected, not raised: a run goes on so one
bug can show every rule it breaks; ``first`` keeps the earliest violation of each rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from keelson.raft.types import Entry, EntryType

ELECTION_SAFETY = "election-safety"
LOG_MATCHING = "log-matching"
LEADER_COMPLETENESS = "leader-completeness"
STATE_MACHINE_SAFETY = "state-machine-safety"
COMMIT_MONOTONIC = "commit-monotonic"
READ_LINEARIZABLE = "read-linearizable"
PROGRESS = "progress"
CORE_ERROR = "core-error"

INVARIANTS = (
    ELECTION_SAFETY,
    LOG_MATCHING,
    LEADER_COMPLETENESS,
    STATE_MACHINE_SAFETY,
    COMMIT_MONOTONIC,
    READ_LINEARIZABLE,
    PROGRESS,
    CORE_ERROR,
)

MAX_RECORDED = 64
"""Violations kept per run beyond the first of each rule (a broken core repeats itself)."""

TermAt = Callable[[int], "int | None"]
"""A node's log as seen by the checker: the term at an index, None if compacted/absent."""


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    step: int
    time: int
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant} at step {self.step} (t={self.time}): {self.detail}"


@dataclass(frozen=True, slots=True)
class _EntryCopy:
    type: EntryType
    data: bytes
    prev_term: int | None
    node: int


@dataclass(frozen=True, slots=True)
class _PendingRead:
    need_index: int
    need_write: int


class Checker:
    """Accumulates a cluster history and reports every rule it breaks.

    The caller sets ``step`` and ``time`` before each batch of observations so violations
    say when they happened.
    """

    def __init__(self) -> None:
        self.step = 0
        self.time = 0
        self.violations: list[Violation] = []
        self.first: dict[str, Violation] = {}
        self._leader_of_term: dict[int, int] = {}
        self._entry_copies: dict[tuple[int, int], _EntryCopy] = {}
        # index -> (term of the entry, lowest term in which a node was seen holding it
        # committed); an entry committed in term c is committed "before" any term > c
        self._committed: dict[int, tuple[int, int]] = {}
        self._max_committed = 0
        self._recorded_commit: dict[int, int] = {}
        self._applied: dict[int, Entry] = {}
        # the applied history as a prefix: writes in index order, and how many of them
        # lie at or below each index (slot 0 stands for the empty log)
        self._hist_writes: list[int] = []
        self._hist_count: list[int] = [0]
        self._commit_floor: dict[int, int] = {}
        self._persisted_commit: dict[int, int] = {}
        self._max_acked_index = 0
        self._max_acked_write = 0
        self._reads: dict[bytes, _PendingRead] = {}

    # ------------------------------------------------------------------ recording
    def violate(self, invariant: str, detail: str) -> None:
        v = Violation(invariant, self.step, self.time, detail)
        if invariant not in self.first:
            self.first[invariant] = v
        if len(self.violations) < MAX_RECORDED:
            self.violations.append(v)

    @property
    def ok(self) -> bool:
        return not self.first

    # ------------------------------------------------------------------ 1 + 3
    def observe_leader(
        self, node: int, term: int, first_index: int, last_index: int, term_at: TermAt
    ) -> None:
        """``node`` is leader of ``term`` now. The first time it is seen so, its log (first
        and last index, terms) must hold every entry committed in an earlier term."""
        prev = self._leader_of_term.get(term)
        if prev is not None:
            if prev != node:
                self.violate(ELECTION_SAFETY, f"nodes {prev} and {node} both lead term {term}")
            return
        self._leader_of_term[term] = node
        lo = max(1, first_index - 1)
        for i in range(lo, self._max_committed + 1):
            rec = self._committed.get(i)
            if rec is None or rec[1] >= term:
                continue
            self._check_holds(node, term, i, rec[0], last_index, term_at)

    def _check_holds(
        self, node: int, term: int, index: int, entry_term: int, last_index: int, term_at: TermAt
    ) -> None:
        if index > last_index:
            self.violate(
                LEADER_COMPLETENESS,
                f"leader {node} of term {term} lacks committed entry {index} "
                f"(term {entry_term}); its log ends at {last_index}",
            )
            return
        have = term_at(index)
        if have is not None and have != entry_term:
            self.violate(
                LEADER_COMPLETENESS,
                f"leader {node} of term {term} has term {have} at index {index}, "
                f"but an entry of term {entry_term} was committed there",
            )

    def leader_of(self, term: int) -> int | None:
        return self._leader_of_term.get(term)

    # ------------------------------------------------------------------ 2
    def observe_entries(self, node: int, entries: Sequence[Entry], prev_term: int | None) -> None:
        """``entries`` (consecutive) now sit in ``node``'s log, after an entry of term
        ``prev_term`` (None when that entry is compacted away)."""
        pt = prev_term
        for e in entries:
            key = (e.index, e.term)
            seen = self._entry_copies.get(key)
            if seen is None:
                self._entry_copies[key] = _EntryCopy(e.type, e.data, pt, node)
            else:
                if seen.type != e.type or seen.data != e.data:
                    self.violate(
                        LOG_MATCHING,
                        f"entry {e.index}/{e.term} differs: node {seen.node} has "
                        f"{_show(seen.type, seen.data)}, node {node} has {_show(e.type, e.data)}",
                    )
                elif pt is not None and seen.prev_term is not None and pt != seen.prev_term:
                    self.violate(
                        LOG_MATCHING,
                        f"entry {e.index}/{e.term} follows term {seen.prev_term} on node "
                        f"{seen.node} but term {pt} on node {node}",
                    )
                elif seen.prev_term is None and pt is not None:
                    self._entry_copies[key] = _EntryCopy(e.type, e.data, pt, node)
            pt = e.term

    # ------------------------------------------------------------------ 3 + 4 + 5
    def observe_commit(
        self, node: int, node_term: int, commit: int, term_at: TermAt
    ) -> list[tuple[int, int, int]]:
        """``node`` (now at ``node_term``) has commit index ``commit``. Checks it never
        decreased, records newly committed entries and returns them as
        (index, entry term, commit term) so current leaders can be checked against them."""
        floor = self._commit_floor.get(node, 0)
        if commit < floor:
            self.violate(
                COMMIT_MONOTONIC, f"node {node} commit index went from {floor} down to {commit}"
            )
        self._commit_floor[node] = commit
        start = self._recorded_commit.get(node, 0)
        if commit <= start:
            return []
        self._recorded_commit[node] = commit
        fresh: list[tuple[int, int, int]] = []
        for i in range(start + 1, commit + 1):
            t = term_at(i)
            if t is None:
                continue
            rec = self._committed.get(i)
            if rec is None:
                self._committed[i] = (t, node_term)
                fresh.append((i, t, node_term))
            elif rec[0] != t:
                self.violate(
                    STATE_MACHINE_SAFETY,
                    f"index {i} committed with term {rec[0]} elsewhere, node {node} "
                    f"commits term {t}",
                )
            elif node_term < rec[1]:
                self._committed[i] = (t, node_term)
        if commit > self._max_committed:
            self._max_committed = commit
        return fresh

    def check_leader_holds(
        self,
        node: int,
        term: int,
        fresh: Sequence[tuple[int, int, int]],
        last_index: int,
        term_at: TermAt,
    ) -> None:
        """A current leader of ``term`` must hold each freshly committed entry whose commit
        term is earlier than ``term``."""
        for index, entry_term, commit_term in fresh:
            if commit_term < term:
                self._check_holds(node, term, index, entry_term, last_index, term_at)

    def observe_persisted_commit(self, node: int, commit: int) -> None:
        prev = self._persisted_commit.get(node, 0)
        if commit < prev:
            self.violate(
                COMMIT_MONOTONIC,
                f"node {node} persisted commit index {commit} after having persisted {prev}",
            )
        self._persisted_commit[node] = max(prev, commit)

    def observe_restart(self, node: int, commit: int) -> None:
        """``node`` restarted; its fresh state starts at ``commit``, which must be at least
        what it had persisted. Volatile progress beyond that is legitimately lost."""
        persisted = self._persisted_commit.get(node, 0)
        if commit < persisted:
            self.violate(
                COMMIT_MONOTONIC,
                f"node {node} restarted at commit {commit} below its persisted {persisted}",
            )
        self._commit_floor[node] = commit

    def observe_apply(self, node: int, entry: Entry) -> None:
        seen = self._applied.get(entry.index)
        if seen is None:
            self._applied[entry.index] = entry
            while len(self._hist_count) in self._applied:
                w = write_id(self._applied[len(self._hist_count)])
                if w is not None:
                    self._hist_writes.append(w)
                self._hist_count.append(len(self._hist_writes))
            rec = self._committed.get(entry.index)
            if rec is not None and rec[0] != entry.term:
                self.violate(
                    STATE_MACHINE_SAFETY,
                    f"node {node} applies {entry.index}/{entry.term} but term {rec[0]} was "
                    f"committed there",
                )
        elif seen != entry:
            self.violate(
                STATE_MACHINE_SAFETY,
                f"node {node} applies {entry.index}/{entry.term} "
                f"{_show(entry.type, entry.data)} where {seen.index}/{seen.term} "
                f"{_show(seen.type, seen.data)} was applied before",
            )

    def observe_state(self, node: int, index: int, writes: Sequence[int], what: str) -> None:
        """``writes`` is ``node``'s whole state machine at ``index`` (from a snapshot it made
        or installed): it must be the applied history up to ``index``."""
        if index >= len(self._hist_count):
            return  # part of the history up to index is unknown: nothing to compare
        expect = self._hist_writes[: self._hist_count[index]]
        if list(writes) != expect:
            self.violate(
                STATE_MACHINE_SAFETY,
                f"{what} of node {node} at index {index} holds {len(writes)} writes "
                f"(last {list(writes)[-3:]}), the applied history has {len(expect)} "
                f"(last {expect[-3:]})",
            )

    # ------------------------------------------------------------------ 6
    def write_acked(self, write: int, index: int) -> None:
        if index > self._max_acked_index:
            self._max_acked_index = index
            self._max_acked_write = write

    def read_started(self, ctx: bytes) -> None:
        self._reads[ctx] = _PendingRead(self._max_acked_index, self._max_acked_write)

    def read_abandoned(self, ctx: bytes) -> None:
        self._reads.pop(ctx, None)

    def read_served(self, ctx: bytes, node: int, applied: int, writes: Sequence[int]) -> None:
        need = self._reads.pop(ctx, None)
        if need is None or need.need_index == 0:
            return
        if applied < need.need_index or need.need_write not in writes:
            self.violate(
                READ_LINEARIZABLE,
                f"read {ctx.decode(errors='replace')} on node {node} returned state at "
                f"applied index {applied}, but write w{need.need_write} at index "
                f"{need.need_index} was acknowledged before the read began",
            )

    # ------------------------------------------------------------------ 7
    def progress_failed(self, detail: str) -> None:
        self.violate(PROGRESS, detail)

    def core_error(self, detail: str) -> None:
        self.violate(CORE_ERROR, detail)


WRITE_PREFIX = b"w"


def write_id(e: Entry) -> int | None:
    """The client write carried by a normal entry, or None (empty or conf change)."""
    if e.type != EntryType.NORMAL or not e.data.startswith(WRITE_PREFIX):
        return None
    try:
        return int(e.data[len(WRITE_PREFIX) :])
    except ValueError:
        return None


def _show(t: EntryType, data: bytes) -> str:
    kind = "conf" if t == EntryType.CONF_CHANGE else "normal"
    return f"{kind}:{data[:16]!r}"
