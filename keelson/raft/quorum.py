"""Majority arithmetic over the voters of one configuration.

``committed_index`` is the largest index acknowledged by a majority of voters: sort the
match indexes descending and take the one at position ``n // 2``. ``vote_result`` tells
whether a set of granted/rejected votes already decides an election. Learners never appear
here: callers pass voters only.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class VoteResult(enum.IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def committed_index(voters: tuple[int, ...], acked: Mapping[int, int]) -> int:
    if not voters:
        return 2**63 - 1  # an empty config commits anything (as etcd's raft)
    srt = sorted([acked.get(v, 0) for v in voters], reverse=True)
    return srt[len(voters) // 2]


def vote_result(voters: tuple[int, ...], votes: Mapping[int, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    q = len(voters) // 2 + 1
    if granted >= q:
        return VoteResult.WON
    if len(voters) - rejected >= q:
        return VoteResult.PENDING
    return VoteResult.LOST
