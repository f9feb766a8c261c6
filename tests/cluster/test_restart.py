"""Whole-cluster restart: stop all three members (SIGTERM, or SIGKILL), start them again
from their data dirs; all data and leases are back, with etcd 3.4's lease semantics.

etcd 3.4 without ``--experimental-enable-lease-checkpoint`` keeps no remaining TTL across a
restart: the new leader's lessor gives every lease its full granted TTL again (plus the
election timeout as grace, which a TimeToLive rounded down to whole seconds does not show).
Checked against a real etcd 3.4: a 30 s lease at 23 s remaining reads 30 s right after the
restart, 28 s two seconds later. So after a restart the remaining TTL is back near the granted
TTL and never above it; a short lease then expires about its TTL after the election and its
keys are deleted.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.testing.cluster import ProcessCluster, ProcessMember

LONG_TTL = 30
SHORT_TTL = 5  # long enough to read it back after the restart on a loaded machine


def _kv(m: ProcessMember) -> tuple[grpc.Channel, pbg.KVStub, pbg.LeaseStub]:
    ch = m.channel()
    return ch, pbg.KVStub(ch), pbg.LeaseStub(ch)


def _range(m: ProcessMember, key: bytes, end: bytes) -> pb.RangeResponse:
    with m.channel() as ch:
        resp: pb.RangeResponse = pbg.KVStub(ch).Range(
            pb.RangeRequest(key=key, range_end=end), timeout=10
        )
        return resp


def _ttl(m: ProcessMember, lease_id: int) -> pb.LeaseTimeToLiveResponse:
    with m.channel() as ch:
        resp: pb.LeaseTimeToLiveResponse = pbg.LeaseStub(ch).LeaseTimeToLive(
            pb.LeaseTimeToLiveRequest(ID=lease_id, keys=True), timeout=10
        )
        return resp


def _keep_alive(m: ProcessMember, lease_id: int) -> int:
    with m.channel() as ch:
        (reply,) = list(pbg.LeaseStub(ch).LeaseKeepAlive(
            iter([pb.LeaseKeepAliveRequest(ID=lease_id)]), timeout=10))
        return int(reply.TTL)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    c = ProcessCluster(tmp_path, 3)
    c.start_all()
    try:
        yield c
    finally:
        c.stop_all()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_full_restart_brings_back_data_and_leases(cluster: ProcessCluster, sig: int) -> None:
    leader = cluster.wait_ready(timeout=60)
    ch, kv, lease = _kv(leader)
    with ch:
        for i in range(50):
            kv.Put(pb.PutRequest(key=b"data/%03d" % i, value=b"v%d" % i), timeout=10)
        kv.DeleteRange(pb.DeleteRangeRequest(key=b"data/010", range_end=b"data/020"), timeout=10)
        long_id = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=LONG_TTL), timeout=10).ID
        short_id = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=SHORT_TTL), timeout=10).ID
        for i in range(3):
            kv.Put(pb.PutRequest(key=b"long/%d" % i, value=b"l", lease=long_id), timeout=10)
            kv.Put(pb.PutRequest(key=b"short/%d" % i, value=b"s", lease=short_id), timeout=10)
    # let the long lease run down a little, keeping the short one alive meanwhile
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        _keep_alive(leader, short_id)
        time.sleep(0.5)
    before_ttl = _ttl(leader, long_id).TTL
    assert before_ttl <= LONG_TTL - 3, before_ttl
    before = _range(leader, b"\0", b"\0")
    assert before.count == 40 + 6
    assert _keep_alive(leader, short_id) == SHORT_TTL

    for m in cluster.members:
        cluster.stop(m, sig)
    for m in cluster.members:
        cluster.start(m)
    lead = cluster.wait_ready(timeout=60)
    ready_at = time.monotonic()

    # leases are back; the TTL was reset to the granted one, not beyond it
    after_long = _ttl(lead, long_id)
    after_short = _ttl(lead, short_id)
    assert after_long.grantedTTL == LONG_TTL and after_short.grantedTTL == SHORT_TTL
    assert LONG_TTL - 3 <= after_long.TTL <= LONG_TTL, (before_ttl, after_long.TTL)
    assert 0 < after_short.TTL <= SHORT_TTL, after_short.TTL
    assert sorted(after_long.keys) == [b"long/%d" % i for i in range(3)]
    with lead.channel() as ch:
        listed = pbg.LeaseStub(ch).LeaseLeases(pb.LeaseLeasesRequest(), timeout=10)
    assert sorted(x.ID for x in listed.leases) == sorted([long_id, short_id])

    # all data is back on every member, at the same revision
    for m in cluster.members:
        got = _range(m, b"\0", b"\0")
        assert [(x.key, x.value, x.mod_revision) for x in got.kvs if not x.key.startswith(
            b"short/")] == [(x.key, x.value, x.mod_revision) for x in before.kvs
                            if not x.key.startswith(b"short/")]
        assert got.header.revision >= before.header.revision

    # the short lease expires after the restart and takes its keys with it
    expiry_deadline = time.monotonic() + 30
    while _range(lead, b"short/", b"short0").count:
        assert time.monotonic() < expiry_deadline, "short lease did not expire after restart"
        time.sleep(0.2)
    assert _ttl(lead, short_id).TTL == -1
    print(f"restart: long lease TTL {before_ttl}s before, {after_long.TTL}s after; short "
          f"lease gone {time.monotonic() - ready_at:.1f}s after the cluster was ready")
    for m in cluster.members:
        m_got = _range(m, b"\0", b"\0")
        assert m_got.count == 40 + 3
        assert not [x for x in m_got.kvs if x.key.startswith(b"short/")]
    assert _ttl(lead, long_id).TTL > 0
