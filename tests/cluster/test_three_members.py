"""Three member processes: replication, forwarding to the leader, keep-alive through a
follower, etcdctl and MoveLeader. Leader crash under load: test_failover.py; full restart:
test_restart.py."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.testing.cluster import ProcessCluster, ProcessMember


def _put(m: ProcessMember, key: bytes, value: bytes, timeout: float = 3.0) -> pb.PutResponse:
    with m.channel() as ch:
        resp: pb.PutResponse = pbg.KVStub(ch).Put(
            pb.PutRequest(key=key, value=value), timeout=timeout
        )
        return resp


def _get(
    m: ProcessMember, key: bytes, end: bytes = b"", serializable: bool = False
) -> pb.RangeResponse:
    with m.channel() as ch:
        resp: pb.RangeResponse = pbg.KVStub(ch).Range(
            pb.RangeRequest(key=key, range_end=end, serializable=serializable), timeout=5
        )
        return resp


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = ProcessCluster(tmp_path, 3)
    c.start_all()
    try:
        yield c
    finally:
        c.stop_all()


@pytest.mark.timeout(60)
def test_replication_and_forwarding(cluster: ProcessCluster) -> None:
    leader = cluster.wait_ready()
    for i in range(10):
        _put(leader, b"k%02d" % i, b"v%d" % i)
    for m in cluster.members:
        assert _get(m, b"k", b"l").count == 10  # linearizable read on every member
    # a write through a follower is forwarded to the leader
    follower = next(m for m in cluster.members if m is not leader)
    _put(follower, b"via-follower", b"1")
    assert _get(leader, b"via-follower").count == 1
    # the leader crash under writes is tests/cluster/test_failover.py; the full restart is
    # tests/cluster/test_restart.py


@pytest.mark.timeout(60)
def test_leases_keepalive_via_follower(cluster: ProcessCluster) -> None:
    leader = cluster.wait_ready()
    follower = next(m for m in cluster.members if m is not leader)
    with leader.channel() as ch:
        lease = pbg.LeaseStub(ch).LeaseGrant(pb.LeaseGrantRequest(TTL=30), timeout=5)
        pbg.KVStub(ch).Put(pb.PutRequest(key=b"leased", value=b"1", lease=lease.ID), timeout=5)
    with follower.channel() as ch:
        replies = list(
            pbg.LeaseStub(ch).LeaseKeepAlive(
                iter([pb.LeaseKeepAliveRequest(ID=lease.ID)]), timeout=5
            )
        )
        assert replies and replies[0].TTL == 30
        ttl = pbg.LeaseStub(ch).LeaseTimeToLive(
            pb.LeaseTimeToLiveRequest(ID=lease.ID, keys=True), timeout=5
        )
        assert list(ttl.keys) == [b"leased"]
        # leases across a full restart: tests/cluster/test_restart.py
        pbg.LeaseStub(ch).LeaseRevoke(pb.LeaseRevokeRequest(ID=lease.ID), timeout=5)
    for m in cluster.members:
        assert _get(m, b"leased").count == 0


@pytest.mark.timeout(60)
def test_etcdctl_against_cluster(cluster: ProcessCluster) -> None:
    import shutil
    import subprocess

    exe = shutil.which("etcdctl")
    if exe is None:
        pytest.skip("etcdctl not installed")
    cluster.wait_ready()
    eps = ",".join(m.client_addr for m in cluster.members)
    env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}

    def ctl(*args: str) -> str:
        out = subprocess.run(
            [exe, "--endpoints", eps, *args], env=env, capture_output=True, timeout=20
        )
        assert out.returncode == 0, out.stderr.decode()
        return out.stdout.decode()

    leader = cluster.wait_ready()
    follower = next(m for m in cluster.members if m is not leader)
    fid = cluster.status(follower).header.member_id  # type: ignore[union-attr]
    with follower.channel() as ch:
        with pytest.raises(grpc.RpcError) as ei:
            pbg.MaintenanceStub(ch).MoveLeader(pb.MoveLeaderRequest(targetID=fid), timeout=5)
        assert ei.value.details() == "etcdserver: not leader"
    with leader.channel() as ch:
        pbg.MaintenanceStub(ch).MoveLeader(pb.MoveLeaderRequest(targetID=fid), timeout=10)
    assert cluster.wait_ready() is follower
    ctl("put", "foo", "bar")
    assert ctl("get", "foo").split() == ["foo", "bar"]
    assert len(ctl("member", "list").strip().splitlines()) == 3
    assert ctl("endpoint", "status").count("3.4.0") == 3

