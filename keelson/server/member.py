"""The member process: build an ``EtcdServer`` from etcd's flags, wire transport and gRPC.

Theory of operation. ``run_member(config)`` takes the CLI's serve configuration (any object
with etcd 3.4's flag names as attributes: ``name``, ``data_dir``, ``initial_cluster``, ...;
the server does not import the CLI), derives member and cluster ids as etcd does (SHA-1 of
the sorted peer URLs plus the cluster token; SHA-1 of the sorted member ids), starts the
peer transport, the raft loop and the client gRPC server, and runs until cancelled.
``serve(config)`` installs uvloop and stops gracefully on SIGTERM/SIGINT: the gRPC server
stops accepting, the raft loop stops, the WAL and the backend are closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import struct
from collections.abc import Callable, Iterable
from typing import Any

from keelson.server.etcdserver import EtcdServer, MemberConfig
from keelson.transport import Transport

log = logging.getLogger(__name__)


def compute_member_id(peer_urls: Iterable[str], token: str) -> int:
    data = "".join(sorted(peer_urls)) + token
    return int(struct.unpack(">Q", hashlib.sha1(data.encode()).digest()[:8])[0])


def compute_cluster_id(member_ids: Iterable[int]) -> int:
    packed = b"".join(struct.pack(">Q", i) for i in sorted(member_ids))
    return int(struct.unpack(">Q", hashlib.sha1(packed).digest()[:8])[0])


def parse_initial_cluster(spec: str) -> dict[str, tuple[str, ...]]:
    """``name=url,name=url2,...`` to {name: urls}; raises ValueError on a bad entry."""
    out: dict[str, list[str]] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, url = part.partition("=")
        if not sep or not name or not url:
            raise ValueError(f"initial-cluster: bad entry {part!r} (want name=url)")
        out.setdefault(name, []).append(url)
    return {k: tuple(v) for k, v in out.items()}


def member_config(config: Any) -> MemberConfig:
    """Translate the CLI's serve config (etcd's flag names) into a MemberConfig."""
    cluster = parse_initial_cluster(str(config.initial_cluster))
    if config.name not in cluster:
        raise ValueError(
            f"couldn't find local name {config.name!r} in the initial cluster configuration"
        )
    token = str(config.initial_cluster_token)
    peers = {compute_member_id(urls, token): urls for _, urls in sorted(cluster.items())}
    names = {compute_member_id(urls, token): name for name, urls in sorted(cluster.items())}
    me = compute_member_id(cluster[config.name], token)
    return MemberConfig(
        name=str(config.name),
        data_dir=str(config.data_dir),
        wal_dir=str(getattr(config, "wal_dir", "") or ""),
        member_id=me,
        cluster_id=compute_cluster_id(peers),
        peers=peers,
        peer_names=names,
        client_urls=tuple(config.advertise_client_urls),
        new_cluster=str(config.initial_cluster_state) == "new",
        heartbeat_interval_ms=int(config.heartbeat_interval),
        election_timeout_ms=int(config.election_timeout),
        snapshot_count=int(config.snapshot_count),
        quota_backend_bytes=int(config.quota_backend_bytes),
        max_request_bytes=int(config.max_request_bytes),
        max_txn_ops=int(config.max_txn_ops),
        auto_compaction_mode=str(config.auto_compaction_mode),
        auto_compaction_retention=str(config.auto_compaction_retention),
    )


ClientServerFactory = Callable[[EtcdServer, list[str], int], Any]
"""Builds the client-facing gRPC server: (server, ["host:port", ...], max_request_bytes) ->
an unstarted ``grpc.aio.Server``. The caller passes ``keelson.api.grpc_server.
build_grpc_server`` (server/ may not import api/, so the CLI injects it)."""


async def run_member(config: Any, client_server: ClientServerFactory | None = None) -> None:
    """Run one member until cancelled; see the module docstring. Without
    ``client_server`` the member serves peers only (no client API)."""

    cfg = member_config(config)
    transport: Transport | None = None
    server_box: list[EtcdServer] = []

    def on_message(m: Any) -> None:
        if server_box:
            server_box[0].step(m)

    def on_unreachable(peer: int) -> None:
        if server_box:
            server_box[0].node.report_unreachable(peer)

    def on_snapshot_status(peer: int, failed: bool) -> None:
        if server_box:
            server_box[0].node.report_snapshot(peer, failed)

    transport = Transport(
        cfg.member_id,
        cfg.cluster_id,
        on_message,
        on_unreachable=on_unreachable,
        on_snapshot_status=on_snapshot_status,
    )
    async def forward(peer: int, kind: str, payload: bytes) -> bytes:
        assert transport is not None
        return await transport.request(peer, kind, payload, timeout=5.0)

    server = EtcdServer(cfg, send=transport.send, forward=forward)
    server_box.append(server)
    transport.set_request_handler("lease_renew", server.handle_forwarded_renew)
    known: dict[int, list[str]] = {}

    def sync_peers(members: list[Any], removed: list[int]) -> None:
        assert transport is not None
        for mid in removed:
            if mid in known:
                known.pop(mid)
                transport.remove_peer(mid)
        for m in members:
            urls = list(m.peerURLs)
            if m.ID == cfg.member_id or not urls:
                continue
            if m.ID not in known:
                transport.add_peer(m.ID, urls)
            elif known[m.ID] != urls:
                transport.update_peer(m.ID, urls)
            known[m.ID] = urls

    sync_peers(server.members.sorted(), [])
    server.on_members_changed = sync_peers
    for host, port in config.peer_listen_addresses():
        await transport.start(host, port)
    grpc_server = None
    if client_server is not None:
        grpc_server = client_server(
            server,
            [f"{host}:{port}" for host, port in config.client_listen_addresses()],
            cfg.max_request_bytes,
        )
    else:
        log.warning("no client API given to run_member: serving peers only")
    await server.start()
    if grpc_server is not None:
        await grpc_server.start()
    log.info(
        "member %x of cluster %x serving clients on %s",
        cfg.member_id, cfg.cluster_id, ",".join(config.listen_client_urls),
    )
    try:
        await asyncio.Event().wait()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(0.5)
        await transport.stop()
        await server.stop()


def serve(config: Any, client_server: ClientServerFactory | None = None) -> None:
    """Run a member in this process until SIGTERM/SIGINT (uvloop when installed)."""
    logging.basicConfig(
        level=getattr(logging, str(getattr(config, "log_level", "info")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        task = asyncio.create_task(run_member(config, client_server))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            log.info("stopped")

    asyncio.run(main())
