"""convert.put_from_pb / put_to_pb: every field reaches the other side.

``put_from_pb`` passes PutRequest's fields by position (the apply path's speed), so a
reordering of ``mvcc.PutRequest``'s fields must fail here rather than swap values.
"""

from __future__ import annotations

import itertools

import pytest

from keelson import mvcc
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server import convert


@pytest.mark.parametrize(
    ("lease", "prev_kv", "ignore_value", "ignore_lease"),
    list(itertools.product([0, 7, -3], [False, True], [False, True], [False, True])),
)
def test_put_from_pb_maps_every_field(
    lease: int, prev_kv: bool, ignore_value: bool, ignore_lease: bool
) -> None:
    r = pb.PutRequest(key=b"k", value=b"v", lease=lease, prev_kv=prev_kv,
                      ignore_value=ignore_value, ignore_lease=ignore_lease)
    assert convert.put_from_pb(r) == mvcc.PutRequest(
        key=b"k", value=b"v", lease=lease, prev_kv=prev_kv,
        ignore_value=ignore_value, ignore_lease=ignore_lease,
    )


def test_put_to_pb() -> None:
    header = pb.ResponseHeader(cluster_id=1, member_id=2, revision=9, raft_term=3)
    out = convert.put_to_pb(mvcc.PutResponse(9), header)
    assert out == pb.PutResponse(header=header)
    assert not out.HasField("prev_kv")
    prev = mvcc.KeyValue(b"k", 2, 5, 3, b"old", 4)
    out = convert.put_to_pb(mvcc.PutResponse(9, prev), header)
    assert out.prev_kv == pb.PutResponse(prev_kv=convert.kv_to_pb(prev)).prev_kv
    assert (out.prev_kv.key, out.prev_kv.create_revision, out.prev_kv.mod_revision,
            out.prev_kv.version, out.prev_kv.value, out.prev_kv.lease) == (
        b"k", 2, 5, 3, b"old", 4)
