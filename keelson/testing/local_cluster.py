"""Start a local cluster of either etcd or keelson on loopback, with the same flags.

keelson takes etcd's flags, so one launcher serves both: the benchmark starts each system
the same way, in fresh data dirs with ports from the OS, and stops exactly the processes
it started (by PID).

TLS: ``client_scheme="https"`` makes the client URLs ``https://`` (the TLS flags go in
``extra_args``, identical for both kinds), and ``etcdctl_args`` (``--cacert/--cert/--key``
or ``--insecure-skip-tls-verify``) are what the launcher's own etcdctl calls (health
checks, status) need to reach the members. Both default to plain HTTP as before.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from keelson.testing.etcd import etcdctl, free_port, wait_for_port

REPO = Path(__file__).resolve().parent.parent.parent


def command_for(kind: str) -> list[str]:
    if kind == "etcd":
        exe = shutil.which("etcd")
        if exe is None:
            raise SystemExit("etcd is not installed: apt-get install etcd-server")
        return [exe]
    if kind == "keelson":
        return [sys.executable, "-m", "keelson.cli.main", "serve"]
    raise ValueError(kind)


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    client_scheme: str = "http"

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:port`` over plain HTTP; ``https://127.0.0.1:port`` with TLS."""
        if self.client_scheme == "https":
            return f"https://127.0.0.1:{self.client_port}"
        return f"127.0.0.1:{self.client_port}"

    def peak_rss_kib(self) -> int:
        """Peak resident set size (VmHWM) of the member process, in KiB."""
        if self.proc is None:
            return 0
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0


@dataclass
class LocalCluster:
    kind: str
    size: int
    workdir: Path
    members: list[Member] = field(default_factory=list)
    extra_args: tuple[str, ...] = ()
    """More flags for every member (e.g. ``--quota-backend-bytes``), identical for both kinds."""
    client_scheme: str = "http"
    """``https`` for TLS client URLs (the certificate flags go in ``extra_args``)."""
    etcdctl_args: tuple[str, ...] = ()
    """Flags the launcher's own etcdctl calls need (e.g. ``--cacert ... --cert ... --key``)."""

    def start(self, timeout: float = 60) -> LocalCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.members:
            self.members = [
                Member(
                    f"m{i}", free_port(), free_port(), self.workdir / f"m{i}",
                    client_scheme=self.client_scheme,
                )
                for i in range(self.size)
            ]
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        for m in self.members:
            self._launch(m, initial, env)
        for m in self.members:
            assert m.proc is not None
            wait_for_port(m.client_port, timeout, m.proc)
        self.wait_healthy(timeout)
        return self

    def _launch(self, m: Member, initial: str, env: dict[str, str]) -> None:
        client = f"{self.client_scheme}://127.0.0.1:{m.client_port}"
        peer = f"http://127.0.0.1:{m.peer_port}"
        args = [
            *command_for(self.kind),
            "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"bench-{self.kind}",
            "--log-level", "error",
            *self.extra_args,
        ]
        with open(self.workdir / f"{m.name}.log", "ab") as log:
            m.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=REPO)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = etcdctl(self.endpoints, *self.etcdctl_args, "endpoint", "health", timeout=10)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.kind} cluster did not become healthy")

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def leader_endpoint(self) -> str:
        r = etcdctl(self.endpoints, *self.etcdctl_args, "endpoint", "status", "-w", "json")
        statuses = json.loads(r.stdout)
        for s in statuses:
            if s["Status"]["leader"] == s["Status"]["header"]["member_id"]:
                return str(s["Endpoint"])
        return self.members[0].endpoint

    def db_size(self) -> int:
        r = etcdctl(self.endpoints, *self.etcdctl_args, "endpoint", "status", "-w", "json")
        return max(int(s["Status"]["dbSize"]) for s in json.loads(r.stdout))

    def stop(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGTERM)
        for m in self.members:
            if m.proc is None:
                continue
            try:
                m.proc.wait(15)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(5)

    def restart_member(self, index: int, timeout: float = 120) -> float:
        """Stop member ``index`` (SIGTERM, wait for exit), start it again with the same
        flags and data dir, and return the seconds from its launch until it answers a
        *linearizable* read (``etcdctl get``, default consistency) on its own endpoint:
        replaying its state, rejoining the cluster and confirming the leader's commit."""
        m = self.members[index]
        assert m.proc is not None
        m.proc.send_signal(signal.SIGTERM)
        m.proc.wait(30)
        initial = ",".join(f"{x.name}=http://127.0.0.1:{x.peer_port}" for x in self.members)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        start = time.monotonic()
        self._launch(m, initial, env)
        deadline = start + timeout
        while time.monotonic() < deadline:
            assert m.proc is not None
            if m.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} member {m.name} exited after restart")
            r = etcdctl(m.endpoint, *self.etcdctl_args, "--dial-timeout", "1s",
                        "--command-timeout", "3s", "get", "probe", timeout=10)
            if r.returncode == 0:
                return time.monotonic() - start
            time.sleep(0.02)
        raise TimeoutError("member did not serve a linearizable read after restart")
