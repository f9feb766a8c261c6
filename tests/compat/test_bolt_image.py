"""keelson's snapshots are bbolt files: the real ``etcdctl snapshot status`` reads them (and
runs bbolt's integrity check), and ``etcdctl snapshot restore`` turns one into a data dir a
real etcd 3.4 starts from with the same keys."""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
from pathlib import Path

import crc32c
import pytest

from keelson.backend.bolt_image import PAGE_SIZE, fnv64a, write_bolt_image
from keelson.testing.etcd import EtcdProcess, etcdctl, free_port
from keelson.testing.local_cluster import LocalCluster

needs_etcdctl = pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")


def rev_key(main: int, sub: int = 0) -> bytes:
    return main.to_bytes(8, "big") + b"_" + sub.to_bytes(8, "big")


def sample_buckets(seed: int) -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
    """Buckets shaped like a member's: many small records, a few larger than a page (so
    leaves overflow and the trees need branch levels), and an empty bucket."""
    rng = random.Random(seed)
    key = [(rev_key(i), rng.randbytes(rng.randint(0, 400))) for i in range(2, 4000)]
    key.append((rev_key(4000, 1), b"x" * 3 * PAGE_SIZE))
    lease = sorted((rng.randbytes(8), rng.randbytes(20)) for _ in range(50))
    return [(b"meta", [(b"consistent_index", bytes(16))]), (b"lease", lease),
            (b"key", key), (b"alarm", [])]


def status(path: Path) -> dict[str, int]:
    r = etcdctl("127.0.0.1:1", "snapshot", "status", str(path), "-w", "json")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def test_fnv64a_known_values() -> None:
    assert fnv64a(b"") == 0xCBF29CE484222325
    assert fnv64a(b"a") == 0xAF63DC4C8601EC8C
    assert fnv64a(b"foobar") == 0x85944171F73967E8


def test_rejects_unsorted_keys() -> None:
    with pytest.raises(ValueError, match="out of order"):
        write_bolt_image([(b"key", [(b"b", b""), (b"a", b"")])], io.BytesIO())


@needs_etcdctl
@pytest.mark.parametrize("seed", [1, 2])
def test_etcdctl_snapshot_status_reads_the_image(tmp_path: Path, seed: int) -> None:
    buckets = sample_buckets(seed)
    path = tmp_path / "snap.db"
    with open(path, "wb") as f:
        size = write_bolt_image(buckets, f)
    assert path.stat().st_size == size and size % PAGE_SIZE == 0
    # etcdctl's hash: crc32c over each bucket's name then its keys and values, in name order
    h = 0
    for name, items in sorted(buckets):
        h = crc32c.crc32c(name, h)
        for k, v in items:
            h = crc32c.crc32c(v, crc32c.crc32c(k, h))
    assert status(path) == {
        "hash": h,
        "revision": 4000,
        "totalKey": sum(len(items) for _, items in buckets),
        "totalSize": size,
    }


@pytest.mark.skipif(shutil.which("etcd") is None or shutil.which("etcdctl") is None,
                    reason="etcd/etcdctl not installed")
def test_keelson_snapshot_restores_into_etcd(tmp_path: Path) -> None:
    cluster = LocalCluster("keelson", 1, tmp_path / "keelson").start(timeout=90)
    try:
        for i in range(20):
            assert etcdctl(cluster.endpoints, "put", f"mig/{i:02}", f"v{i}").returncode == 0
        assert etcdctl(cluster.endpoints, "del", "mig/03").returncode == 0
        want = etcdctl(cluster.endpoints, "get", "mig/", "--prefix", "-w", "json")
        snap = tmp_path / "snap.db"
        r = etcdctl(cluster.endpoints, "snapshot", "save", str(snap))
        assert r.returncode == 0, r.stderr
    finally:
        cluster.stop()
    assert status(snap)["revision"] == json.loads(want.stdout)["header"]["revision"]
    etcd = EtcdProcess(str(tmp_path / "etcd"), peer_port=free_port())
    peer = f"http://127.0.0.1:{etcd.peer_port}"
    subprocess.run(
        ["etcdctl", "snapshot", "restore", str(snap), "--data-dir", etcd.data_dir,
         "--name", etcd.name, "--initial-cluster", f"{etcd.name}={peer}",
         "--initial-advertise-peer-urls", peer],
        check=True, capture_output=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    etcd.start(timeout=60)  # generous: the machine may be loaded
    try:
        got = etcdctl(etcd.endpoint, "get", "mig/", "--prefix", "-w", "json")
    finally:
        etcd.stop()
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["kvs"] == json.loads(want.stdout)["kvs"]
