"""Members added with the real ``etcdctl member add`` join a running keelson cluster over the
network: by log replay, by snapshot, as a learner then promoted; removed members exit; a
member that was never added, or was already started, refuses to start; a restart ignores a
changed ``--initial-cluster``."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.testing.cluster import ProcessCluster, ProcessMember, free_port
from keelson.testing.etcd import EtcdctlResult, etcdctl

pytestmark = pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")


def run_ctl(endpoints: str, *args: str) -> EtcdctlResult:
    """The real etcdctl, with a command timeout that tolerates a loaded machine."""
    return etcdctl(endpoints, "--command-timeout=20s", *args, timeout=60)


def ctl(endpoints: str, *args: str) -> str:
    res = run_ctl(endpoints, *args)
    assert res.returncode == 0, f"etcdctl {' '.join(args)}: {res.stderr}"
    return res.stdout


def put_many(m: ProcessMember, prefix: bytes, n: int) -> None:
    with m.channel() as ch:
        kv = pbg.KVStub(ch)
        for i in range(n):
            kv.Put(pb.PutRequest(key=prefix + b"%04d" % i, value=b"v%d" % i), timeout=10)


def serializable_count(m: ProcessMember, prefix: bytes) -> int:
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    try:
        with m.channel() as ch:
            resp = pbg.KVStub(ch).Range(
                pb.RangeRequest(key=prefix, range_end=end, serializable=True, count_only=True),
                timeout=3,
            )
            return int(resp.count)
    except grpc.RpcError:
        return -1


def eventually(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout}s: {what}")
        time.sleep(0.2)


def member_add(c: ProcessCluster, name: str, url: str, *flags: str) -> tuple[int, str]:
    """Run ``etcdctl member add``; (new member id, the ETCD_INITIAL_CLUSTER it printed)."""
    out = ctl(c.endpoints, "member", "add", name, f"--peer-urls={url}", *flags)
    # etcdctl pads the id to 16 hex digits with spaces: "Member  c338025d1470118 added"
    mid = re.search(r"Member\s+([0-9a-f]+) added to cluster", out)
    initial = re.search(r'^ETCD_INITIAL_CLUSTER="([^"]*)"$', out, re.M)
    assert mid and initial, out
    assert 'ETCD_INITIAL_CLUSTER_STATE="existing"' in out
    return int(mid.group(1), 16), initial.group(1)


def revisions(c: ProcessCluster) -> list[int]:
    out = ctl(c.endpoints, "endpoint", "status", "-w", "json")
    return [int(s["Status"]["header"]["revision"]) for s in json.loads(out)]


def members(c: ProcessCluster) -> dict[int, dict[str, object]]:
    out = ctl(c.endpoints, "member", "list", "-w", "json")
    return {int(m["ID"]): m for m in json.loads(out)["members"]}


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessCluster]:
    extra: tuple[str, ...] = getattr(request, "param", ())
    c = ProcessCluster(tmp_path, 3, extra_args=extra)
    c.start_all()
    try:
        c.wait_ready(timeout=60)
        yield c
    finally:
        c.stop_all()


def _join_and_check(c: ProcessCluster, pre: int) -> ProcessMember:
    """Add m4 with etcdctl, start it with what etcdctl printed, check it catches up."""
    leader = c.wait_ready()
    put_many(leader, b"pre/", pre)
    m4 = c.new_member("m4")
    mid, initial = member_add(c, "m4", m4.peer_url)
    assert members(c)[mid].get("name", "") == ""  # unstarted until it publishes
    c.start(m4, "existing", initial_cluster=initial)
    eventually(lambda: serializable_count(m4, b"pre/") == pre, "m4 has the data written before")
    put_many(leader, b"post/", 10)
    eventually(lambda: serializable_count(m4, b"post/") == 10, "m4 has the data written after")
    eventually(lambda: len(set(revisions(c))) == 1 and len(revisions(c)) == 4,
               "endpoint status shows one revision on 4 members")
    eventually(lambda: members(c)[mid].get("name") == "m4", "m4 published its name")
    assert members(c)[mid]["clientURLs"] == [f"http://{m4.client_addr}"]
    assert "joining cluster" in c.log_text(m4)
    return m4


@pytest.mark.timeout(240)
def test_member_add_then_start_catches_up_from_the_log_and_restarts_from_its_data_dir(
    cluster: ProcessCluster,
) -> None:
    m4 = _join_and_check(cluster, pre=30)
    assert "received snapshot" not in cluster.log_text(m4)  # caught up from the log
    # Restart with a changed --initial-cluster and state: the data dir wins.
    cluster.stop(m4)
    bogus = f"elsewhere=http://127.0.0.1:{free_port()}"
    cluster.start(m4, "new", initial_cluster=bogus)
    put_many(cluster.wait_ready(), b"again/", 5)
    eventually(lambda: serializable_count(m4, b"again/") == 5, "restarted m4 follows again")
    assert serializable_count(m4, b"pre/") == 30
    assert "--initial-cluster-state are ignored" in cluster.log_text(m4)
    # Its data dir wiped, m4 may not join again under the same member: refused at start.
    cluster.stop(m4)
    shutil.rmtree(m4.data_dir)
    mid = next(i for i, m in members(cluster).items() if m.get("name") == "m4")
    cluster.start(m4, "existing", initial_cluster=",".join(
        f"{m.name}={m.peer_url}" for m in cluster.members
    ))
    assert cluster.wait_exit(m4) == 1
    assert f"keelson: member {mid:x} has already been bootstrapped" in cluster.log_text(m4)
    assert not (m4.data_dir / "member" / "wal").exists()


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "cluster",
    [("--snapshot-count", "40", "--experimental-snapshot-catchup-entries", "10")],
    indirect=True,
)
def test_member_add_catches_up_by_snapshot_when_the_log_is_compacted(
    cluster: ProcessCluster,
) -> None:
    m4 = _join_and_check(cluster, pre=150)
    assert "received snapshot" in cluster.log_text(m4)


@pytest.mark.timeout(240)
def test_learner_is_promoted_only_once_in_sync(cluster: ProcessCluster) -> None:
    leader = cluster.wait_ready()
    put_many(leader, b"pre/", 20)
    m4 = cluster.new_member("m4")
    mid, initial = member_add(cluster, "m4", m4.peer_url, "--learner")
    assert members(cluster)[mid].get("isLearner") is True
    for m in cluster.running():  # followers forward the promote to the leader, as etcd's do
        early = run_ctl(m.client_addr, "member", "promote", f"{mid:x}")
        assert early.returncode != 0
        assert early.stderr.endswith(
            "Error: etcdserver: can only promote a learner member which is in sync with leader\n"
        ), early.stderr
    cluster.start(m4, "existing", initial_cluster=initial)
    eventually(lambda: serializable_count(m4, b"pre/") == 20, "learner caught up")
    eventually(lambda: members(cluster)[mid].get("name") == "m4", "learner published")

    def promoted() -> bool:
        return run_ctl(cluster.endpoints, "member", "promote", f"{mid:x}").returncode == 0

    eventually(promoted, "promote succeeds once the learner is in sync")
    eventually(lambda: all(not m.get("isLearner", False) for m in members(cluster).values()),
               "every member lists m4 as a voter")
    ctl(m4.client_addr, "put", "from-m4", "1")  # a voter now: writes through it work
    assert ctl(cluster.endpoints, "get", "from-m4", "--print-value-only").strip() == "1"


@pytest.mark.timeout(180)
def test_removed_member_exits_and_the_rest_go_on(cluster: ProcessCluster) -> None:
    leader = cluster.wait_ready()
    victim = next(m for m in cluster.members if m is not leader)
    status = cluster.status(victim)
    assert status is not None
    ctl(leader.client_addr, "member", "remove", f"{status.header.member_id:x}")
    assert cluster.wait_exit(victim, timeout=60) == 0  # etcd 3.4 exits 0 too
    text = cluster.log_text(victim)
    assert "the member has been permanently removed from the cluster" in text
    assert "data-dir used by this member must be removed" in text
    assert len(members(cluster)) == 2
    ctl(cluster.endpoints, "put", "after-remove", "ok")
    assert ctl(cluster.endpoints, "get", "after-remove", "--print-value-only").strip() == "ok"
    # Started again on its old data dir, it learns from its peers it was removed, and exits.
    cluster.start(victim)
    assert cluster.wait_exit(victim, timeout=60) == 0
    # The leader removing itself: it exits, the last member elects itself and goes on.
    leader = cluster.wait_ready()
    status = cluster.status(leader)
    assert status is not None
    ctl(leader.client_addr, "member", "remove", f"{status.header.member_id:x}")
    assert cluster.wait_exit(leader, timeout=60) == 0
    (last,) = cluster.running()
    assert cluster.wait_ready() is last
    ctl(last.client_addr, "put", "alone", "yes")
    assert len(members(cluster)) == 1


@pytest.mark.timeout(120)
def test_member_never_added_refuses_to_start(cluster: ProcessCluster) -> None:
    m5 = cluster.new_member("m5")
    initial = ",".join(f"{m.name}={m.peer_url}" for m in cluster.members)
    cluster.start(m5, "existing", initial_cluster=initial)
    assert cluster.wait_exit(m5) == 1
    line = next(
        ln for ln in cluster.log_text(m5).splitlines() if ln.startswith("keelson: ")
    )
    assert line.startswith("keelson: error validating peerURLs {ClusterID:")
    assert "member count is unequal" in line
    assert f"etcdctl member add m5 --peer-urls={m5.peer_url}" in line
    assert not m5.data_dir.exists()  # nothing written
    assert len(members(cluster)) == 3


@pytest.mark.timeout(60)
def test_no_peer_reachable_refuses_to_start(tmp_path: Path) -> None:
    c = ProcessCluster(tmp_path, 0)
    m = c.new_member("lonely")
    dead = f"http://127.0.0.1:{free_port()}"
    try:
        c.start(m, "existing", initial_cluster=f"lonely={m.peer_url},gone={dead}")
        assert c.wait_exit(m) == 1
    finally:
        c.stop_all()
    assert (
        "keelson: cannot fetch cluster info from peer urls: could not retrieve cluster "
        "information from the given URLs"
    ) in c.log_text(m)


class _Flags:
    """The attributes ``keelson.server.member`` reads from the CLI's config."""

    def __init__(self, name: str, initial_cluster: str, tmp: Path) -> None:
        self.name = name
        self.initial_cluster = initial_cluster
        self.initial_cluster_state = "existing"
        self.initial_cluster_token = "etcd-cluster"
        self.data_dir = str(tmp / name)
        self.wal_dir = ""


def _join_against(
    tmp: Path, remote: Callable[[str], list[pb.Member]], name: str, initial: str
) -> object:
    """Run ``member._join`` against one listener answering ``remote(its peer URL)``, with
    ``--initial-cluster`` ``initial`` ('URL' stands for that peer URL); the Identity or the
    StartError."""
    import asyncio

    from keelson.server import member
    from keelson.server.membership import encode_member_list
    from keelson.transport import Transport

    async def main() -> object:
        t = Transport(0xAA, 0xC1, lambda m: None)
        url = ""
        t.set_discovery_provider(lambda: encode_member_list(0xC1, remote(url)))
        url = f"http://127.0.0.1:{await t.start('127.0.0.1', 0)}"
        try:
            return await member._join(_Flags(name, initial.replace("URL", url), tmp))
        except member.StartError as exc:
            return exc
        finally:
            await t.stop()

    return asyncio.run(asyncio.wait_for(main(), 20))


def test_join_validation_in_process(tmp_path: Path) -> None:
    """etcd's ValidateClusterAndAssignIDs cases and the already-bootstrapped refusal,
    against a listener answering a fixed member list (its own URL is member 'a')."""
    from keelson.server.member import Identity, StartError

    def m(mid: int, name: str, url: str, client: str = "") -> pb.Member:
        return pb.Member(ID=mid, name=name, peerURLs=[url], clientURLs=[client] if client else [])

    def added(url: str) -> list[pb.Member]:
        return [m(1, "a", url, "http://c"), m(7, "", "http://127.0.0.1:9")]

    ok = _join_against(tmp_path, added, "new", "a=URL,new=http://127.0.0.1:9")
    assert isinstance(ok, Identity), ok
    assert (ok.member_id, ok.cluster_id, ok.new_cluster) == (7, 0xC1, False)
    assert ok.peer_names[7] == "new"  # its --initial-cluster name until it publishes

    missing = _join_against(tmp_path, added, "new", "a=URL,new=http://127.0.0.1:8")
    assert isinstance(missing, StartError)
    assert "unmatched member while checking PeerURLs" in str(missing)
    assert "etcdctl member add new --peer-urls=http://127.0.0.1:8" in str(missing)

    def bigger(url: str) -> list[pb.Member]:
        return [*added(url), m(3, "b", "http://127.0.0.1:3")]

    short = _join_against(tmp_path, bigger, "new", "a=URL,new=http://127.0.0.1:9")
    assert isinstance(short, StartError)
    assert "member count is unequal" in str(short)
    never = _join_against(tmp_path, added, "other", "a=URL,other=http://127.0.0.1:4")
    assert isinstance(never, StartError)  # same count, URL not there: unmatched
    assert "not in the cluster's member list" in str(never)

    def started(url: str) -> list[pb.Member]:
        return [m(1, "a", url), m(7, "new", "http://127.0.0.1:9", "http://d")]

    again = _join_against(tmp_path, started, "new", "a=URL,new=http://127.0.0.1:9")
    assert isinstance(again, StartError)
    assert str(again) == "member 7 has already been bootstrapped"
    assert not (tmp_path / "new").exists()  # nothing written on any refusal
