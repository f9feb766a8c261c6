"""The member table: removed ids survive a reopen (etcd never lets a removed id back), and
the discovery member list round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from keelson.backend import Backend
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server.membership import (
    MEMBERS_BUCKET,
    MemberTable,
    decode_member_list,
    encode_member_list,
)


def test_removed_ids_are_persisted_and_not_read_back_as_members(tmp_path: Path) -> None:
    be = Backend(str(tmp_path / "db"), buckets=(MEMBERS_BUCKET,))
    table = MemberTable(be)
    with be.write() as btx:
        table.put(btx, pb.Member(ID=1, name="a", peerURLs=["http://a:2380"]))
        table.put(btx, pb.Member(ID=2, name="b", peerURLs=["http://b:2380"]))
    with be.write() as btx:
        table.remove(btx, 2)
    again = MemberTable(be)
    assert sorted(again.members) == [1]
    assert again.removed == {2}
    be.close()


def test_member_list_round_trip_and_garbage() -> None:
    ms = [pb.Member(ID=7, name="m4", peerURLs=["http://x:1"], isLearner=True)]
    assert decode_member_list(encode_member_list(0xC1, ms)) == (0xC1, ms)
    with pytest.raises(ValueError, match="bad member list"):
        decode_member_list(b"\xff\xff\xff")
