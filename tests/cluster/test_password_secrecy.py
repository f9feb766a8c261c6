"""A password sent by a client never reaches a member's log, WAL, snapshots or db in clear.

Three member processes at ``--log-level debug`` (every log line keelson writes), driven by
the real ``etcdctl``: users created with passwords, auth enabled, good and bad logins, a
password change, writes past ``--snapshot-count`` so snapshots exist on every member; then
every byte of every file under the cluster's directory (data dirs and member logs) is
searched for each password, as UTF-8 and UTF-16.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keelson.testing.cluster import ProcessCluster
from keelson.testing.etcd import etcdctl

SECRETS = ("Clear-Root-Pw-58213", "Clear-Alice-Pw-90417", "Clear-Alice-New-33780", "Wrong-Guess-71")


@pytest.mark.timeout(240)
def test_passwords_never_appear_in_logs_wal_or_snapshots(tmp_path: Path) -> None:
    root_pw, alice_pw, alice_new, wrong = SECRETS
    cluster = ProcessCluster(
        tmp_path, 3, extra_args=("--log-level", "debug", "--snapshot-count", "20")
    )
    try:
        cluster.start_all()
        cluster.wait_ready(60)
        ep = cluster.endpoints

        def ok(*args: str) -> str:
            r = etcdctl(ep, *args, timeout=30)
            assert r.returncode == 0, (args, r.stdout, r.stderr)
            return r.stdout

        ok("user", "add", "root", f"--new-user-password={root_pw}")
        ok("user", "grant-role", "root", "root")
        ok("user", "add", "alice", f"--new-user-password={alice_pw}")
        ok("auth", "enable")
        ok("--user", f"root:{root_pw}", "role", "add", "app")
        ok("--user", f"root:{root_pw}", "role", "grant-permission", "app", "readwrite",
           "--prefix=true", "app/")
        ok("--user", f"root:{root_pw}", "user", "grant-role", "alice", "app")
        bad = etcdctl(ep, "--user", f"alice:{wrong}", "get", "app/x", timeout=30)
        assert bad.returncode != 0
        assert "authentication failed" in bad.stderr
        r = etcdctl(ep, "--user", f"root:{root_pw}", "user", "passwd", "alice",
                    "--interactive=false", stdin=alice_new + "\n", timeout=30)
        assert r.returncode == 0, (r.stdout, r.stderr)
        for i in range(30):  # past --snapshot-count on every member
            ok("--user", f"alice:{alice_new}", "put", f"app/{i}", "v")
        got = ok("--user", f"alice:{alice_new}", "get", "app/29", "--print-value-only")
        assert got.strip() == "v"
    finally:
        cluster.stop_all()

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wal" for p in files)
    assert any(p.suffix == ".snap" for p in files), sorted(str(p) for p in files)
    assert any(p.suffix == ".log" and p.stat().st_size > 0 for p in files)
    for p in files:
        data = p.read_bytes()
        for secret in SECRETS:
            for encoded in (secret.encode(), secret.encode("utf-16-le")):
                assert encoded not in data, f"{secret!r} found in {p}"
