"""keelson member processes for the torture suite, every peer link through ``PeerProxy``.

Theory of operation: ``TortureCluster(base, n)`` gives each member a client port, a private
peer port it listens on, and a proxy port that is its advertised peer URL (in
``--initial-advertise-peer-urls`` and ``--initial-cluster``), so all member-to-member
traffic crosses the proxy. Members run ``python -m keelson.cli.main serve`` with short
heartbeat/election timeouts and a low ``--snapshot-count`` so snapshots and log compaction
happen during a run. Processes are signalled by PID only (``Popen`` objects this module
started): SIGKILL, SIGSTOP/SIGCONT, and restart on the same data dir and ports.

Invariants: ``Node.proc`` is the only process a node ever signals; a node that is paused is
in ``paused`` until resumed (``stop_all`` resumes before killing, so nothing is left
stopped); ``members`` holds every node that is (or was, until removed) part of the
cluster, ``removed`` is set once a MemberRemove for it succeeded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.server.member import compute_member_id
from keelson.testing.cluster import free_port
from tests.torture.proxy import PeerProxy

REPO = Path(__file__).resolve().parent.parent.parent
TOKEN = "torture"


@dataclass
class Node:
    """One member: its ports, data dir, log and (while running) its process."""

    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    proxy_port: int
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    removed: bool = False
    learner: bool = False
    member_id: int = 0
    start_state: str = "new"

    @property
    def client_addr(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def advertised_peer_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class TortureCluster:
    """N members on loopback, a proxy in front of each, controlled by PID."""

    def __init__(
        self,
        base: Path,
        size: int,
        *,
        heartbeat_ms: int = 50,
        election_ms: int = 500,
        snapshot_count: int = 500,
    ) -> None:
        self.base = base
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.snapshot_count = snapshot_count
        self.proxy = PeerProxy()
        self.members: list[Node] = []
        self._next = 0
        self._channels: dict[str, grpc.Channel] = {}
        self._channel_lock = threading.Lock()
        self.exits: list[tuple[str, int]] = []  # exits the harness did not cause
        for _ in range(size):
            node = self._new_node()
            node.member_id = compute_member_id([node.advertised_peer_url], TOKEN)
            self.proxy.set_member_id(node.member_id, node.name)

    def _new_node(self) -> Node:
        name = f"m{self._next}"
        self._next += 1
        peer = free_port()
        node = Node(name, self.base / name, free_port(), peer, self.proxy.add_member(name, peer))
        self.members.append(node)
        return node

    # --- views ---------------------------------------------------------------------------

    def live(self) -> list[Node]:
        """Members that are in the cluster (not removed)."""
        return [n for n in self.members if not n.removed]

    def voters(self) -> list[Node]:
        return [n for n in self.live() if not n.learner]

    def node(self, name: str) -> Node:
        for n in self.members:
            if n.name == name:
                return n
        raise KeyError(name)

    def initial_cluster(self, nodes: list[Node]) -> str:
        return ",".join(f"{n.name}={n.advertised_peer_url}" for n in nodes)

    def channel(self, node: Node) -> grpc.Channel:
        """A cached channel to ``node``'s client port (grpc reconnects by itself)."""
        with self._channel_lock:
            ch = self._channels.get(node.name)
            if ch is None:
                ch = grpc.insecure_channel(node.client_addr)
                self._channels[node.name] = ch
            return ch

    # --- processes -----------------------------------------------------------------------

    def start(self, node: Node, *, state: str = "new", cluster: list[Node] | None = None) -> None:
        """Start (or restart from its data dir) ``node``'s process."""
        if node.proc is not None and node.proc.poll() is not None:
            self.exits.append((node.name, node.proc.returncode))
        client = f"http://{node.client_addr}"
        args = [
            sys.executable, "-m", "keelson.cli.main", "serve",
            "--name", node.name,
            "--data-dir", str(node.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", f"http://127.0.0.1:{node.peer_port}",
            "--initial-advertise-peer-urls", node.advertised_peer_url,
            "--initial-cluster", self.initial_cluster(cluster or self.live()),
            "--initial-cluster-state", state,
            "--initial-cluster-token", TOKEN,
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            "--snapshot-count", str(self.snapshot_count),
        ]  # fmt: skip
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.base / f"{node.name}.log", "ab") as log:
            log.write(f"=== start {time.strftime('%H:%M:%S')} state={state}\n".encode())
            log.flush()
            env = dict(os.environ, PYTHONPATH=str(REPO))
            node.proc = subprocess.Popen(args, stdout=log, stderr=log, cwd=str(REPO), env=env)
        node.paused = False
        node.start_state = state

    def start_all(self) -> None:
        initial = list(self.members)
        for n in initial:
            self.start(n, cluster=initial)

    def kill(self, node: Node) -> None:
        """SIGKILL ``node`` (resuming it first is unnecessary: SIGKILL ends a stopped process)."""
        if node.proc is not None:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(30)
        node.proc = None
        node.paused = False

    def pause(self, node: Node) -> None:
        if node.running() and node.proc is not None and not node.paused:
            node.proc.send_signal(signal.SIGSTOP)
            node.paused = True

    def resume(self, node: Node) -> None:
        if node.proc is not None and node.paused:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)
            node.paused = False

    def stop_all(self) -> None:
        """Resume, then SIGTERM (SIGKILL after 10 s) every process this cluster started."""
        for n in self.members:
            self.resume(n)
        for n in self.members:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.members:
            if n.proc is not None:
                try:
                    n.proc.wait(10)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait(10)
                n.proc = None
        with self._channel_lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()
        self.proxy.close()

    def crashed(self) -> list[tuple[str, int]]:
        """Members whose process exited although the harness did not stop it."""
        out = list(self.exits)
        for n in self.members:
            if n.proc is not None:
                rc = n.proc.poll()
                if rc is not None:
                    out.append((n.name, rc))
        return out

    # --- status ----------------------------------------------------------------------------

    def status(self, node: Node, timeout: float = 1.0) -> pb.StatusResponse | None:
        if not node.running() or node.paused:
            return None
        try:
            resp: pb.StatusResponse = pbg.MaintenanceStub(self.channel(node)).Status(  # type: ignore[no-untyped-call]
                pb.StatusRequest(), timeout=timeout
            )
            return resp
        except grpc.RpcError:
            return None

    def leader(self, timeout: float = 1.0) -> Node | None:
        """The member that a running member's Status names as leader and that agrees."""
        for n in self.live():
            s = self.status(n, timeout)
            if s is None or s.leader == 0:
                continue
            for m in self.live():
                if m.member_id == s.leader:
                    ms = self.status(m, timeout)
                    if ms is not None and ms.leader == s.leader:
                        return m
        return None

    def wait_ready(self, timeout: float = 60.0) -> Node:
        """Wait until every running member reports the same leader; return the leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [n for n in self.live() if n.running()]
            statuses = [self.status(n) for n in running]
            leaders = {s.leader for s in statuses if s is not None}
            if statuses and all(s is not None for s in statuses) and len(leaders) == 1:
                (lead,) = leaders
                if lead != 0:
                    self.refresh_ids()
                    for n in running:
                        if n.member_id == lead:
                            return n
            time.sleep(0.1)
        raise TimeoutError(f"cluster not ready in {timeout}s; logs in {self.base}")

    def refresh_ids(self) -> None:
        """Learn member ids from MemberList and tell the proxy (peer URL -> name)."""
        by_url = {n.advertised_peer_url: n for n in self.members}
        for n in self.live():
            if not n.running() or n.paused:
                continue
            try:
                resp = pbg.ClusterStub(self.channel(n)).MemberList(  # type: ignore[no-untyped-call]
                    pb.MemberListRequest(), timeout=2.0
                )
            except grpc.RpcError:
                continue
            for m in resp.members:
                for url in m.peerURLs:
                    node = by_url.get(url)
                    if node is not None:
                        node.member_id = m.ID
                        node.learner = m.isLearner
                        self.proxy.set_member_id(m.ID, node.name)
            return

    # --- membership ------------------------------------------------------------------------

    def add_learner(self, via: Node) -> Node:
        """MemberAdd a learner through ``via``, then start it with state ``existing``."""
        node = self._new_node()
        try:
            resp = pbg.ClusterStub(self.channel(via)).MemberAdd(  # type: ignore[no-untyped-call]
                pb.MemberAddRequest(peerURLs=[node.advertised_peer_url], isLearner=True),
                timeout=5.0,
            )
        except grpc.RpcError:
            node.removed = True  # never joined; may or may not have been added (info)
            raise
        node.member_id = resp.member.ID
        node.learner = True
        self.proxy.set_member_id(node.member_id, node.name)
        cluster = [n for n in self.live() if n is not node] + [node]
        self.start(node, state="existing", cluster=cluster)
        return node

    def promote(self, via: Node, node: Node) -> None:
        pbg.ClusterStub(self.channel(via)).MemberPromote(  # type: ignore[no-untyped-call]
            pb.MemberPromoteRequest(ID=node.member_id), timeout=5.0
        )
        node.learner = False

    def remove(self, via: Node, node: Node) -> None:
        pbg.ClusterStub(self.channel(via)).MemberRemove(  # type: ignore[no-untyped-call]
            pb.MemberRemoveRequest(ID=node.member_id), timeout=5.0
        )
        node.removed = True
