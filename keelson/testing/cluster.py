"""Start N keelson member processes on 127.0.0.1 for multi-process tests.

Theory of operation: ``ProcessCluster(tmp, n)`` picks free ports (bind to port 0, then
release), writes nothing but the members' data dirs and logs (``<tmp>/<name>.log``), and
starts ``python -m keelson.cli.main serve`` per member with etcd's flags (plus
``extra_args`` for every member). ``wait_ready`` polls each member's Status over gRPC until
all running members agree on a leader. Members are stopped by their PID only (SIGTERM, or
SIGKILL for crash tests); ``start`` starts a stopped member again on the same ports and data
dir. ``new_member`` makes a member that is not in ``--initial-cluster`` (to be added with
``member add`` and started with ``state="existing"`` and the cluster etcdctl printed);
``wait_exit`` waits for a member to stop on its own and returns its exit status.

TLS: ``peer_scheme="https"`` makes every member's peer URLs ``https://``; each member's own
flags (e.g. its ``--peer-cert-file``) go in its ``extra_args`` field, used on every start
after the cluster's ``extra_args``. Client URLs stay ``http://`` (the gRPC status polls use
a plain channel).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg

REPO = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ProcessMember:
    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    proc: subprocess.Popen[bytes] | None = None
    peer_scheme: str = "http"
    extra_args: tuple[str, ...] = ()  # this member's own flags (e.g. its certificate)

    @property
    def client_addr(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.peer_scheme}://127.0.0.1:{self.peer_port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.client_addr)


class ProcessCluster:
    def __init__(
        self,
        base: Path,
        size: int,
        *,
        heartbeat_ms: int = 50,
        election_ms: int = 500,
        extra_args: tuple[str, ...] = (),
        peer_scheme: str = "http",
    ):
        self.base = base
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.extra_args = extra_args
        self.peer_scheme = peer_scheme
        self.members = [
            ProcessMember(
                f"m{i}", base / f"m{i}", free_port(), free_port(), peer_scheme=peer_scheme
            )
            for i in range(size)
        ]
        self.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> str:
        """Client addresses of the running members, for ``etcdctl --endpoints``."""
        return ",".join(m.client_addr for m in self.running())

    def new_member(self, name: str) -> ProcessMember:
        """A member with fresh ports that ``--initial-cluster`` does not name; it is stopped
        with the others by ``stop_all``."""
        member = ProcessMember(
            name, self.base / name, free_port(), free_port(), peer_scheme=self.peer_scheme
        )
        self.members.append(member)
        return member

    def start(
        self,
        member: ProcessMember,
        state: str = "new",
        *,
        initial_cluster: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """Start ``member`` (again); ``initial_cluster`` defaults to the cluster's own."""
        self.base.mkdir(parents=True, exist_ok=True)
        client = f"http://{member.client_addr}"
        args = [
            sys.executable, "-m", "keelson.cli.main", "serve",
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial_cluster or self.initial_cluster,
            "--initial-cluster-state", state,
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            *self.extra_args,
            *member.extra_args,
            *extra_args,
        ]
        log = open(self.base / f"{member.name}.log", "ab")  # noqa: SIM115 - owned by the child
        env = dict(os.environ, PYTHONPATH=str(REPO))
        member.proc = subprocess.Popen(args, stdout=log, stderr=log, cwd=str(REPO), env=env)
        log.close()

    def start_all(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        for m in self.members:
            self.start(m)

    def status(self, member: ProcessMember, timeout: float = 1.0) -> pb.StatusResponse | None:
        try:
            with member.channel() as ch:
                resp: pb.StatusResponse = pbg.MaintenanceStub(ch).Status(  # type: ignore[no-untyped-call]
                    pb.StatusRequest(), timeout=timeout
                )
                return resp
        except grpc.RpcError:
            return None

    def running(self) -> list[ProcessMember]:
        return [m for m in self.members if m.proc is not None and m.proc.poll() is None]

    def wait_ready(self, timeout: float = 30.0) -> ProcessMember:
        """Wait until every running member reports the same leader; return the leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = [(m, self.status(m)) for m in self.running()]
            leaders = {s.leader for _, s in statuses if s is not None}
            if all(s is not None for _, s in statuses) and len(leaders) == 1 and 0 not in leaders:
                (lead,) = leaders
                for m, s in statuses:
                    if s is not None and s.header.member_id == lead:
                        return m
            time.sleep(0.1)
        raise TimeoutError(f"cluster not ready in {timeout}s; logs in {self.base}")

    def log_text(self, member: ProcessMember) -> str:
        """Everything ``member`` wrote to stdout and stderr so far (all its runs)."""
        path = self.base / f"{member.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_exit(self, member: ProcessMember, timeout: float = 30.0) -> int:
        """Wait until ``member`` exits by itself; its exit status. TimeoutError if it is still
        running after ``timeout`` (it is left running; ``stop`` ends it)."""
        if member.proc is None:
            raise RuntimeError(f"{member.name} was not started")
        try:
            code = member.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"{member.name} still running after {timeout}s; log in {self.base}"
            ) from None
        member.proc = None
        return code

    def stop(self, member: ProcessMember, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if member.proc is None:
            return
        if member.proc.poll() is None:
            member.proc.send_signal(sig)
            try:
                member.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                member.proc.kill()
                member.proc.wait()
        member.proc = None

    def stop_all(self) -> None:
        for m in self.members:
            self.stop(m)
