"""Killing every member while the backend commit is deferred loses no acknowledged write.

With ``--backend-batch-interval 1h`` the backends commit only on snapshots (every 25
entries here) and at stop, so a SIGKILL leaves each member's backend behind its WAL: the
restart must re-apply the entries above the backend's consistent index from the WAL (kept
since the last snapshot, which flushed the backend before releasing segments) and reach the
same state on every member."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.testing.cluster import ProcessCluster, ProcessMember

ARGS = ("--backend-batch-interval", "1h", "--snapshot-count", "25",
        "--experimental-snapshot-catchup-entries", "5")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    c = ProcessCluster(tmp_path, 3, extra_args=ARGS)
    c.start_all()
    try:
        yield c
    finally:
        c.stop_all()


def _all(m: ProcessMember) -> pb.RangeResponse:
    with m.channel() as ch:
        resp: pb.RangeResponse = pbg.KVStub(ch).Range(
            pb.RangeRequest(key=b"\0", range_end=b"\0", serializable=True), timeout=10
        )
        return resp


def _hash(m: ProcessMember, rev: int) -> int:
    with m.channel() as ch:
        resp = pbg.MaintenanceStub(ch).HashKV(pb.HashKVRequest(revision=rev), timeout=10)
        return int(resp.hash)


@pytest.mark.timeout(240)
def test_sigkill_with_deferred_backend_commits_loses_nothing(cluster: ProcessCluster) -> None:
    leader = cluster.wait_ready(timeout=60)
    with leader.channel() as ch:
        kv = pbg.KVStub(ch)
        lease_id = pbg.LeaseStub(ch).LeaseGrant(pb.LeaseGrantRequest(TTL=600), timeout=10).ID
        for i in range(90):  # past three snapshots, with a tail only in the WAL
            kv.Put(pb.PutRequest(key=b"k/%03d" % i, value=b"v%d" % i,
                                 lease=lease_id if i % 10 == 0 else 0), timeout=10)
        kv.DeleteRange(pb.DeleteRangeRequest(key=b"k/020", range_end=b"k/030"), timeout=10)
        last = kv.Put(pb.PutRequest(key=b"last", value=b"x"), timeout=10)
    before = _all(leader)
    assert before.count == 90 - 10 + 1
    for m in cluster.members:
        cluster.stop(m, signal.SIGKILL)
    for m in cluster.members:
        cluster.start(m)
    lead = cluster.wait_ready(timeout=60)
    with lead.channel() as ch:  # a linearizable read: every member has applied `last` after
        pbg.KVStub(ch).Range(pb.RangeRequest(key=b"last"), timeout=10)
        ttl = pbg.LeaseStub(ch).LeaseTimeToLive(
            pb.LeaseTimeToLiveRequest(ID=lease_id, keys=True), timeout=10)
    assert sorted(ttl.keys) == [b"k/%03d" % i for i in range(0, 90, 10) if not 20 <= i < 30]
    rev = last.header.revision
    hashes = set()
    for m in cluster.members:
        for _ in range(100):
            got = _all(m)
            if got.header.revision >= rev:
                break
            time.sleep(0.1)
        assert [(x.key, x.value, x.mod_revision, x.lease) for x in got.kvs] == [
            (x.key, x.value, x.mod_revision, x.lease) for x in before.kvs]
        hashes.add(_hash(m, rev))
    assert len(hashes) == 1
