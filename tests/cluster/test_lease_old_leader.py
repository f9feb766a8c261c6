"""A paused old leader must not revoke leases its successor kept alive.

Found by the torture suite (seed 1001, ``pause-leader``): the leader is stopped (SIGSTOP: a
long fsync or a starved CPU look the same) for longer than a lease's TTL while a client keeps
the lease alive through a follower, which forwards the keep-alives to the new leader. When
the old leader resumes, its ticker runs before it reads its successor's messages: it still
believes it leads, finds the lease expired by its own stale deadline and proposes a revoke;
by the time the proposal is flushed it is a follower, so raft forwards the revoke to the new
leader, which commits it, and the keys vanish while every keep-alive succeeded. etcd had the
same bug (etcd-io/etcd#12528, #15247), fixed by confirming leadership before revoking
(etcd-io/etcd#16822); keelson now does the same with a ReadIndex round.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.testing.cluster import ProcessCluster

TTL = 2
PAUSE_S = 5.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    c = ProcessCluster(tmp_path, 3)
    try:
        c.start_all()
        yield c
    finally:
        for m in c.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGCONT)
        c.stop_all()


def test_resumed_old_leader_does_not_revoke_a_kept_alive_lease(cluster: ProcessCluster) -> None:
    leader = cluster.wait_ready(60)
    follower = next(m for m in cluster.members if m is not leader)
    ch = follower.channel()
    lease = pbg.LeaseStub(ch)  # type: ignore[no-untyped-call]
    kv = pbg.KVStub(ch)  # type: ignore[no-untyped-call]
    lease.LeaseGrant(pb.LeaseGrantRequest(ID=77, TTL=TTL), timeout=10)
    kv.Put(pb.PutRequest(key=b"held", value=b"x", lease=77), timeout=10)

    stop = threading.Event()
    answers: list[int] = []

    def keep_alive() -> None:
        while not stop.wait(0.25):
            try:
                call = lease.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=77)]), timeout=1.0)
                answers.append(int(next(iter(call)).TTL))
                call.cancel()
            except (grpc.RpcError, StopIteration):
                pass  # no leader for a moment: the lease has TTL to spare

    t = threading.Thread(target=keep_alive, daemon=True)
    t.start()
    try:
        time.sleep(1.0)
        assert leader.proc is not None
        leader.proc.send_signal(signal.SIGSTOP)
        time.sleep(PAUSE_S)  # a new leader takes over the keep-alives meanwhile
        leader.proc.send_signal(signal.SIGCONT)
        time.sleep(3.0)  # the old leader's ticker has run with its stale lease deadlines
        resp = kv.Range(pb.RangeRequest(key=b"held"), timeout=10)
    finally:
        stop.set()
        t.join(5)
    assert answers and 0 not in answers, f"a keep-alive found the lease gone: {answers}"
    assert len(resp.kvs) == 1, "the key of a lease kept alive all along was deleted"
