"""A real etcd 3.4 on loopback, started and stopped by a test, for differential tests.

Theory of operation. Compatibility is judged against the real thing: a test starts Debian's
``etcd`` (3.4) in a temporary data dir with ports the OS handed out, runs the same client
commands against it and against keelson, and compares. ``EtcdProcess`` owns exactly the
process it started and stops it by PID; it never touches another etcd on the machine.
``etcdctl`` runs the real client with the v3 API and returns its output.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reported free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass(frozen=True, slots=True)
class EtcdctlResult:
    returncode: int
    stdout: str
    stderr: str


def etcdctl(endpoints: str, *args: str, stdin: str | None = None, timeout: float = 20,
            env: dict[str, str] | None = None) -> EtcdctlResult:
    """Run the real ``etcdctl`` (v3 API) against ``endpoints``."""
    exe = shutil.which("etcdctl")
    if exe is None:
        raise FileNotFoundError("etcdctl is not installed (Debian package etcd-client)")
    full_env = {**os.environ, "ETCDCTL_API": "3", **(env or {})}
    proc = subprocess.run(
        [exe, "--endpoints", endpoints, *args],
        input=stdin.encode() if stdin is not None else None,
        capture_output=True,
        timeout=timeout,
        env=full_env,
    )
    return EtcdctlResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@dataclass
class EtcdProcess:
    """One single-member etcd on 127.0.0.1 in ``data_dir``."""

    data_dir: str
    name: str = "etcd-ref"
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 20) -> EtcdProcess:
        exe = shutil.which("etcd")
        if exe is None:
            raise FileNotFoundError("etcd is not installed (Debian package etcd-server)")
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            exe,
            "--name", self.name,
            "--data-dir", self.data_dir,
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}",
            "--log-level", "error",
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        wait_for_port(self.client_port, timeout, self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if etcdctl(self.endpoint, "endpoint", "health").returncode == 0:
                return self
            time.sleep(0.1)
        raise TimeoutError("etcd did not become healthy")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> EtcdProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
