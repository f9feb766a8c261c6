"""Compare compute_member_id/compute_cluster_id with a real etcd 3.4, if installed."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from keelson.cli.identity import compute_cluster_id, compute_member_id

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ids_match_real_etcd(tmp_path: Path) -> None:
    cport, pport = _free_port(), _free_port()
    curl, purl = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
    token = "keelson-test-token"
    proc = subprocess.Popen(
        ["etcd", "--name", "n1", "--data-dir", str(tmp_path / "d"),
         "--listen-client-urls", curl, "--advertise-client-urls", curl,
         "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
         "--initial-cluster", f"n1={purl}", "--initial-cluster-token", token],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        body = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                req = urllib.request.Request(
                    f"{curl}/v3/cluster/member/list", data=b"{}", method="POST")
                with urllib.request.urlopen(req, timeout=1) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.2)
        assert body is not None, "etcd did not answer"
        mid = compute_member_id([purl], token)
        assert int(body["members"][0]["ID"]) == mid
        assert int(body["header"]["cluster_id"]) == compute_cluster_id([mid])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
