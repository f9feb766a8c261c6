"""The cluster's member list, applied through raft conf-change entries.

Theory of operation. ``MemberTable`` holds the members (etcd's ``Member``: id, name, peer
and client URLs, learner flag) and keeps them in the backend's ``members`` bucket, written
in the same apply txn as the conf change, so a restarted member knows the membership as of
its consistent index. A conf-change entry's context is ``request id (8 bytes) + Member``
protobuf, so the proposer's waiter is found by request id like any other request.

The ``members`` bucket holds one key per member (its 8-byte id -> ``Member``) and one key
per removed member (``removed/`` + 8-byte id -> empty): etcd never lets a removed id back,
so the ids survive restarts and travel in snapshots, and the peer transport keeps refusing
them. ``encode_member_list``/``decode_member_list`` are the member list a running member
hands to a joining one over the peer transport's discovery channel.
"""

from __future__ import annotations

import struct

from keelson.backend import Backend, WriteTxn
from keelson.proto.etcdserverpb import rpc_pb2 as pb

MEMBERS_BUCKET = b"members"
_ID = struct.Struct(">Q")
_REMOVED_PREFIX = b"removed/"


def encode_context(request_id: int, member: pb.Member) -> bytes:
    return _ID.pack(request_id) + member.SerializeToString()


def decode_context(data: bytes) -> tuple[int, pb.Member]:
    """Raises ValueError on malformed input."""
    if len(data) < _ID.size:
        raise ValueError("conf change context too short")
    m = pb.Member()
    try:
        m.ParseFromString(data[_ID.size :])
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError
        raise ValueError(f"bad member in conf change: {exc}") from None
    return _ID.unpack_from(data)[0], m


class MemberTable:
    def __init__(self, backend: Backend) -> None:
        self.members: dict[int, pb.Member] = {}
        self.removed: set[int] = set()
        with backend.read() as tx:
            for k, v in tx.range(MEMBERS_BUCKET, b"", None):
                if k.startswith(_REMOVED_PREFIX) and len(k) == len(_REMOVED_PREFIX) + _ID.size:
                    self.removed.add(_ID.unpack_from(k, len(_REMOVED_PREFIX))[0])
                    continue
                m = pb.Member()
                m.ParseFromString(v)
                self.members[_ID.unpack(k)[0]] = m

    def put(self, btx: WriteTxn | None, m: pb.Member) -> None:
        self.members[m.ID] = m
        if btx is not None:
            btx.put(MEMBERS_BUCKET, _ID.pack(m.ID), m.SerializeToString())

    def remove(self, btx: WriteTxn | None, member_id: int) -> None:
        self.members.pop(member_id, None)
        self.removed.add(member_id)
        if btx is not None:
            btx.delete(MEMBERS_BUCKET, _ID.pack(member_id))
            btx.put(MEMBERS_BUCKET, _REMOVED_PREFIX + _ID.pack(member_id), b"")

    def sorted(self) -> list[pb.Member]:
        return [self.members[i] for i in sorted(self.members)]

    def url_in_use(self, urls: list[str], except_id: int = 0) -> bool:
        wanted = set(urls)
        return any(
            mid != except_id and wanted & set(m.peerURLs) for mid, m in self.members.items()
        )


def encode_member_list(cluster_id: int, members: list[pb.Member]) -> bytes:
    """The discovery answer's member list: a ``MemberListResponse`` (cluster id in the
    header), the same message ``etcdctl member list`` reads."""
    resp = pb.MemberListResponse(members=members)
    resp.header.cluster_id = cluster_id
    return bytes(resp.SerializeToString())


def decode_member_list(data: bytes) -> tuple[int, list[pb.Member]]:
    """(cluster id, members) from ``encode_member_list``'s bytes; ValueError if malformed."""
    resp = pb.MemberListResponse()
    try:
        resp.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError
        raise ValueError(f"bad member list: {exc}") from None
    return resp.header.cluster_id, list(resp.members)
