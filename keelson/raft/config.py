"""Configuration of one raft node.

A ``Config`` is frozen and validated on construction: every field error is reported as a
ValueError naming the field. Randomness (the election timeout jitter) comes only from the
``rng`` given here, so a whole cluster replays exactly from one seed.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

NO_LIMIT = 2**63 - 1


class ReadOnlyOption(enum.IntEnum):
    """SAFE: a ReadIndex is confirmed by a heartbeat round to a quorum (the only option)."""

    SAFE = 0


@dataclass(frozen=True)
class Config:
    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    max_size_per_msg: int = 1024 * 1024
    max_committed_size_per_ready: int = NO_LIMIT
    max_uncommitted_entries_size: int = NO_LIMIT
    max_inflight_msgs: int = 256
    check_quorum: bool = True
    pre_vote: bool = True
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    disable_proposal_forwarding: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def __post_init__(self) -> None:
        if self.id <= 0:
            raise ValueError(f"config: id must be a positive integer, got {self.id}")
        if self.heartbeat_tick <= 0:
            raise ValueError(f"config: heartbeat_tick must be > 0, got {self.heartbeat_tick}")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError(
                f"config: election_tick ({self.election_tick}) must be greater than "
                f"heartbeat_tick ({self.heartbeat_tick})"
            )
        if self.applied < 0:
            raise ValueError(f"config: applied must be >= 0, got {self.applied}")
        if self.max_inflight_msgs <= 0:
            raise ValueError(f"config: max_inflight_msgs must be > 0, got {self.max_inflight_msgs}")
        for name in (
            "max_size_per_msg",
            "max_committed_size_per_ready",
            "max_uncommitted_entries_size",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"config: {name} must be > 0, got {getattr(self, name)}")
        if not isinstance(self.rng, random.Random):
            raise ValueError("config: rng must be a random.Random")
