"""The real etcdctl 3.4 against a 3-member keelson and a 3-member etcd 3.4 started the same
way: membership, per-endpoint status, move-leader and reads/writes through every member
must give the same normalized answers (see tests/compat/differential.py).

Members added here are never started (another suite covers joining): etcd lists them as
unstarted, counts them in its quorum checks, and removes them without fuss.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator

import pytest

from tests.compat.differential import Outcome, Pair, Watcher

pytestmark = pytest.mark.skipif(
    (shutil.which("etcd") is None or shutil.which("etcdctl") is None) and not os.environ.get("CI"),
    reason="etcd/etcdctl not installed (make test installs them)",
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(3, tmp_path_factory.mktemp("compat3")).start()
    try:
        yield p
    finally:
        p.stop()


def by_symbol(pair: Pair, *args: str, ok: bool = True, endpoint: int | None = None) -> Outcome:
    """Run on both with each side's own id in place of every ``<symbol>`` argument."""
    got = {kind: side.run(*[side.hex_id(a) if a.startswith("<") else a for a in args],
                          endpoint=endpoint)
           for kind, side in pair.sides.items()}
    assert got["keelson"] == got["etcd"], (args, got)
    assert (got["etcd"].code == 0) == ok, got
    return got["etcd"]


def move_leader_to(pair: Pair, name: str) -> None:
    """Make member ``name`` the leader on both (move-leader through all endpoints: etcdctl
    finds the current leader itself)."""
    for kind, side in pair.sides.items():
        target = side.member_id(name)
        deadline = time.monotonic() + 30
        while True:
            leader = side.cluster.members[pair.leader_index(kind)].name
            if leader == name:
                break
            code, _, err = side.raw("move-leader", f"{target:x}")
            assert code == 0 or time.monotonic() < deadline, err
            time.sleep(0.2)


def test_move_leader_then_status_matches(pair: Pair) -> None:
    move_leader_to(pair, "m1")
    for kind, side in pair.sides.items():
        assert side.cluster.members[pair.leader_index(kind)].name == "m1", kind
    # etcdctl sends move-leader to the leader among the endpoints it is given
    by_symbol(pair, "move-leader", "<m2>")
    # the new leader's term is not comparable; who leads is
    move_leader_to(pair, "m2")
    pair.same("endpoint", "status", "-w", "json")
    pair.same("move-leader", "1234abcd", ok=False)  # bad leader transferee
    # only followers given: etcdctl finds no leader endpoint
    by_symbol(pair, "move-leader", "<m0>", endpoint=0, ok=False)
    by_symbol(pair, "move-leader", "<m2>", endpoint=2)  # already the leader: done at once
    move_leader_to(pair, "m0")
    pair.same("endpoint", "status", "-w", "json")


def test_reads_and_writes_through_every_member(pair: Pair) -> None:
    for i in range(3):
        pair.same("put", f"c3/k{i}", str(i), endpoint=i)
        pair.same("put", f"c3/k{i}", f"{i}{i}", "--prev-kv", "-w", "json", endpoint=i)
    for i in range(3):
        for consistency in ("l", "s"):
            pair.same("get", "c3/", "--prefix", "--consistency", consistency, "-w", "json",
                      endpoint=i)
    pair.same("txn", "-w", "json", stdin='value("c3/k0") = "00"\n\nput c3/t 1\nget c3/t\n\n\n',
              endpoint=1)
    pair.same("del", "c3/", "--prefix", "-w", "json", endpoint=2)
    pair.same("compaction", "2", endpoint=1)
    pair.same("get", "c3/k0", "--rev", "1", endpoint=2, ok=False)
    # every member applied the same history: the same hash on each
    deadline = time.monotonic() + 20
    while True:
        hashes = {kind: {h["HashKV"]["hash"] for h in
                         json.loads(side.raw("endpoint", "hashkv", "-w", "json")[1])}
                  for kind, side in pair.sides.items()}
        if all(len(h) == 1 for h in hashes.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(hashes["keelson"]) == 1 and len(hashes["etcd"]) == 1, hashes


@pytest.mark.xfail(strict=True, reason=(
    "etcd's 'unhealthy cluster' rule is not checked: it needs to know how long this member "
    "has been connected to every voter, and keelson's transport dials peers lazily "
    "(see keelson/server/reconfig.py)"))
def test_member_add_refused_while_a_voter_is_unreachable(pair: Pair) -> None:
    """etcd adds a member only when the member asked has been connected to every voter for
    5 s: with a voter added but never started, the next add is refused."""
    added: dict[str, list[int]] = {kind: [] for kind in pair.sides}
    try:
        for kind, side in pair.sides.items():
            code, out, err = side.raw("member", "add", "v1", "--peer-urls",
                                      "http://127.0.0.1:31", "-w", "json", endpoint=0)
            assert code == 0, (kind, err)
            added[kind].append(int(json.loads(out)["member"]["ID"]))
        got = {}
        for kind, side in pair.sides.items():
            code, out, err = side.raw("member", "add", "v2", "--peer-urls",
                                      "http://127.0.0.1:32", "--learner", "-w", "json",
                                      endpoint=0)
            if code == 0:
                added[kind].append(int(json.loads(out)["member"]["ID"]))
            got[kind] = (code, err)
        assert got["etcd"] == (1, "Error: etcdserver: unhealthy cluster"), got
        assert got["keelson"] == got["etcd"], got
    finally:
        for kind, side in pair.sides.items():
            for mid in added[kind]:
                code, _, err = side.raw("member", "remove", f"{mid:x}", endpoint=0)
                assert code == 0, (kind, err)


def test_lease_time_to_live_on_a_follower_counts_down(pair: Pair) -> None:
    """Only the leader runs lease expiry; etcd answers TimeToLive on a follower by asking
    the leader, so the remaining TTL is the same through every member."""
    remaining = {}
    for kind, side in pair.sides.items():
        leader = pair.leader_index(kind)
        code, out, err = side.raw("lease", "grant", "60", "-w", "json", endpoint=leader)
        assert code == 0, err
        lease = int(json.loads(out)["ID"])
        time.sleep(2.5)
        follower = (leader + 1) % 3
        code, out, err = side.raw("lease", "timetolive", f"{lease:x}", "-w", "json",
                                  endpoint=follower)
        assert code == 0, err
        remaining[kind] = json.loads(out)["ttl"]
        side.raw("lease", "revoke", f"{lease:x}", endpoint=leader)
    assert remaining["etcd"] <= 58, remaining
    assert remaining["keelson"] <= 58, remaining


def test_watch_on_a_follower_sees_writes_through_another(pair: Pair) -> None:
    outputs = {}
    for kind, side in pair.sides.items():
        leader = pair.leader_index(kind)
        follower = (leader + 1) % 3
        writer = (leader + 2) % 3
        code, out, err = side.raw("get", "none", "-w", "json", endpoint=writer)
        assert code == 0, err
        start = json.loads(out)["header"]["revision"] + 1  # robust to a slow registration
        watcher = Watcher(side, "c3w/", "--prefix", "--prev-kv", "-w", "json",
                          "--rev", str(start), endpoint=follower)
        time.sleep(1.0)  # most events arrive live, not from history
        for cmd in (("put", "c3w/a", "1"), ("put", "c3w/a", "2"), ("del", "c3w/a")):
            code, _, err = side.raw(*cmd, endpoint=writer)
            assert code == 0, err
        out, _ = watcher.stop(3)
        outputs[kind] = side.normalize_json(out)
        # the answering member differs (whichever follower): compare without it
        for response in outputs[kind]:
            response["Header"].pop("member_id")
    assert outputs["keelson"] == outputs["etcd"], outputs
    assert len(outputs["etcd"]) == 3


def add_member(pair: Pair, symbol: str, url: str, *flags: str) -> Outcome:
    got = {}
    for kind, side in pair.sides.items():
        code, out, err = side.raw("member", "add", symbol.strip("<>"), "--peer-urls", url,
                                  *flags, "-w", "json", endpoint=0)
        if code == 0:
            side.learn(int(json.loads(out)["member"]["ID"]), symbol)
            got[kind] = without_client_urls(Outcome(code, side.normalize_json(out)))
        else:
            got[kind] = Outcome(code, "", side.normalize_text(err))
    assert got["keelson"] == got["etcd"], got
    return got["etcd"]


def test_promote_on_a_follower_is_answered_by_the_leader(pair: Pair) -> None:
    """etcd forwards a promote that reaches a follower to the leader (only the leader knows
    whether the learner is in sync), so the answer does not depend on the endpoint."""
    move_leader_to(pair, "m0")
    assert add_member(pair, "<learner3>", "http://127.0.0.1:21", "--learner").code == 0
    try:
        by_symbol(pair, "member", "promote", "<learner3>", endpoint=1, ok=False)
        by_symbol(pair, "member", "promote", "<m0>", endpoint=2, ok=False)  # not a learner
    finally:
        by_symbol(pair, "member", "remove", "<learner3>", endpoint=0)


def test_member_list_names_every_client_url(pair: Pair) -> None:
    pair.same("member", "list", "-w", "json", endpoint=0)
    pair.same("member", "list", sort_lines=True, endpoint=0)
    pair.same("endpoint", "health", "--cluster", endpoint=0)
    # every member's status, each naming the same leader (which member leads differs)
    shapes = {}
    for kind, o in pair.run("endpoint", "status", "--cluster", "-w", "json", endpoint=0).items():
        assert o.code == 0, o
        leaders = {st["Status"]["leader"] for st in o.out}
        assert len(leaders) == 1, (kind, o.out)
        shapes[kind] = sorted(st["Endpoint"] for st in o.out)
    assert shapes["keelson"] == shapes["etcd"], shapes


def without_client_urls(o: Outcome) -> Outcome:
    """A member list with the client URLs left out (they are compared on their own)."""
    members = [{k: v for k, v in m.items() if k != "clientURLs"} for m in o.out["members"]]
    return Outcome(o.code, {**o.out, "members": members}, o.err)


def same_members(pair: Pair) -> None:
    got = {k: without_client_urls(o)
           for k, o in pair.run("member", "list", "-w", "json", endpoint=0).items()}
    assert got["keelson"] == got["etcd"], got


def test_members_added_never_started(pair: Pair) -> None:
    same_members(pair)
    assert add_member(pair, "<learner>", "http://127.0.0.1:11", "--learner").code == 0
    same_members(pair)
    # on the leader and on a follower: not in sync with the leader
    move_leader_to(pair, "m0")
    by_symbol(pair, "member", "promote", "<learner>", endpoint=0, ok=False)
    by_symbol(pair, "member", "promote", "<m1>", endpoint=0, ok=False)  # not a learner
    by_symbol(pair, "move-leader", "<learner>", ok=False)  # bad leader transferee
    assert add_member(pair, "<learner2>", "http://127.0.0.1:12", "--learner").code != 0
    by_symbol(pair, "member", "remove", "<learner>", endpoint=1)
    same_members(pair)
    by_symbol(pair, "member", "remove", "<learner>", endpoint=0, ok=False)
    pair.same("member", "remove", "1234abcd", ok=False, endpoint=2)
