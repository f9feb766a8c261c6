"""The NOSPACE alarm, driven by the real etcdctl on a 1-member keelson and a 1-member etcd
3.4, both with a small ``--quota-backend-bytes``: writes are refused with
"etcdserver: mvcc: database space exceeded" once the quota is reached, reads still work,
and writes come back only after compaction, defragmentation and ``alarm disarm``.

How many writes fit before the alarm depends on the storage engine (bbolt's and LMDB's
pages differ), so the test fills both until the first refusal and compares from there.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator

import pytest

from tests.compat.differential import Pair

pytestmark = pytest.mark.skipif(
    (shutil.which("etcd") is None or shutil.which("etcdctl") is None) and not os.environ.get("CI"),
    reason="etcd/etcdctl not installed (make test installs them)",
)

QUOTA = 1_000_000
VALUE = "x" * 100_000


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(1, tmp_path_factory.mktemp("nospace"),
             extra_args=("--quota-backend-bytes", str(QUOTA))).start()
    try:
        yield p
    finally:
        p.stop()


def test_nospace_alarm_until_compact_defrag_disarm(pair: Pair) -> None:
    refused_at = {}
    for kind, side in pair.sides.items():
        for i in range(40):
            code, _, err = side.raw("put", f"fill/{i:02}", VALUE)
            if code != 0:
                assert err == "Error: etcdserver: mvcc: database space exceeded", (kind, err)
                refused_at[kind] = i
                break
        assert kind in refused_at, f"{kind}: 40 writes of 100 kB never hit a 1 MB quota"
    # the same keys on both: the side that took more writes deletes the extra ones (deletes
    # are allowed under the alarm); revisions differ from here on, so only outputs without
    # revisions are compared
    fewer = min(refused_at.values())
    for kind, side in pair.sides.items():
        for i in range(fewer, refused_at[kind]):
            code, _, err = side.raw("del", f"fill/{i:02}")
            assert code == 0, err

    pair.same("alarm", "list")
    pair.same("alarm", "list", "-w", "json")
    status = {kind: o.out[0]["Status"].get("errors")
              for kind, o in pair.run("endpoint", "status", "-w", "json").items()}
    assert status["keelson"] == status["etcd"] == ["memberID:<m0> alarm:NOSPACE "], status
    pair.same("put", "after", "1", ok=False)
    pair.same("txn", stdin="\nput after 1\n\n\n", ok=False)
    pair.same("lease", "grant", "100", ok=False)
    pair.same("get", "fill/00", "--keys-only")
    pair.same("del", "fill/00")
    # compaction and defragmentation alone do not lift the alarm
    for side in pair.sides.values():
        code, out, err = side.raw("get", "none", "-w", "json")
        assert code == 0, err
        rev = json.loads(out)["header"]["revision"]
        code, _, err = side.raw("del", "fill/", "--prefix")
        assert code == 0, err
        code, _, err = side.raw("compaction", str(rev + 1), "--physical")
        assert code == 0, err
    pair.same("defrag")
    pair.same("put", "after", "1", ok=False)
    pair.same("alarm", "disarm")
    pair.same("alarm", "list")
    pair.same("alarm", "list", "-w", "json")
    pair.same("put", "after", "1")
    pair.same("get", "after", "--print-value-only")
