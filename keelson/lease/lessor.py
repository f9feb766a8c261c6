"""The lessor: leases, their TTLs, attached keys and expiry, without threads or a clock.

Theory of operation. A lease is an id, a granted TTL (seconds) and the set of keys attached
to it. Every member holds the same leases (grant and revoke are raft-applied and persisted in
the ``lease`` bucket inside the caller's backend write transaction, atomic with the consistent
index). Only the *primary* (the raft leader) tracks real expiry times: on a follower every
lease expires "never" (``math.inf``); ``promote`` gives each lease ``now + remaining + extend``
and ``demote`` puts them back to never. Time is always passed in as ``now`` (monotonic float
seconds), so the lessor is deterministic and testable with a virtual clock.

Expiry does not delete anything: ``expired(now, limit)`` returns ids whose deadline passed
(re-queueing each ``EXPIRED_RETRY_INTERVAL`` later, in case the revoke proposal is lost), and
the server proposes revokes for them. ``revoke`` deletes attached keys through the
``delete_keys`` callback given at construction, called once with the sorted keys so mvcc
removes them in one revision.

Promote spreads leases that would expire at about the same time (etcd 3.4): leases are
visited by remaining TTL; within a window starting at a lease's remaining TTL and at least
one second long, the n-th lease past ``target = 3/4 * revoke_rate`` is pushed later by
``n / target`` seconds (which widens the window), so about ``target`` revokes per second
follow a leader change instead of a storm.

Checkpoints (off unless ``checkpoint_interval`` is set, like etcd 3.4's
``--experimental-enable-lease-checkpoint``): ``checkpoint_due(now)`` lists (id, remaining TTL)
for the leader to propose; ``apply_checkpoint`` (on every member) persists the remaining TTL,
which a later ``promote`` uses instead of the full TTL. ``renew`` clears it in memory.

Persistence: key = 8-byte big-endian id, value = ``>qqq`` (id, ttl, remaining_ttl).
``recover`` rebuilds every lease (with no keys: mvcc re-attaches them while opening).
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from keelson.backend import Backend, ReadTxn, WriteTxn
from keelson.lease.queue import LeaseQueue
from keelson.proto.errors import (
    LEASE_EXIST,
    LEASE_NOT_FOUND,
    LEASE_TTL_TOO_LARGE,
)

LEASE_BUCKET = b"lease"
MAX_LEASE_TTL = 9_000_000_000
"""Largest grantable TTL in seconds (etcd's MaxLeaseTTL)."""
MAX_LEASE_ID = (1 << 63) - 1
DEFAULT_REVOKE_RATE = 1000
"""Leases revoked per second at most after a promote (etcd's leaseRevokeRate)."""
EXPIRED_RETRY_INTERVAL = 3.0
"""Seconds before an expired lease not yet revoked is reported by ``expired`` again."""
DEFAULT_CHECKPOINT_INTERVAL = 300.0
"""etcd 3.4's default lease checkpoint interval (5 minutes)."""

_KEY = struct.Struct(">Q")
_VALUE = struct.Struct(">qqq")

DeleteKeys = Callable[[list[bytes]], None]


class NotPrimary(Exception):
    """The operation needs the primary (leader) lessor; the server forwards it instead."""


class LeaseCorrupt(Exception):
    """A record in the lease bucket cannot be decoded."""


def min_lease_ttl(election_ticks: int, heartbeat_ms: int) -> int:
    """etcd's minimum TTL: 3/2 election timeouts, rounded up to whole seconds."""
    if election_ticks <= 0 or heartbeat_ms <= 0:
        raise ValueError("election_ticks and heartbeat_ms must be positive")
    ms = (3 * election_ticks * heartbeat_ms) // 2
    return max(1, math.ceil(ms / 1000))


def new_lease_id(rng: random.Random, exists: Callable[[int], bool]) -> int:
    """A random positive int64 id not in use (the server picks it before proposing)."""
    while True:
        lease_id = rng.randint(1, MAX_LEASE_ID)
        if not exists(lease_id):
            return lease_id


def encode_lease(lease_id: int, ttl: int, remaining_ttl: int) -> tuple[bytes, bytes]:
    return _KEY.pack(lease_id), _VALUE.pack(lease_id, ttl, remaining_ttl)


def decode_lease(key: bytes, value: bytes) -> tuple[int, int, int]:
    try:
        (kid,) = _KEY.unpack(key)
        lease_id, ttl, remaining = _VALUE.unpack(value)
    except struct.error as exc:
        raise LeaseCorrupt(f"bad lease record {key!r}: {exc}") from None
    if kid != lease_id or lease_id <= 0 or ttl <= 0 or remaining < 0:
        raise LeaseCorrupt(f"bad lease record {key!r}: id={lease_id} ttl={ttl}")
    return lease_id, ttl, remaining


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """What ``time_to_live`` reports."""

    lease_id: int
    granted_ttl: int
    remaining_ttl: int
    keys: tuple[bytes, ...]


class _Lease:
    __slots__ = ("lease_id", "ttl", "remaining_ttl", "keys", "deadline")

    def __init__(self, lease_id: int, ttl: int, remaining_ttl: int = 0) -> None:
        self.lease_id = lease_id
        self.ttl = ttl
        self.remaining_ttl = remaining_ttl  # 0: none checkpointed, use ttl
        self.keys: set[bytes] = set()
        self.deadline = math.inf  # expiry; inf unless the lessor is primary

    def effective_ttl(self) -> int:
        return self.remaining_ttl if self.remaining_ttl > 0 else self.ttl


def _check_id(lease_id: int) -> None:
    if not 0 < lease_id <= MAX_LEASE_ID:
        raise LEASE_NOT_FOUND


class Lessor:
    """Leases of one member; see the module docstring."""

    def __init__(
        self,
        delete_keys: DeleteKeys,
        *,
        min_ttl: int = 1,
        revoke_rate: int = DEFAULT_REVOKE_RATE,
        checkpoint_interval: float | None = None,
    ) -> None:
        if min_ttl <= 0 or revoke_rate <= 0:
            raise ValueError("min_ttl and revoke_rate must be positive")
        if checkpoint_interval is not None and checkpoint_interval <= 0:
            raise ValueError("checkpoint_interval must be positive")
        self._delete_keys = delete_keys
        self.min_ttl = min_ttl
        self._revoke_rate = revoke_rate
        self._checkpoint_interval = checkpoint_interval
        self._leases: dict[int, _Lease] = {}
        self._expiry = LeaseQueue()
        self._checkpoints = LeaseQueue()
        self._primary = False

    # ---- state -------------------------------------------------------------------------

    @property
    def is_primary(self) -> bool:
        return self._primary

    def lease_exists(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def leases(self) -> list[int]:
        return sorted(self._leases)

    def _get(self, lease_id: int) -> _Lease:
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LEASE_NOT_FOUND
        return lease

    def expiry(self, lease_id: int) -> float:
        """The lease's deadline (``math.inf`` on a follower)."""
        return self._get(lease_id).deadline

    # ---- raft-applied operations ----------------------------------------------------------

    def grant(self, txn: WriteTxn, lease_id: int, ttl: int, now: float) -> int:
        """Create a lease; returns the granted TTL (raised to ``min_ttl``)."""
        if not 0 < lease_id <= MAX_LEASE_ID:
            raise LEASE_NOT_FOUND
        if ttl > MAX_LEASE_TTL:
            raise LEASE_TTL_TOO_LARGE
        if lease_id in self._leases:
            raise LEASE_EXIST
        ttl = max(ttl, self.min_ttl)
        key, value = encode_lease(lease_id, ttl, 0)
        txn.put(LEASE_BUCKET, key, value)
        self._leases[lease_id] = _Lease(lease_id, ttl)
        self._schedule(lease_id, now)
        return ttl

    def revoke(self, txn: WriteTxn, lease_id: int) -> list[bytes]:
        """Delete the lease and (one callback call, sorted) its keys; returns those keys."""
        lease = self._get(lease_id)
        keys = sorted(lease.keys)
        if keys:
            # mvcc may call detach() for each key meanwhile; the lease still exists then.
            self._delete_keys(keys)
        txn.delete(LEASE_BUCKET, _KEY.pack(lease_id))
        del self._leases[lease_id]
        self._expiry.remove(lease_id)
        self._checkpoints.remove(lease_id)
        return keys

    def apply_checkpoint(self, txn: WriteTxn, lease_id: int, remaining_ttl: int) -> None:
        """Record (and persist) the lease's remaining TTL; unknown ids are ignored like etcd
        (the lease may have been revoked after the checkpoint was proposed)."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return
        if remaining_ttl < 0:
            raise ValueError("remaining_ttl must be >= 0")
        lease.remaining_ttl = remaining_ttl
        key, value = encode_lease(lease_id, lease.ttl, remaining_ttl)
        txn.put(LEASE_BUCKET, key, value)

    # ---- keys (called by mvcc) --------------------------------------------------------------

    def attach(self, lease_id: int, key: bytes) -> None:
        self._get(lease_id).keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        self._get(lease_id).keys.discard(key)

    # ---- leader-only ---------------------------------------------------------------------

    def _require_primary(self) -> None:
        if not self._primary:
            raise NotPrimary("lessor is not primary")

    def renew(self, lease_id: int, now: float) -> int:
        """Restart the lease's TTL; returns it. Expired (not yet revoked): LEASE_NOT_FOUND."""
        self._require_primary()
        lease = self._get(lease_id)
        if lease.deadline <= now:
            raise LEASE_NOT_FOUND
        lease.remaining_ttl = 0
        self._schedule(lease_id, now)
        return lease.ttl

    def expired(self, now: float, limit: int | None = None) -> list[int]:
        """Ids whose deadline passed, earliest first; each is re-reported after
        ``EXPIRED_RETRY_INTERVAL`` unless revoked or renewed meanwhile."""
        self._require_primary()
        due = self._expiry.pop_due(now, limit)
        for lease_id in due:
            self._expiry.push(lease_id, now + EXPIRED_RETRY_INTERVAL)
        return due

    def time_to_live(self, lease_id: int, now: float) -> LeaseInfo:
        lease = self._get(lease_id)
        deadline = self.expiry(lease_id)
        if deadline == math.inf:
            remaining = lease.effective_ttl()
        else:
            remaining = max(0, int(deadline - now))
        return LeaseInfo(lease_id, lease.ttl, remaining, tuple(sorted(lease.keys)))

    def promote(self, now: float, extend: float = 0.0) -> None:
        """Become primary: every lease expires at now + remaining TTL + extend, spread so
        that at most about ``revoke_rate`` leases expire per second."""
        self._primary = True
        self._expiry.clear()
        self._checkpoints.clear()
        order = sorted(self._leases.values(), key=lambda le: (le.effective_ttl(), le.lease_id))
        target = max(1, (3 * self._revoke_rate) // 4)
        window_end = -math.inf
        in_window = 0
        for lease in order:
            remaining = float(lease.effective_ttl())
            delay = 0.0
            if remaining > window_end:
                window_end = remaining + 1.0
                in_window = 1
            else:
                in_window += 1
                if in_window > target:
                    delay = in_window / target
                    # later leases up to here collide with the delayed ones: same window
                    window_end = max(window_end, remaining + delay)
            lease.deadline = now + remaining + delay + extend
            self._expiry.push(lease.lease_id, lease.deadline)
            self._schedule_checkpoint(lease.lease_id, now)

    def demote(self) -> None:
        """Become a follower: nothing expires."""
        self._primary = False
        self._expiry.clear()
        self._checkpoints.clear()
        for lease in self._leases.values():
            lease.deadline = math.inf

    def checkpoint_due(self, now: float, limit: int | None = None) -> list[tuple[int, int]]:
        """(id, remaining TTL) of leases due for a checkpoint; empty when disabled."""
        if self._checkpoint_interval is None or not self._primary:
            return []
        out: list[tuple[int, int]] = []
        for lease_id in self._checkpoints.pop_due(now, limit):
            deadline = self.expiry(lease_id)
            if deadline <= now:
                continue  # expired: it is going to be revoked
            out.append((lease_id, max(1, math.ceil(deadline - now))))
            self._schedule_checkpoint(lease_id, now)
        return out

    def _schedule(self, lease_id: int, now: float) -> None:
        if self._primary:
            lease = self._leases[lease_id]
            lease.deadline = now + lease.effective_ttl()
            self._expiry.push(lease_id, lease.deadline)
            self._schedule_checkpoint(lease_id, now)

    def _schedule_checkpoint(self, lease_id: int, now: float) -> None:
        interval = self._checkpoint_interval
        if interval is None or not self._primary:
            return
        if self._leases[lease_id].effective_ttl() > interval:
            self._checkpoints.push(lease_id, now + interval)
        else:
            self._checkpoints.remove(lease_id)

    # ---- recovery ------------------------------------------------------------------------

    def recover(self, source: ReadTxn | Backend, now: float = 0.0) -> None:
        """Replace all leases by those persisted in the lease bucket (keys come later from
        mvcc's attach calls). A primary lessor reschedules them from ``now``."""
        if isinstance(source, Backend):
            with source.read() as txn:
                records = self._load(txn)
        else:
            records = self._load(source)
        self._leases = {lid: _Lease(lid, ttl, rem) for lid, ttl, rem in records}
        self._expiry.clear()
        self._checkpoints.clear()
        if self._primary:
            self.promote(now)

    @staticmethod
    def _load(txn: ReadTxn) -> list[tuple[int, int, int]]:
        rows: Iterable[tuple[bytes, bytes]] = txn.range(LEASE_BUCKET, b"", None)
        return [decode_lease(k, v) for k, v in rows]
