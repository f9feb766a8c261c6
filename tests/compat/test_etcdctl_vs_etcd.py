"""The real etcdctl against keelson and against a real etcd 3.4: the same commands must
give the same answers (ids and timings aside)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator

import pytest

from keelson.testing.etcd import EtcdProcess, etcdctl
from keelson.testing.local_cluster import LocalCluster

pytestmark = pytest.mark.skipif(
    (shutil.which("etcd") is None or shutil.which("etcdctl") is None) and not os.environ.get("CI"),
    reason="etcd/etcdctl not installed (make test installs them)",
)


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("compat")
    etcd = EtcdProcess(str(base / "etcd")).start()
    keelson = LocalCluster("keelson", 1, base / "keelson").start()
    try:
        yield {"etcd": etcd.endpoint, "keelson": keelson.endpoints}
    finally:
        keelson.stop()
        etcd.stop()


def both(endpoints: dict[str, str], *args: str, stdin: str | None = None) -> dict[str, str]:
    out = {}
    for kind, ep in endpoints.items():
        r = etcdctl(ep, *args, stdin=stdin)
        # etcdctl logs retries with timestamps before its final "Error: ..." line.
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        out[kind] = r.stdout + (f"ERR {last}" if r.returncode else "")
    return out


def normalized_json(text: str) -> object:
    """Parse etcdctl -w json output and drop what differs by design between two clusters."""
    doc = json.loads(text)

    def strip(node: object) -> object:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()
                    if k not in ("cluster_id", "member_id", "raft_term")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(doc)


def test_put_get_and_revisions_match(endpoints: dict[str, str]) -> None:
    for cmd in (["put", "compat/a", "1"], ["put", "compat/b", "2"], ["put", "compat/a", "3"],
                ["del", "compat/b"], ["put", "compat/c", "4"]):
        got = both(endpoints, *cmd)
        assert got["keelson"] == got["etcd"], cmd
    for cmd in (["get", "compat/", "--prefix", "-w", "json"],
                ["get", "compat/a", "--rev", "2", "-w", "json"],
                ["get", "compat/", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND",
                 "-w", "json"],
                ["get", "compat/", "--prefix", "--limit", "1", "-w", "json"],
                ["get", "compat/", "--prefix", "--keys-only", "-w", "json"]):
        got = both(endpoints, *cmd)
        assert not got["etcd"].startswith("ERR"), (cmd, got)
        assert normalized_json(got["keelson"]) == normalized_json(got["etcd"]), (cmd, got)


def test_errors_match(endpoints: dict[str, str]) -> None:
    for cmd in (["get", "compat/a", "--rev", "999"],):
        got = both(endpoints, *cmd)
        assert got["keelson"] == got["etcd"], cmd


def test_hashkv_matches_etcd(endpoints: dict[str, str]) -> None:
    """Same history on both: etcd's HashKV definition over the same bytes gives the same
    hash, before and after a compaction."""
    for cmd in (["put", "hash/x", "1"], ["put", "hash/y", "2"], ["del", "hash/x"],
                ["put", "hash/y", "3"]):
        both(endpoints, *cmd)

    def hashes() -> dict[str, int]:
        got = both(endpoints, "endpoint", "hashkv", "-w", "json")
        return {kind: json.loads(text)[0]["HashKV"]["hash"] for kind, text in got.items()}

    before = hashes()
    assert before["keelson"] == before["etcd"]
    rev = json.loads(both(endpoints, "get", "hash/y", "-w", "json")["etcd"])["header"]["revision"]
    both(endpoints, "compaction", str(rev - 1))
    after = hashes()
    assert after["keelson"] == after["etcd"]
