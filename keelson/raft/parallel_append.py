"""Which messages of a Ready a leader may send before that Ready is durable.

``Ready``'s contract is to persist, then send. Raft also allows the leader to send its
appends while its own log write is still in flight (Raft thesis §10.2.1), so the leader's
fsync overlaps its followers' ones instead of preceding them. ``split_early`` decides, for
one Ready, which messages may go first; the caller sends those, persists the Ready, sends
the rest, and only then takes the next Ready.

Why that is safe, given that raft counts the leader's own entries towards the commit quorum
as soon as it appends them (not once they are durable):

- The commit index leaves raft only through a Ready (committed entries, hard state, the
  ``commit`` of messages, read states). While this Ready is being persisted the caller takes
  no further Ready, so a commit that counted the leader's not yet durable entries reaches
  nobody before those entries are durable. A leader that crashes during its fsync leaves
  entries that no one saw committed; the next leader keeps or drops them like any
  uncommitted entry.
- Within the Ready itself, the early messages must not carry such a commit index. With two
  or more voters an entry appended in this Ready cannot be committed yet (no follower has
  seen it); with one voter (plus learners) raft commits it on the append alone, so a
  message whose ``commit`` is above the durable last index waits for the fsync: a learner
  told that commit could apply an entry the leader's crash then erases.
- Only appends and heartbeats go early, and only in the leader's durable term: everything
  else (votes, append and heartbeat responses, ReadIndex answers, snapshots) vouches for
  what the sender has made durable. A Ready that changes the term or carries a snapshot
  sends nothing early.

Pure function, no I/O; ``keelson/server`` (behind its experimental switch) and the
simulator (``SimOptions.parallel_append``, with crashes between the early send and the
persistence) use the same rule.
"""

from __future__ import annotations

from keelson.raft.types import Message, MessageType, Ready

EARLY_TYPES = frozenset({MessageType.APP, MessageType.HEARTBEAT})
"""Message types a leader may send before the Ready that holds them is durable."""


def split_early(
    rd: Ready, *, is_leader: bool, durable_term: int, durable_last_index: int
) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
    """Split ``rd.messages`` into (may be sent before persisting ``rd``, must wait), each in
    the Ready's order.

    ``is_leader``: the member leads as of this Ready. ``durable_term``: the term of the hard
    state already durable before ``rd``. ``durable_last_index``: the last log index already
    durable before ``rd``'s entries (its snapshot index when the log is empty).
    """
    if (
        not is_leader
        or (rd.hard_state is not None and rd.hard_state.term != durable_term)
        or (rd.snapshot is not None and not rd.snapshot.is_empty())
    ):
        return (), rd.messages
    early: list[Message] = []
    late: list[Message] = []
    for m in rd.messages:
        if m.type in EARLY_TYPES and m.term == durable_term and m.commit <= durable_last_index:
            early.append(m)
        else:
            late.append(m)
    return tuple(early), tuple(late)
