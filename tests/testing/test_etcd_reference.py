"""The reference etcd the compatibility tests compare against starts, answers and stops."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from keelson.testing.etcd import EtcdProcess, etcdctl

pytestmark = pytest.mark.skipif(
    shutil.which("etcd") is None and not __import__("os").environ.get("CI"),
    reason="etcd not installed (make test installs it)",
)


def test_reference_etcd_roundtrip(tmp_path: Path) -> None:
    with EtcdProcess(str(tmp_path / "etcd")) as etcd:
        assert etcdctl(etcd.endpoint, "put", "a", "1").stdout.strip() == "OK"
        got = etcdctl(etcd.endpoint, "get", "a")
        assert got.stdout.split() == ["a", "1"]
        pid = etcd.proc.pid if etcd.proc else 0
    assert etcd.proc is not None and etcd.proc.poll() is not None, pid
