"""keelson.lease: the lessor (leases, TTLs, attached keys, expiry) and its expiry queue."""

from keelson.lease.lessor import (
    DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_REVOKE_RATE,
    EXPIRED_RETRY_INTERVAL,
    LEASE_BUCKET,
    MAX_LEASE_TTL,
    LeaseCorrupt,
    LeaseInfo,
    Lessor,
    NotPrimary,
    decode_lease,
    encode_lease,
    min_lease_ttl,
    new_lease_id,
)
from keelson.lease.queue import LeaseQueue

__all__ = [
    "DEFAULT_CHECKPOINT_INTERVAL",
    "DEFAULT_REVOKE_RATE",
    "EXPIRED_RETRY_INTERVAL",
    "LEASE_BUCKET",
    "MAX_LEASE_TTL",
    "LeaseCorrupt",
    "LeaseInfo",
    "LeaseQueue",
    "Lessor",
    "NotPrimary",
    "decode_lease",
    "encode_lease",
    "min_lease_ttl",
    "new_lease_id",
]
