"""The member's lease table until keelson.lease lands: grant, revoke, renew, expiry.

Theory of operation. Leases live in the ``lease`` bucket (id -> granted TTL), written in the
apply loop's backend txn, so they survive restarts with the data. Expiry is memory only
and decided by the leader: ``promote`` (on becoming leader) gives every lease a fresh full
TTL, as etcd's lessor does; ``expired`` lists leases past their deadline, which the server
revokes through the log. Keys are attached/detached by mvcc through the ``Lessor``
protocol (``lease_exists``/``attach``/``detach``); revoke deletes them through the
``delete_key`` callback in the same backend txn. Time comes from the ``clock`` given.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from keelson.backend import Backend, WriteTxn

LEASE_BUCKET = b"lease"
MAX_LEASE_TTL = 9_000_000_000
_ID = struct.Struct(">q")


@dataclass
class Lease:
    id: int
    ttl: int
    expiry: float = math.inf
    keys: set[bytes] = field(default_factory=set)


class LeaseTable:
    def __init__(self, backend: Backend, clock: Callable[[], float], min_ttl: int) -> None:
        self._clock = clock
        self.min_ttl = min_ttl
        self._leases: dict[int, Lease] = {}
        self._primary = False
        with backend.read() as tx:
            for k, v in tx.range(LEASE_BUCKET, b"", None):
                lid = _ID.unpack(k)[0]
                self._leases[lid] = Lease(lid, _ID.unpack(v)[0])

    # -- mvcc's Lessor protocol
    def lease_exists(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def attach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    # -- applied through the log
    def grant(self, btx: WriteTxn, lease_id: int, ttl: int) -> Lease:
        ttl = max(ttl, self.min_ttl)
        lease = Lease(lease_id, ttl)
        if self._primary:
            lease.expiry = self._clock() + ttl
        self._leases[lease_id] = lease
        btx.put(LEASE_BUCKET, _ID.pack(lease_id), _ID.pack(ttl))
        return lease

    def revoke(self, btx: WriteTxn, lease_id: int, delete_key: Callable[[bytes], None]) -> bool:
        lease = self._leases.get(lease_id)
        if lease is None:
            return False
        for key in sorted(lease.keys):
            delete_key(key)
        self._leases.pop(lease_id, None)
        btx.delete(LEASE_BUCKET, _ID.pack(lease_id))
        return True

    # -- leader only
    def promote(self) -> None:
        self._primary = True
        now = self._clock()
        for lease in self._leases.values():
            lease.expiry = now + lease.ttl

    def demote(self) -> None:
        self._primary = False
        for lease in self._leases.values():
            lease.expiry = math.inf

    def renew(self, lease_id: int) -> int | None:
        lease = self._leases.get(lease_id)
        if lease is None:
            return None
        lease.expiry = self._clock() + lease.ttl
        return lease.ttl

    def expired(self) -> list[int]:
        now = self._clock()
        return sorted(lid for lid, lease in self._leases.items() if lease.expiry <= now)

    def get(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def remaining(self, lease: Lease) -> int:
        if math.isinf(lease.expiry):
            return lease.ttl
        return max(0, math.ceil(lease.expiry - self._clock()))

    def ids(self) -> list[int]:
        return sorted(self._leases)
