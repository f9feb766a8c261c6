"""What a leader knows about each follower: Progress, Inflights, and the ProgressTracker.

A follower's Progress is in one of three states:

* PROBE: the leader does not know where the follower's log ends. It sends one MsgApp per
  heartbeat interval (``probe_sent`` pauses it) and backs ``next`` off on rejection.
* REPLICATE: the follower is known to match up to ``match``; the leader streams entries
  optimistically, advancing ``next`` as it sends, bounded by the Inflights window of at most
  ``max_inflight_msgs`` unacknowledged MsgApps.
* SNAPSHOT: the entries the follower needs are compacted; the leader sent a snapshot and
  sends nothing else until the follower reports it (or the transport reports a failure).

``recent_active`` is set on any message from the follower and cleared by the check-quorum
sweep of the leader every election timeout.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

from keelson.raft import quorum
from keelson.raft.invariant import invariant
from keelson.raft.types import ConfState


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class PS:
    """``ProgressState``'s members as plain class attributes, for the hot paths (see
    ``types.MT``: enum member lookups are slow on CPython 3.11)."""

    PROBE = ProgressState.PROBE
    REPLICATE = ProgressState.REPLICATE
    SNAPSHOT = ProgressState.SNAPSHOT


class Inflights:
    """The last indexes of MsgApps sent but not yet acknowledged, oldest first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._buf: list[int] = []

    def add(self, index: int) -> None:
        invariant(not self.full(), "cannot add into a full inflights window")
        invariant(not self._buf or index >= self._buf[-1], "inflights must grow")
        self._buf.append(index)

    def free_le(self, to: int) -> None:
        n = 0
        while n < len(self._buf) and self._buf[n] <= to:
            n += 1
        del self._buf[:n]

    def free_first_one(self) -> None:
        """Forget the oldest in-flight append (heartbeat responses use it to unstick a
        window whose append was lost)."""
        if self._buf:
            del self._buf[0]

    def full(self) -> bool:
        return len(self._buf) >= self.size

    def count(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        self._buf = []


class Progress:
    def __init__(self, next_index: int, max_inflight: int, is_learner: bool) -> None:
        self.match = 0
        self.next = next_index
        self.state = PS.PROBE
        self.pending_snapshot = 0
        self.recent_active = False
        self.probe_sent = False
        self.inflights = Inflights(max_inflight)
        self.is_learner = is_learner

    def __repr__(self) -> str:
        s = f"{self.state.name} match={self.match} next={self.next}"
        if self.is_learner:
            s += " learner"
        if self.state == PS.SNAPSHOT:
            s += f" pending_snap={self.pending_snapshot}"
        if not self.recent_active:
            s += " inactive"
        if self.inflights.count():
            s += f" inflight={self.inflights.count()}"
            if self.inflights.full():
                s += "[full]"
        if self.is_paused():
            s += " paused"
        return s

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == PS.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(PS.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(PS.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(PS.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(PS.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, last_index_sent: int, n_entries: int) -> None:
        """Account for a MsgApp carrying entries up to ``last_index_sent``."""
        if self.state == PS.REPLICATE:
            if n_entries > 0:
                self.next = last_index_sent + 1
                self.inflights.add(last_index_sent)
        elif self.state == PS.PROBE:
            self.probe_sent = True

    def maybe_update(self, n: int) -> bool:
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        if self.state == PS.REPLICATE:
            if rejected <= self.match:
                return False  # stale rejection
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # stale rejection
        self.next = max(min(rejected, match_hint + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == PS.PROBE:
            return self.probe_sent
        if self.state == PS.REPLICATE:
            return self.inflights.full()
        return True


class ProgressTracker:
    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.voters: tuple[int, ...] = ()
        self.learners: tuple[int, ...] = ()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def conf_state(self) -> ConfState:
        return ConfState(self.voters, self.learners)

    def has(self, node: int) -> bool:
        return node in self.progress

    def sorted_items(self) -> Iterator[tuple[int, Progress]]:
        for pid in sorted(self.progress):
            yield pid, self.progress[pid]

    def is_singleton(self) -> bool:
        return len(self.voters) == 1

    def committed(self) -> int:
        return quorum.committed_index(self.voters, {v: self.progress[v].match for v in self.voters})

    def quorum_active(self) -> bool:
        votes = {v: self.progress[v].recent_active for v in self.voters}
        return quorum.vote_result(self.voters, votes) == quorum.VoteResult.WON

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node: int, granted: bool) -> None:
        self.votes.setdefault(node, granted)

    def tally_votes(self) -> tuple[int, int, quorum.VoteResult]:
        granted = sum(1 for v in self.voters if self.votes.get(v) is True)
        rejected = sum(1 for v in self.voters if self.votes.get(v) is False)
        return granted, rejected, quorum.vote_result(self.voters, self.votes)
