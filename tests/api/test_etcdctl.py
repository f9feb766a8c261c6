"""Wire compatibility: the real etcdctl (etcd 3.4 client) against keelson.api + the fake."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from keelson.testing.fake_server import FakeServer
from keelson.testing.front_end import serve_grpc

ETCDCTL = shutil.which("etcdctl")
pytestmark = pytest.mark.skipif(ETCDCTL is None, reason="etcdctl not installed")


@pytest.fixture
def endpoint() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    ready: list[int] = []
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        srv, port = serve_grpc(FakeServer())
        ready.append(port)
        await srv.start()
        started.set()
        await stop.wait()
        await srv.stop(None)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"127.0.0.1:{ready[0]}"
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def etcdctl(endpoint: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    assert ETCDCTL is not None
    proc = subprocess.run(
        [ETCDCTL, "--endpoints", endpoint, "--command-timeout=5s", *args],
        capture_output=True,
        text=True,
        timeout=20,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_put_get_del(endpoint: str) -> None:
    assert etcdctl(endpoint, "put", "foo", "bar").stdout.strip() == "OK"
    assert etcdctl(endpoint, "get", "foo").stdout.split() == ["foo", "bar"]
    out = json.loads(etcdctl(endpoint, "get", "--prefix", "f", "-w", "json").stdout)
    assert out["count"] == 1 and out["kvs"][0]["version"] == 1
    assert etcdctl(endpoint, "del", "foo").stdout.strip() == "1"
    assert etcdctl(endpoint, "get", "foo").stdout == ""


def test_lease_and_member_list(endpoint: str) -> None:
    assert "granted with TTL(10s)" in etcdctl(endpoint, "lease", "grant", "10").stdout
    assert "fake" in etcdctl(endpoint, "member", "list").stdout


def test_error_message_reaches_etcdctl(endpoint: str) -> None:
    proc = etcdctl(endpoint, "auth", "enable", ok=False)
    assert proc.returncode != 0
    assert "etcdserver: root user does not exist" in proc.stderr


def test_snapshot_save_verifies_checksum(endpoint: str, tmp_path: Path) -> None:
    etcdctl(endpoint, "put", "k", "v")
    target = tmp_path / "snap.db"
    etcdctl(endpoint, "snapshot", "save", str(target))
    saved = target.read_bytes()
    # etcdctl 3.4 keeps the checksum at the end of the file (snapshot restore checks it).
    assert saved.startswith(b"k=v\n") and len(saved) == 512 + 32
    assert saved[512:] == hashlib.sha256(saved[:512]).digest()
