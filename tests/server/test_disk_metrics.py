"""The fsync latency histograms: bucket edges as Prometheus' ``le`` (inclusive), and the
WAL and backend reporting every durable write of a real member."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server.disk_metrics import ETCD_DISK_BUCKETS, DurationHistogram
from keelson.server.etcdserver import EtcdServer
from tests.server.support import single_member_config


def test_buckets_are_etcds_and_upper_bounds_are_inclusive() -> None:
    assert ETCD_DISK_BUCKETS[0] == 0.001 and len(ETCD_DISK_BUCKETS) == 14
    assert ETCD_DISK_BUCKETS[-1] == pytest.approx(8.192)
    h = DurationHistogram((0.1, 0.2))
    for v in (0.05, 0.1, 0.15, 0.2, 0.3):
        h.observe(v)
    snap = h.snapshot()
    assert snap.cumulative == (2, 4, 5)
    assert snap.count == 5 and snap.total == pytest.approx(0.8)
    with pytest.raises(ValueError):
        DurationHistogram((0.2, 0.1))
    with pytest.raises(ValueError):
        DurationHistogram(())


def test_a_member_observes_its_wal_fsyncs_and_backend_commits(tmp_path: Path) -> None:
    async def main() -> None:
        s = EtcdServer(single_member_config(tmp_path))
        await s.start()
        try:
            await s.put(pb.PutRequest(key=b"a", value=b"1"))
            fsyncs = s.wal_fsync_seconds.snapshot().count
            commits = s.backend_commit_seconds.snapshot().count
            for i in range(3):
                await s.put(pb.PutRequest(key=b"a", value=b"%d" % i))
            assert s.wal_fsync_seconds.snapshot().count >= fsyncs + 3
            s.backend.flush()
            after = s.backend_commit_seconds.snapshot()
            assert after.count == commits + 1
            assert 0 < after.total < 60
        finally:
            await s.stop()

    asyncio.run(main())
