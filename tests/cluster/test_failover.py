"""Failover of a 3-member cluster under load: SIGKILL the leader while 4 writers put keys
through different members and a prefix watcher streams from each member.

What must hold (issue 4): a new leader is elected within a bound and writes go on; every
acknowledged write is there afterwards (linearizable read) with the revision it was
acknowledged at; each surviving watcher saw exactly the history (revision order, no gap, no
duplicate, the same set of (key, revision) as the final key space); the watcher whose member
died resumes on another member from its last revision + 1 and its combined stream has the same
properties; the killed member, restarted, catches up to the same revision and HashKV.

Every writer puts distinct keys exactly once (an unacknowledged put is not retried), and
nothing else writes in the cluster, so the history is "one put of a fresh key per revision"
and the final key space determines it completely.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.testing.cluster import ProcessCluster, ProcessMember

PREFIX = b"fo/"
PREFIX_END = b"fo0"
WRITERS = 4
MAX_PUTS_PER_WRITER = 3000
ELECTION_BOUND_S = 20.0  # generous: 2 shared cores; the election timeout is 0.5 s


@dataclass
class Writer:
    """Puts ``fo/w<n>/<i>`` through its own member first, rotating on errors."""

    index: int
    members: list[ProcessMember]
    stop: threading.Event
    acked: dict[bytes, int] = field(default_factory=dict)  # key -> revision acknowledged
    ack_times: list[float] = field(default_factory=list)
    errors: int = 0

    def run(self) -> None:
        channels = [m.channel() for m in self.members]
        try:
            target = self.index % len(self.members)
            for i in range(MAX_PUTS_PER_WRITER):
                if self.stop.is_set():
                    return
                key = b"%sw%d/%05d" % (PREFIX, self.index, i)
                try:
                    resp = pbg.KVStub(channels[target]).Put(
                        pb.PutRequest(key=key, value=b"v%d" % i), timeout=2.0
                    )
                except grpc.RpcError:
                    self.errors += 1  # outcome unknown: the key may or may not exist
                    target = (target + 1) % len(self.members)
                    time.sleep(0.05)
                    continue
                self.acked[key] = resp.header.revision
                self.ack_times.append(time.monotonic())
        finally:
            for ch in channels:
                ch.close()


@dataclass
class PrefixWatcher:
    """A gRPC Watch stream on ``PREFIX`` from revision 1; on a broken stream it resumes on the
    next member (in list order) from one past the last revision it received."""

    members: list[ProcessMember]
    start: int
    stop: threading.Event
    events: list[tuple[bytes, int]] = field(default_factory=list)  # (key, mod_revision)
    streams: list[str] = field(default_factory=list)  # member of each stream created
    created_revisions: list[int] = field(default_factory=list)
    _call: grpc.Future | None = None

    @property
    def last_revision(self) -> int:
        return self.events[-1][1] if self.events else 0

    def run(self) -> None:
        target = self.start
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            m = self.members[target]
            from_rev = self.last_revision + 1 if self.events else 1
            try:
                self._stream(m, from_rev)
            except grpc.RpcError:
                pass
            if self.stop.is_set():
                return
            target = (target + 1) % len(self.members)
            time.sleep(0.1)

    def _stream(self, m: ProcessMember, from_rev: int) -> None:
        reqs: queue.Queue[pb.WatchRequest | None] = queue.Queue()
        reqs.put(pb.WatchRequest(create_request=pb.WatchCreateRequest(
            key=PREFIX, range_end=PREFIX_END, start_revision=from_rev)))

        def requests() -> Iterator[pb.WatchRequest]:
            while True:
                r = reqs.get()
                if r is None:
                    return
                yield r

        with m.channel() as ch:
            call = pbg.WatchStub(ch).Watch(requests())
            self._call = call
            try:
                for resp in call:
                    if resp.created:
                        self.streams.append(m.client_addr)
                        self.created_revisions.append(resp.header.revision)
                    for ev in resp.events:
                        self.events.append((ev.kv.key, ev.kv.mod_revision))
                    if resp.canceled:
                        raise AssertionError(f"watch canceled: {resp.cancel_reason}")
            finally:
                reqs.put(None)
                call.cancel()

    def cancel(self) -> None:
        self.stop.set()
        if self._call is not None:
            self._call.cancel()


def _range_all(m: ProcessMember, serializable: bool = False) -> pb.RangeResponse:
    with m.channel() as ch:
        resp: pb.RangeResponse = pbg.KVStub(ch).Range(
            pb.RangeRequest(key=PREFIX, range_end=PREFIX_END, serializable=serializable),
            timeout=10,
        )
        return resp


def _hash_kv(m: ProcessMember, revision: int) -> pb.HashKVResponse:
    with m.channel() as ch:
        resp: pb.HashKVResponse = pbg.MaintenanceStub(ch).HashKV(
            pb.HashKVRequest(revision=revision), timeout=10
        )
        return resp


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _check_history(name: str, events: list[tuple[bytes, int]], final: set[tuple[bytes, int]],
                   final_rev: int) -> None:
    revs = [r for _, r in events]
    assert revs == sorted(set(revs)), f"{name}: events out of order or duplicated"
    assert set(events) == final, (
        f"{name}: missing {sorted(final - set(events))[:5]}, "
        f"extra {sorted(set(events) - final)[:5]}"
    )
    assert revs[-1] == final_rev


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    c = ProcessCluster(tmp_path, 3)
    c.start_all()
    try:
        yield c
    finally:
        c.stop_all()


@pytest.mark.timeout(240)
def test_leader_sigkill_under_writes_and_watches(cluster: ProcessCluster) -> None:
    leader = cluster.wait_ready(timeout=60)
    members = cluster.members
    killed_index = members.index(leader)
    stop_writers = threading.Event()
    stop_watchers = threading.Event()
    watchers = [PrefixWatcher(members, i, stop_watchers) for i in range(len(members))]
    writers = [Writer(i, members, stop_writers) for i in range(WRITERS)]
    threads = [threading.Thread(target=w.run, daemon=True) for w in watchers]
    for t in threads:
        t.start()
    _wait(lambda: all(w.created_revisions for w in watchers), 30, "watchers created")
    wthreads = [threading.Thread(target=w.run, daemon=True) for w in writers]
    try:
        for t in wthreads:
            t.start()
        _wait(lambda: sum(len(w.acked) for w in writers) >= 40, 60, "writes before the kill")

        killed_at = time.monotonic()
        cluster.stop(leader, signal.SIGKILL)
        new_leader = cluster.wait_ready(timeout=ELECTION_BOUND_S + 10)
        elected_after = time.monotonic() - killed_at
        assert new_leader is not leader
        assert elected_after < ELECTION_BOUND_S, f"new leader after {elected_after:.1f}s"
        # writes continue: every writer gets acknowledgements after the election
        elected_at = time.monotonic()
        _wait(lambda: all(sum(t > elected_at for t in w.ack_times) >= 10 for w in writers),
              60, "each writer to be acknowledged 10 times after the election")
    finally:
        stop_writers.set()
        for t in wthreads:
            t.join(30)
    acked = {k: r for w in writers for k, r in w.acked.items()}
    assert len(acked) >= 80

    # every acknowledged write is there, at the revision it was acknowledged at (read once
    # the revision is stable: a put whose answer timed out may still commit just after)
    final = _range_all(new_leader)
    for _ in range(20):
        time.sleep(1.0)
        again = _range_all(new_leader)
        if again.header.revision == final.header.revision:
            break
        final = again
    final_rev = final.header.revision
    got = {kv.key: kv.mod_revision for kv in final.kvs}
    missing = sorted(set(acked) - set(got))
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    assert all(got[k] == r for k, r in acked.items())
    assert all(kv.version == 1 for kv in final.kvs)  # one put per key: no hidden retries
    final_set = {(kv.key, kv.mod_revision) for kv in final.kvs}
    # nothing else writes: the history is exactly these puts, one per revision
    assert sorted(r for _, r in final_set) == list(range(final_rev - len(final_set) + 1,
                                                         final_rev + 1))

    try:
        _wait(lambda: all(w.last_revision >= final_rev for w in watchers), 60,
              "every watcher to reach the final revision")
    finally:
        for w in watchers:
            w.cancel()
        for t in threads:
            t.join(10)
    for i, w in enumerate(watchers):
        _check_history(f"watcher {i}", w.events, final_set, final_rev)
        if i == killed_index:
            # resumed on another member from last revision + 1
            assert len(w.streams) >= 2 and w.streams[0] == members[i].client_addr
            assert members[i].client_addr not in w.streams[1:]
        else:
            assert w.streams == [members[i].client_addr], f"watcher {i} reconnected"

    # the killed member comes back and catches up: same revision, same HashKV
    cluster.start(leader)
    cluster.wait_ready(timeout=60)
    _wait(lambda: _range_all(leader, serializable=True).header.revision >= final_rev, 60,
          "the restarted member to catch up")
    back = _range_all(leader, serializable=True)
    assert {(kv.key, kv.mod_revision) for kv in back.kvs} == final_set
    hashes = {m.name: _hash_kv(m, final_rev) for m in members}
    print(f"failover: new leader after {elected_after:.2f}s, {len(acked)} acked writes, "
          f"{sum(w.errors for w in writers)} failed puts, final revision {final_rev}, "
          f"killed member's watcher used {watchers[killed_index].streams}")
    assert len({h.hash for h in hashes.values()}) == 1, {n: h.hash for n, h in hashes.items()}
    assert len({h.compact_revision for h in hashes.values()}) == 1
