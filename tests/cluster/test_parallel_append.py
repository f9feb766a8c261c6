"""Three member processes with parallel append on and off (``KEELSON_PARALLEL_APPEND``): the
switch reaches the members (they say so in their log when it is off, and only then), writes
replicate, and a leader SIGKILLed while writers keep putting loses no acknowledged write; the
killed member, restarted, catches up to the same keys. The full failover checks (watchers,
revisions, HashKV) are tests/cluster/test_failover.py, which runs in either mode with the
variable set.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.server.etcdserver import PARALLEL_APPEND_ENV
from keelson.testing.cluster import ProcessCluster, ProcessMember

NOTICE = "parallel append off"
PER_WRITER = 400


def _keys(m: ProcessMember, serializable: bool = False) -> set[bytes]:
    with m.channel() as ch:
        r = pbg.KVStub(ch).Range(
            pb.RangeRequest(key=b"w", range_end=b"x", keys_only=True, serializable=serializable),
            timeout=10,
        )
    return {kv.key for kv in r.kvs}


def _writer(index: int, members: list[ProcessMember], stop: threading.Event,
            acked: list[bytes]) -> None:
    channels = [m.channel() for m in members]
    target = index % len(members)
    try:
        for i in range(PER_WRITER):
            if stop.is_set():
                return
            key = b"w%d/%04d" % (index, i)
            try:
                pbg.KVStub(channels[target]).Put(pb.PutRequest(key=key, value=b"v"), timeout=5)
                acked.append(key)
            except grpc.RpcError:
                target = (target + 1) % len(members)  # not acknowledged: not retried
                time.sleep(0.05)
    finally:
        for ch in channels:
            ch.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_leader_kill_under_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel: bool
) -> None:
    monkeypatch.setenv(PARALLEL_APPEND_ENV, "1" if parallel else "0")
    cluster = ProcessCluster(tmp_path, 3)
    cluster.start_all()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        leader = cluster.wait_ready(60)
        for m in cluster.members:
            assert (NOTICE in cluster.log_text(m)) != parallel, cluster.log_text(m)[-2000:]
        acked: list[list[bytes]] = [[] for _ in range(3)]
        threads = [
            threading.Thread(target=_writer, args=(i, cluster.members, stop, acked[i]))
            for i in range(3)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while sum(map(len, acked)) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(map(len, acked)) >= 150, "writes did not get going"
        cluster.stop(leader, signal.SIGKILL)
        new_leader = cluster.wait_ready(60)
        assert new_leader is not leader
        before = sum(map(len, acked))
        deadline = time.monotonic() + 60
        while sum(map(len, acked)) < before + 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(map(len, acked)) >= before + 100, "writes did not go on after the kill"
        stop.set()
        for t in threads:
            t.join(30)
        everything = {k for keys in acked for k in keys}
        present = _keys(new_leader)
        assert everything <= present, sorted(everything - present)[:10]
        cluster.start(leader)
        cluster.wait_ready(60)
        deadline = time.monotonic() + 60
        while _keys(leader, serializable=True) != present and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _keys(leader, serializable=True) == present
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        cluster.stop_all()
