"""Member and cluster identities, computed exactly as etcd 3.4 computes them.

etcd derives a member's ID from what makes it unique when the cluster is bootstrapped: its
sorted advertised peer URLs concatenated, then the cluster token (``--initial-cluster-token``),
and, for a member added at runtime, the Unix time of the add. The ID is the first 8 bytes of the
SHA-1 of those bytes, read big-endian. The cluster ID is the first 8 bytes (big-endian) of the
SHA-1 of the sorted member IDs, each written as 8 big-endian bytes. Matching this lets
``etcdctl member list`` show the same IDs for a keelson cluster as for an etcd cluster built
with the same flags.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

__all__ = ["compute_cluster_id", "compute_member_id", "format_id"]


def compute_member_id(
    peer_urls: Iterable[str], token: str, added_at_unix: int | None = None
) -> int:
    """Return the 64-bit member ID etcd assigns to a member with these peer URLs.

    ``added_at_unix`` is set only for members added to a running cluster (etcd's
    ``member add``); members named in ``--initial-cluster`` have none.
    """
    data = "".join(sorted(peer_urls)) + token
    if added_at_unix is not None:
        data += str(added_at_unix)
    digest = hashlib.sha1(data.encode("utf-8")).digest()
    return int(struct.unpack(">Q", digest[:8])[0])


def compute_cluster_id(member_ids: Iterable[int]) -> int:
    """Return the 64-bit cluster ID etcd derives from the bootstrap members' IDs."""
    ids = sorted(member_ids)
    packed = b"".join(struct.pack(">Q", i) for i in ids)
    digest = hashlib.sha1(packed).digest()
    return int(struct.unpack(">Q", digest[:8])[0])


def format_id(value: int) -> str:
    """Format an ID as etcd prints it: lower-case hex without leading zeros."""
    return format(value, "x")
