"""The real etcdctl 3.4 against a 1-member keelson and a 1-member etcd 3.4 started the same
way: every command family must give the same normalized output, error message and exit code
(see tests/compat/differential.py for what is normalized and why).

The two clusters are shared by the whole module; each test writes under its own key prefix
and every write goes to both, so the revisions of the two clusters stay equal throughout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.differential import Outcome, Pair, Watcher

pytestmark = pytest.mark.skipif(
    (shutil.which("etcd") is None or shutil.which("etcdctl") is None) and not os.environ.get("CI"),
    reason="etcd/etcdctl not installed (make test installs them)",
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(1, tmp_path_factory.mktemp("compat1")).start()
    try:
        yield p
    finally:
        p.stop()


def current_revision(pair: Pair) -> int:
    rev = {}
    for kind, side in pair.sides.items():
        code, out, err = side.raw("get", "none", "-w", "json")
        assert code == 0, err
        rev[kind] = int(json.loads(out)["header"]["revision"])
    assert rev["etcd"] == rev["keelson"], rev
    return rev["etcd"]


def grant(pair: Pair, ttl: int, symbol: str) -> str:
    """Grant a lease on both; register its id as ``symbol``; return etcd's outcome text."""
    for side in pair.sides.values():
        code, out, err = side.raw("lease", "grant", str(ttl), "-w", "json")
        assert code == 0, err
        side.learn(int(json.loads(out)["ID"]), symbol)
    return symbol


# -- KV -------------------------------------------------------------------------------------


def test_put_get_every_range_option(pair: Pair) -> None:
    for key, value in (("kv/a", "1"), ("kv/b", "22"), ("kv/c", "3"), ("kv/a", "44"),
                       ("kv/d", "5"), ("kv/b", "6"), ("kw", "7")):
        assert pair.same("put", key, value).out == "OK\n"
    rev = current_revision(pair)
    pair.same("put", "kv/d", "55", "--prev-kv", "-w", "json")
    pair.same("put", "kv/d", "--ignore-value", "-w", "json")
    pair.same("put", "kv/zz", "--ignore-value", ok=False)  # etcdserver: key not found
    for args in (
        ["kv/a"], ["kv/a", "-w", "json"], ["kv/", "--prefix"], ["kv/", "--prefix", "-w", "json"],
        ["kv/a", "kv/c"], ["kv/a", "kv/c", "-w", "json"], ["kv/c", "--from-key", "-w", "json"],
        ["kv/a", "--rev", str(rev - 6), "-w", "json"], ["kv/", "--prefix", "--rev", str(rev - 3)],
        ["kv/", "--prefix", "--limit", "2", "-w", "json"],
        ["kv/", "--prefix", "--keys-only"], ["kv/", "--prefix", "--print-value-only"],
        ["kv/", "--prefix", "--consistency", "s", "-w", "json"],
        ["kv/", "--prefix", "--hex"], ["kv/", "--prefix", "-w", "fields"],
        ["kv/missing", "-w", "json"], ["kv/missing"],
        *(["kv/", "--prefix", "--sort-by", target, "--order", order, "-w", "json"]
          for target in ("KEY", "VERSION", "CREATE", "MODIFY", "VALUE")
          for order in ("ASCEND", "DESCEND")),
        ["kv/", "--prefix", "--sort-by", "MODIFY", "--limit", "2", "-w", "json"],
    ):
        pair.same("get", *args)


def test_del_every_option(pair: Pair) -> None:
    for key in ("del/a", "del/b", "del/c", "del/d", "del/e", "del/f"):
        pair.same("put", key, key.upper())
    assert pair.same("del", "del/a").out == "1\n"
    assert pair.same("del", "del/a").out == "0\n"
    pair.same("del", "del/b", "--prev-kv")
    pair.same("del", "del/c", "del/e", "--prev-kv", "-w", "json")
    pair.same("del", "del/e", "--from-key", "-w", "json")
    pair.same("del", "del/", "--prefix", "-w", "json")
    pair.same("get", "del/", "--prefix", "-w", "json")


# -- txn ------------------------------------------------------------------------------------

TXN_TAKES_SUCCESS = """\
mod("txn/a") > "0"
value("txn/b") = "2"
version("txn/a") = "1"
create("txn/a") > "1"

put txn/c 3
get txn/a
get txn/ --prefix
del txn/b
get txn/b

get txn/a

"""

TXN_TAKES_FAILURE = """\
value("txn/a") = "nope"

put txn/a never

get txn/a
put txn/d 4
get txn/d
get txn/ --prefix --keys-only

"""

TXN_READ_ONLY = """\

get txn/a
get txn/c --rev 1

"""


def test_txn(pair: Pair) -> None:
    pair.same("put", "txn/a", "1")
    pair.same("put", "txn/b", "2")
    for stdin in (TXN_TAKES_SUCCESS, TXN_TAKES_FAILURE):
        pair.same("txn", "-w", "json", stdin=stdin)
    pair.same("put", "txn/b", "2")
    pair.same("del", "txn/c")
    pair.same("del", "txn/d")
    for stdin in (TXN_TAKES_SUCCESS, TXN_TAKES_FAILURE):
        pair.same("txn", stdin=stdin)
    pair.same("txn", "-w", "json", stdin="\nget txn/a\nget txn/b\n\n\n")
    # a read-only txn at a revision in the future is refused (checked before reading)
    pair.same("txn", stdin=f"\nget txn/a --rev {current_revision(pair) + 10}\n\n\n", ok=False)


def test_txn_errors(pair: Pair) -> None:
    pair.same("txn", stdin="\nput txn/x 1\nput txn/x 2\n\n\n", ok=False)  # duplicate key
    pair.same("txn", stdin="\nput txn/y 1\ndel txn/ --prefix\n\n\n", ok=False)
    many = "".join(f"put txn/many/{i} v\n" for i in range(129))
    pair.same("txn", stdin=f"\n{many}\n\n", ok=False)  # too many operations
    pair.same("txn", stdin=f"\n{''.join(many.splitlines(True)[:128])}\n\n")  # 128 is fine
    pair.same("get", "txn/many/", "--prefix", "--keys-only")


def test_errors(pair: Pair, tmp_path: Path) -> None:
    rev = current_revision(pair)
    pair.same("get", "err/a", "--rev", str(rev + 1), ok=False)  # future revision
    pair.same("put", "err/a", "v", "--lease", "1234abcd", ok=False)  # lease not found
    big = tmp_path / "big"
    big.write_text("x" * (1536 * 1024 + 1))  # just over --max-request-bytes: the server's check
    pair.same("put", "err/big", stdin=big.read_text(), ok=False)
    big.write_text("x" * (3 * 1024 * 1024))  # over the gRPC limit (max-request-bytes + 512 KiB)
    pair.same("put", "err/big", stdin=big.read_text(), ok=False)
    pair.same("compaction", str(rev + 100), ok=False)  # future revision
    assert current_revision(pair) == rev


# -- leases ---------------------------------------------------------------------------------


def sorted_lease_list(o: Outcome) -> Outcome:
    """``lease list`` lists leases in Go map order on etcd: compare them sorted."""
    if isinstance(o.out, dict):
        leases = sorted(o.out.get("leases") or [], key=lambda x: str(x["id"]))
        return Outcome(o.code, {**o.out, "leases": leases}, o.err)
    head, *ids = o.out.splitlines()
    return Outcome(o.code, "\n".join([head, *sorted(ids)]), o.err)


REMAINING = re.compile(r"remaining\((-?\d+)s\)")


def ttl_of(o: Outcome) -> int | None:
    """The remaining TTL a ``lease timetolive`` outcome shows (json or text), if any."""
    if isinstance(o.out, dict):
        ttl = o.out.get("ttl")
        return ttl if isinstance(ttl, int) else None
    m = REMAINING.search(str(o.out))
    return int(m.group(1)) if m else None


def with_ttl(o: Outcome, ttl: int) -> Outcome:
    if isinstance(o.out, dict):
        return Outcome(o.code, {**o.out, "ttl": ttl}, o.err)
    return Outcome(o.code, REMAINING.sub(f"remaining({ttl}s)", str(o.out)), o.err)


def settle_ttl(got: dict[str, Outcome]) -> dict[str, Outcome]:
    """The remaining TTL is whole seconds counted down from each side's own grant, read one
    etcdctl run apart: a one-second difference is the clock, not a behaviour."""
    mine, theirs = ttl_of(got["keelson"]), ttl_of(got["etcd"])
    if mine is not None and theirs is not None and abs(mine - theirs) <= 1:
        got = {**got, "keelson": with_ttl(got["keelson"], theirs)}
    return got


def test_settle_ttl_forgives_one_second_only() -> None:
    def pair_of(a: int, b: int) -> dict[str, Outcome]:
        return {"etcd": Outcome(0, {"id": "<l>", "ttl": a}, ""),
                "keelson": Outcome(0, {"id": "<l>", "ttl": b}, "")}
    assert settle_ttl(pair_of(298, 299))["keelson"] == pair_of(298, 299)["etcd"]
    assert settle_ttl(pair_of(298, 300))["keelson"].out["ttl"] == 300
    text = {"etcd": Outcome(0, "lease 1 granted with TTL(600s), remaining(598s)", ""),
            "keelson": Outcome(0, "lease 1 granted with TTL(600s), remaining(599s)", "")}
    assert settle_ttl(text)["keelson"] == text["etcd"]


def test_lease_grant_keepalive_timetolive_revoke(pair: Pair) -> None:
    a = grant(pair, 600, "<leaseA>")
    b = grant(pair, 300, "<leaseB>")
    ha, hb = (pair.etcd.hex_id(a), pair.keelson.hex_id(a)), (pair.etcd.hex_id(b),
                                                          pair.keelson.hex_id(b))

    def same(*args: str, ok: bool = True, ids: tuple[str, str] = ha) -> Outcome:
        """Like pair.same, with each side's own lease id substituted for ``{}``."""
        got = {kind: side.run(*[x.format(ids[i]) for x in args])
               for i, (kind, side) in enumerate(pair.sides.items())}
        if args[:2] == ("lease", "list"):
            got = {k: sorted_lease_list(v) for k, v in got.items()}
        if args[:2] == ("lease", "timetolive"):
            got = settle_ttl(got)
        assert got["keelson"] == got["etcd"], (args, got)
        assert (got["etcd"].code == 0) == ok, got
        return got["etcd"]

    same("put", "lease/k1", "v", "--lease", "{}")
    same("put", "lease/k2", "v", "--lease", "{}")
    same("put", "lease/k2", "w", "--ignore-lease", "-w", "json")
    same("get", "lease/", "--prefix", "-w", "json")
    same("lease", "timetolive", "{}", "--keys", "-w", "json")
    same("lease", "timetolive", "{}", "--keys")
    same("lease", "timetolive", "{}", "-w", "json", ids=hb)
    same("lease", "keep-alive", "--once", "{}")
    same("lease", "keep-alive", "--once", "{}", "-w", "json", ids=hb)
    same("lease", "list", "-w", "json")
    same("lease", "list")
    same("lease", "revoke", "{}")
    same("get", "lease/", "--prefix", "-w", "json")
    same("lease", "revoke", "{}", ok=False)  # requested lease not found
    same("lease", "timetolive", "{}", "-w", "json")  # TTL -1, not an error
    same("lease", "timetolive", "{}")  # "already expired"
    same("lease", "keep-alive", "--once", "{}", ok=False)
    same("put", "lease/k3", "v", "--lease", "{}", ok=False)
    same("lease", "revoke", "{}", ids=hb)
    pair.same("lease", "grant", str(9_000_000_001), ok=False)  # too large lease TTL
    pair.same("lease", "list")


# -- watch ----------------------------------------------------------------------------------


def test_watch(pair: Pair) -> None:
    start = current_revision(pair) + 1
    pair.same("put", "watch/a", "0")
    views = (
        ("watch/", "--prefix", "--rev", str(start)),
        # from the next revision: the same events as a watch created now, whenever the
        # watcher process gets to register on a loaded machine
        ("watch/", "--prefix", "--prev-kv", "-w", "json", "--rev", str(start + 1)),
        ("watch/a", "--prev-kv", "--rev", str(start + 1)),
        ("watch/a", "watch/c", "--rev", str(start), "-w", "json"),
    )
    outputs: dict[str, list[tuple[str, str]]] = {}
    for kind, side in pair.sides.items():
        watchers = [Watcher(side, *v) for v in views]
        time.sleep(1.0)  # most events arrive live, not from history
        side.run("put", "watch/a", "1")
        side.run("put", "watch/b", "2")
        side.run("del", "watch/a")
        side.run("txn", stdin="\nput watch/a 3\nput watch/c 4\n\n\n")
        counts = (6, 5, 3, 5)  # events each view must see
        outputs[kind] = [w.stop(n) for w, n in zip(watchers, counts, strict=True)]
    for i, view in enumerate(views):
        got = {}
        for kind, side in pair.sides.items():
            out, _ = outputs[kind][i]
            got[kind] = side.normalize_json(out) if "json" in view else side.normalize_text(out)
        assert got["keelson"] == got["etcd"], (view, got)
        assert got["etcd"], view


# -- compaction, hashes, defrag -------------------------------------------------------------


def forget_history(pair: Pair) -> None:
    """HashKV covers the key history, which holds lease ids wherever a key had a lease, and
    the two sides' lease ids differ: delete every key (a test that failed half-way may have
    left leased keys behind) and compact the history away, so the hashes cover the same
    bytes on both."""
    pair.same("del", "", "--from-key")
    pair.same("compaction", str(current_revision(pair)), "--physical")


def test_compaction_hashkv_and_watch_from_compacted(pair: Pair) -> None:
    forget_history(pair)
    for cmd in (["put", "hash/x", "1"], ["put", "hash/y", "2"], ["del", "hash/x"],
                ["put", "hash/y", "3"]):
        pair.same(*cmd)

    def hashes() -> None:
        got = {kind: json.loads(side.raw("endpoint", "hashkv", "-w", "json")[1])[0]["HashKV"]
               for kind, side in pair.sides.items()}
        # the same history gives the same hash, whatever else is stored (leases, members)
        assert got["keelson"]["hash"] == got["etcd"]["hash"], got
        assert got["keelson"].get("compact_revision") == got["etcd"].get("compact_revision")

    rev = current_revision(pair)
    hashes()
    pair.same("endpoint", "hashkv", "-w", "json")
    pair.same("compaction", str(rev - 1))
    pair.same("compaction", str(rev - 2), ok=False)  # required revision has been compacted
    pair.same("compaction", str(rev - 1), ok=False)
    pair.same("get", "hash/y", "--rev", str(rev - 2), ok=False)
    pair.same("get", "hash/", "--prefix", "--rev", str(rev - 1), "-w", "json")
    hashes()
    pair.same("endpoint", "hashkv", "-w", "json")
    pair.same("compaction", str(rev), "--physical")
    hashes()
    got = {}
    for kind, side in pair.sides.items():
        w = Watcher(side, "hash/", "--prefix", "--rev", "2")
        got[kind] = side.normalize_text(" ".join(w.stop(1, timeout=10)))
    assert got["keelson"] == got["etcd"], got
    assert "compacted" in got["etcd"]


def test_defrag_and_endpoint_commands(pair: Pair) -> None:
    pair.same("defrag")
    pair.same("defrag", "--cluster")
    forget_history(pair)
    pair.same("put", "defrag/marker", "1")
    pair.same("endpoint", "health")
    pair.same("endpoint", "health", "--cluster")
    pair.same("endpoint", "health", "-w", "json")
    pair.same("endpoint", "status", "-w", "json")
    pair.same("endpoint", "status", "--cluster", "-w", "json")
    pair.same("endpoint", "hashkv", "--cluster", "-w", "json")


# -- alarms ---------------------------------------------------------------------------------


def test_alarm_list_and_disarm_without_alarms(pair: Pair) -> None:
    pair.same("alarm", "list")
    pair.same("alarm", "list", "-w", "json")
    pair.same("alarm", "disarm")
    pair.same("alarm", "disarm", "-w", "json")


# -- members --------------------------------------------------------------------------------


def add_member(pair: Pair, symbol: str, url: str, *flags: str) -> Outcome:
    """``member add`` on both, learning the new id as ``symbol``; return the normalized
    outcome (the simple output names the new member's id, so ids are learned first)."""
    got = {}
    for kind, side in pair.sides.items():
        code, out, err = side.raw("member", "add", symbol.strip("<>"), "--peer-urls", url,
                                  *flags, "-w", "json")
        if code == 0:
            side.learn(int(json.loads(out)["member"]["ID"]), symbol)
            got[kind] = Outcome(code, side.normalize_json(out))
        else:
            got[kind] = Outcome(code, "", side.normalize_text(err))
    assert got["keelson"] == got["etcd"], got
    return got["etcd"]


def test_member_add_list_promote_remove(pair: Pair) -> None:
    pair.same("member", "list")
    pair.same("member", "list", "-w", "json")
    pair.same("member", "list", "-w", "table")
    url = "http://127.0.0.1:1"  # never started: a learner that is added but never joins
    assert add_member(pair, "<learner1>", url, "--learner").code == 0
    pair.same("member", "list", "-w", "json")
    pair.same("member", "list", sort_lines=True)
    # etcd 3.4 allows one learner at a time
    assert add_member(pair, "<learner2>", "http://127.0.0.1:2", "--learner").code != 0
    # etcd derives a new member's id from its URLs and the time in seconds: a second add of
    # the same URL within the second is "member ID already exist", later "Peer URLs already
    # exists"; wait for the second case
    time.sleep(1.1)
    assert add_member(pair, "<dup>", url, "--learner").code != 0
    pair.same("member", "add", "bad", "--peer-urls", "127.0.0.1:3", ok=False)

    def by_symbol(*args: str, ok: bool = True) -> None:
        """Run with each side's own id for the ``<symbol>`` argument."""
        got = {kind: side.run(*[side.hex_id(a) if a.startswith("<") else a for a in args])
               for kind, side in pair.sides.items()}
        assert got["keelson"] == got["etcd"], (args, got)
        assert (got["etcd"].code == 0) == ok, got

    by_symbol("member", "promote", "<learner1>", ok=False)  # not in sync with the leader
    by_symbol("member", "promote", "<m0>", ok=False)  # not a learner
    by_symbol("member", "update", "<learner1>", "--peer-urls", "http://127.0.0.1:4")
    # etcd 3.4 forgets that an updated member is a learner in its member list (raft still
    # treats it as one): etcd-io/etcd#21694, fixed upstream; keelson keeps the flag
    got = pair.run("member", "list", "-w", "json")
    for m in got["keelson"].out["members"]:
        if m["ID"] == "<learner1>":
            assert m.pop("isLearner") is True
    assert got["keelson"] == got["etcd"], got
    by_symbol("member", "remove", "<learner1>")
    by_symbol("member", "remove", "<learner1>", ok=False)  # member not found
    by_symbol("member", "promote", "<learner1>", ok=False)
    by_symbol("member", "update", "<learner1>", "--peer-urls", "http://127.0.0.1:5", ok=False)
    pair.same("member", "list", "-w", "json")
    pair.same("member", "remove", "1234abcd", ok=False)


def test_move_leader_on_one_member(pair: Pair) -> None:
    pair.same("move-leader", "1234abcd", ok=False)  # bad leader transferee


# -- snapshot -------------------------------------------------------------------------------


def test_snapshot_save_and_status(pair: Pair, tmp_path: Path) -> None:
    got = {}
    for kind, side in pair.sides.items():
        path = tmp_path / f"{kind}.db"
        code, out, err = side.raw("snapshot", "save", str(path))
        assert code == 0, err
        assert out == f"Snapshot saved at {path}\n"
        code, out, err = side.raw("snapshot", "status", str(path), "-w", "json")
        got[kind] = (code, json.loads(out) if code == 0 else err)
    assert got["etcd"][0] == 0
    assert got["keelson"][0] == 0, got["keelson"]
    # the key bucket holds the same revisions; the other buckets differ by design
    assert got["keelson"][1]["revision"] == got["etcd"][1]["revision"], got
