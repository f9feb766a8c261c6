"""The member process: build an ``EtcdServer`` from etcd's flags, wire transport and gRPC.

Theory of operation. ``run_member(config)`` takes the CLI's serve configuration (any object
with etcd 3.4's flag names as attributes: ``name``, ``data_dir``, ``initial_cluster``, ...;
the server does not import the CLI) and decides who this member is, in etcd's three cases:

* **restart** (the WAL exists): the member and cluster ids come from the WAL's metadata and
  the member list from the backend; ``--initial-cluster`` and ``--initial-cluster-state``
  are ignored (logged once), as etcd ignores them once a member is bootstrapped.
* **new** (no WAL, state ``new``): ids derived as etcd does (SHA-1 of the sorted peer URLs
  plus the cluster token; SHA-1 of the sorted member ids) and raft bootstrapped with them.
* **join** (no WAL, state ``existing``): the member asks the other members named in
  ``--initial-cluster`` for the cluster over the peer transport's discovery channel, takes
  the cluster id from the answer, checks that ``--initial-cluster`` names exactly the
  cluster's members (etcd's ``ValidateClusterAndAssignIDs``) and takes its own id from the
  member with its peer URLs; it refuses to start (``StartError``, nothing written to the data
  dir) when no peer answers, when it is not in the member list, or when that member has
  already started. Raft then starts with no peers and learns the configuration from the
  leader's log or snapshot; once it has a leader it publishes its name and client URLs.

Peer TLS: the CLI builds the contexts (``keelson.cli.tls``) and passes ``peer_ssl`` =
(listener context, dialer context); discovery and the transport use them for ``https://``
peer URLs, so a member whose certificate the others do not trust cannot join or send a raft
message (refused at the TLS handshake, logged by the transport once per peer).

It then starts the peer transport, the raft loop and the client gRPC server, and runs until
cancelled, or until it learns it was removed from the cluster (by applying its own removal,
or from a peer refusing it as removed): then it logs etcd's "the member has been permanently
removed from the cluster" and returns normally, so the process exits 0 as etcd's does.
``serve(config)`` installs uvloop and stops gracefully on SIGTERM/SIGINT: the gRPC server
stops accepting, the raft loop stops, the WAL and the backend are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import ssl
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server import gc_tuning
from keelson.server.etcdserver import EtcdServer, MemberConfig
from keelson.server.membership import decode_member_list, encode_member_list
from keelson.transport import DiscoveryError, DiscoveryInfo, Transport
from keelson.transport.discovery import discover_one
from keelson.transport.transport import PeerCertCheck
from keelson.wal import read_metadata

log = logging.getLogger(__name__)

DISCOVERY_TIMEOUT_S = 5.0
"""Per peer URL: connect, handshake and answer of a discovery request."""
REMOVED_STOP_DELAY_S = 1.0
"""etcd stops a removed member after 1 s, so it can still answer in-flight messages."""


class StartError(Exception):
    """The member cannot start; ``str()`` is one line for the operator (etcd's wording)."""


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


@dataclass(frozen=True)
class Identity:
    """Who this member is and with whom it starts (see the module docstring)."""

    member_id: int
    cluster_id: int
    peers: dict[int, tuple[str, ...]]
    peer_names: dict[int, str]
    new_cluster: bool
    joined: tuple[pb.Member, ...] = ()  # the cluster's member list, when joining


def wal_path(config: Any) -> Path:
    wal_dir = str(getattr(config, "wal_dir", "") or "")
    return Path(wal_dir) if wal_dir else Path(str(config.data_dir)) / "member" / "wal"


def has_wal(config: Any) -> bool:
    path = wal_path(config)
    return path.is_dir() and any(path.glob("*.wal"))


def _from_flags(config: Any) -> Identity:
    """Ids derived from ``--initial-cluster`` (a new cluster's bootstrap)."""
    cluster = parse_initial_cluster(str(config.initial_cluster))
    if config.name not in cluster:
        raise StartError(
            f"couldn't find local name {config.name!r} in the initial cluster configuration"
        )
    token = str(config.initial_cluster_token)
    peers = {compute_member_id(urls, token): urls for _, urls in sorted(cluster.items())}
    names = {compute_member_id(urls, token): name for name, urls in sorted(cluster.items())}
    return Identity(
        member_id=compute_member_id(cluster[config.name], token),
        cluster_id=compute_cluster_id(peers),
        peers=peers,
        peer_names=names,
        new_cluster=str(config.initial_cluster_state) == "new",
    )


def _from_wal(config: Any) -> Identity:
    """A restart: the ids written in the WAL's metadata when the member first started."""
    meta = read_metadata(wal_path(config))  # EtcdServer replays the whole log afterwards
    if len(meta) < 16:
        raise StartError(f"{wal_path(config)}: WAL metadata of {len(meta)} bytes, want 16")
    member_id, cluster_id = struct.unpack_from(">QQ", meta)
    log.info(
        "member %x of cluster %x restarts from its data dir %s: --initial-cluster and "
        "--initial-cluster-state are ignored",
        member_id, cluster_id, config.data_dir,
    )
    try:
        flags = _from_flags(config)
    except (StartError, ValueError):
        flags = None
    if flags is not None and flags.member_id == member_id and flags.cluster_id == cluster_id:
        peers, names = flags.peers, flags.peer_names  # only used if the backend has none
    else:
        peers, names = {}, {}
    return Identity(member_id, cluster_id, peers, names, new_cluster=False)


def _describe(cluster_id: int, members: list[pb.Member]) -> str:
    shown = " ".join(
        f"{m.name or '(unstarted)'}:{m.ID:x}={','.join(m.peerURLs)}"
        for m in sorted(members, key=lambda m: sorted(m.peerURLs))
    )
    return f"{{ClusterID:{cluster_id:x} Members:[{shown}]}}"


async def _ask_cluster(
    urls: list[str], mine: list[str], ssl_client: ssl.SSLContext | None = None
) -> tuple[DiscoveryInfo, list[pb.Member]]:
    """The first answer among ``urls`` whose member list has this member's peer URLs; else
    the first answer at all (a member that has not yet applied the ``member add`` answers
    an older list, so the others are asked before giving up). DiscoveryError, in etcd's
    words, when no URL answers."""
    first: tuple[DiscoveryInfo, list[pb.Member]] | None = None
    problems: list[str] = []
    for url in urls:
        try:
            info = await discover_one(url, timeout=DISCOVERY_TIMEOUT_S, ssl_client=ssl_client)
            _, remote = decode_member_list(info.members)
        except (DiscoveryError, ValueError) as exc:
            log.warning("failed to get cluster response from %s: %s", url, exc)
            problems.append(str(exc))
            continue
        if any(sorted(m.peerURLs) == mine for m in remote):
            return info, remote
        if first is None:
            first = (info, remote)
    if first is None:
        detail = "; ".join(problems) if problems else "no other member in --initial-cluster"
        raise DiscoveryError(
            f"could not retrieve cluster information from the given URLs ({detail})"
        )
    return first


async def _join(config: Any, ssl_client: ssl.SSLContext | None = None) -> Identity:
    """Learn the running cluster from its members and check this member belongs to it
    (over TLS with ``ssl_client`` for ``https://`` peer URLs)."""
    cluster = parse_initial_cluster(str(config.initial_cluster))
    if config.name not in cluster:
        raise StartError(
            f"couldn't find local name {config.name!r} in the initial cluster configuration"
        )
    mine = sorted(cluster[config.name])
    others = sorted(u for name, urls in cluster.items() if name != config.name for u in urls)
    try:
        info, remote = await _ask_cluster(others, mine, ssl_client)
    except (DiscoveryError, ValueError) as exc:
        raise StartError(f"cannot fetch cluster info from peer urls: {exc}") from None
    if not remote:
        raise StartError(
            "cannot fetch cluster info from peer urls: "
            "failed to get raft cluster member(s) from the given URLs"
        )
    cid = info.cluster_id
    me = next((m for m in remote if sorted(m.peerURLs) == mine), None)
    if me is None:
        why = "member count is unequal" if len(remote) != len(cluster) else (
            "unmatched member while checking PeerURLs"
        )
        raise StartError(
            f"error validating peerURLs {_describe(cid, remote)}: {why} (this member's peer "
            f"URLs {','.join(mine)} are not in the cluster's member list; add it first with "
            f"'etcdctl member add {config.name} --peer-urls={','.join(mine)}')"
        )
    if len(remote) != len(cluster):
        raise StartError(
            f"error validating peerURLs {_describe(cid, remote)}: member count is unequal "
            f"(--initial-cluster names {len(cluster)} members, the cluster has {len(remote)})"
        )
    local_urls = sorted(sorted(urls) for urls in cluster.values())
    for m in remote:
        if sorted(m.peerURLs) not in local_urls:
            raise StartError(
                f"error validating peerURLs {_describe(cid, remote)}: unmatched member while "
                f"checking PeerURLs ({','.join(m.peerURLs)} is not in --initial-cluster)"
            )
    if me.name or me.clientURLs:
        raise StartError(f"member {me.ID:x} has already been bootstrapped")
    local_names = {tuple(sorted(urls)): name for name, urls in cluster.items()}
    log.info(
        "joining cluster %x as member %x (learned from member %x: %s)",
        cid, me.ID, info.member_id, _describe(cid, remote),
    )
    return Identity(
        member_id=me.ID,
        cluster_id=cid,
        peers={m.ID: tuple(m.peerURLs) for m in remote},
        peer_names={
            m.ID: m.name or local_names.get(tuple(sorted(m.peerURLs)), "") for m in remote
        },
        new_cluster=False,
        joined=tuple(remote),
    )


async def identify(config: Any, ssl_client: ssl.SSLContext | None = None) -> Identity:
    """Who this member is: from the WAL, from the flags, or from the running cluster
    (asked over TLS with ``ssl_client`` when its peer URLs are ``https://``)."""
    if has_wal(config):
        return _from_wal(config)
    if str(config.initial_cluster_state) == "existing":
        return await _join(config, ssl_client)
    return _from_flags(config)


def member_config(config: Any, ident: Identity | None = None) -> MemberConfig:
    """Translate the CLI's serve config (etcd's flag names) into a MemberConfig; without
    ``ident`` the ids are derived from ``--initial-cluster`` (a new cluster)."""
    if ident is None:
        ident = _from_flags(config)
    return MemberConfig(
        name=str(config.name),
        data_dir=str(config.data_dir),
        wal_dir=str(getattr(config, "wal_dir", "") or ""),
        member_id=ident.member_id,
        cluster_id=ident.cluster_id,
        peers=ident.peers,
        peer_names=ident.peer_names,
        client_urls=tuple(config.advertise_client_urls),
        new_cluster=ident.new_cluster,
        heartbeat_interval_ms=int(config.heartbeat_interval),
        election_timeout_ms=int(config.election_timeout),
        snapshot_count=int(config.snapshot_count),
        snapshot_catchup_entries=int(
            getattr(config, "experimental_snapshot_catchup_entries", 5000)
        ),
        quota_backend_bytes=int(config.quota_backend_bytes),
        max_request_bytes=int(config.max_request_bytes),
        max_txn_ops=int(config.max_txn_ops),
        auth_token=str(getattr(config, "auth_token", "simple")),
        auth_token_ttl=int(getattr(config, "auth_token_ttl", 300)),
        bcrypt_cost=int(getattr(config, "bcrypt_cost", 10)),
        client_cert_auth=bool(getattr(config, "client_cert_auth", False)),
        backend_batch_interval_s=float(getattr(config, "backend_batch_interval_s", 0.0)),
        backend_batch_limit=int(getattr(config, "backend_batch_limit", 0)),
        watch_progress_notify_interval_s=float(
            getattr(config, "watch_progress_notify_interval_s", 600.0)
        ),
        auto_compaction_mode=str(config.auto_compaction_mode),
        auto_compaction_retention=str(config.auto_compaction_retention),
    )


ClientServerFactory = Callable[[EtcdServer, list[str], int], Any]
"""Builds the client-facing gRPC server: (server, ["host:port", ...], max_request_bytes) ->
an unstarted ``grpc.aio.Server``. The caller passes ``keelson.api.grpc_server.
build_grpc_server`` (server/ may not import api/, so the CLI injects it)."""


PeerSSL = tuple[ssl.SSLContext | None, ssl.SSLContext | None]
"""(context for the peer listener, context for dialing peers); either may be None: no TLS
listener (http peer URLs) / no https peers can be dialled. Built by ``keelson.cli.tls``."""


async def run_member(
    config: Any,
    client_server: ClientServerFactory | None = None,
    peer_ssl: PeerSSL = (None, None),
    peer_cert_check: PeerCertCheck | None = None,
    on_serving: Callable[[], None] | None = None,
) -> None:
    """Run one member until cancelled or removed from the cluster; see the module
    docstring. Without ``client_server`` the member serves peers only (no client API).
    ``on_serving`` is called once the member serves clients.
    ``peer_ssl`` secures the peer transport and discovery (``https://`` peer URLs);
    ``peer_cert_check`` may refuse a verified peer certificate (see ``keelson.cli.tls``).
    Raises ``StartError`` (before anything is written) when it cannot join."""
    ssl_server, ssl_client = peer_ssl
    ident = await identify(config, ssl_client)
    cfg = member_config(config, ident)
    server_box: list[EtcdServer] = []
    removed = asyncio.Event()

    def on_message(m: Any) -> None:
        if server_box:
            server_box[0].step(m)

    def on_delivered() -> None:
        if server_box:
            server_box[0].drive_delivered()

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
        on_delivered=on_delivered,
        on_unreachable=on_unreachable,
        on_snapshot_status=on_snapshot_status,
        on_removed=removed.set,
        ssl_server=ssl_server,
        ssl_client=ssl_client,
        peer_cert_check=peer_cert_check,
    )

    async def forward(peer: int, kind: str, payload: bytes) -> bytes:
        return await transport.request(peer, kind, payload, timeout=5.0)

    server = EtcdServer(cfg, send=transport.send, forward=forward)
    server_box.append(server)
    if ident.joined:
        # The full entries (learner flag, names, client URLs) until the log or a snapshot
        # from the leader replaces them.
        with server.backend.write() as btx:
            for m in ident.joined:
                server.members.put(btx, m)
    transport.set_request_handler("lease_renew", server.handle_forwarded_renew)
    transport.set_request_handler("member_promote", server.handle_forwarded_promote)
    transport.set_request_handler("lease_time_to_live", server.handle_forwarded_time_to_live)
    transport.set_discovery_provider(
        lambda: encode_member_list(cfg.cluster_id, server.members.sorted())
    )
    known: dict[int, list[str]] = {}

    def sync_peers(members: list[Any], gone: list[int]) -> None:
        for mid in gone:
            if mid == cfg.member_id:
                removed.set()
                continue
            known.pop(mid, None)
            transport.remove_peer(mid)  # also refuses its connections from now on
        for m in members:
            urls = list(m.peerURLs)
            if m.ID == cfg.member_id or not urls:
                continue
            if m.ID not in known:
                transport.add_peer(m.ID, urls)
            elif known[m.ID] != urls:
                transport.update_peer(m.ID, urls)
            known[m.ID] = urls

    for mid in sorted(server.members.removed):
        transport.remove_peer(mid)
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
    if on_serving is not None:
        on_serving()
    publisher = asyncio.create_task(_publish(server, cfg), name="publish")
    log.info(
        "member %x of cluster %x serving clients on %s",
        cfg.member_id, cfg.cluster_id, ",".join(config.listen_client_urls),
    )
    try:
        await removed.wait()
        log.warning("the member has been permanently removed from the cluster")
        log.warning("the data-dir used by this member must be removed")
        await asyncio.sleep(REMOVED_STOP_DELAY_S)
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        if grpc_server is not None:
            await grpc_server.stop(0.5)
        await transport.stop()
        await server.stop()


async def _publish(server: EtcdServer, cfg: MemberConfig) -> None:
    """Once per start, propose this member's name and client URLs until the proposal is
    applied (etcd's publish): ``member list`` and every ``etcdctl --cluster`` command learn
    the client URLs from it, a joined member shows as unstarted until then, and a member
    with a name is refused a second join ("has already been bootstrapped")."""
    delay = cfg.heartbeat_interval_ms / 1000
    while True:
        me = server.members.members.get(cfg.member_id)
        if me is not None and server.leader_id:
            try:
                await server.publish(cfg.name, list(cfg.client_urls))
                log.info("published name %r and client URLs to the cluster", cfg.name)
                return
            except errors.EtcdError as exc:
                log.debug("publishing attributes: %s; retrying", exc)
        await asyncio.sleep(delay)
        delay = min(1.0, delay * 2)


def serve(
    config: Any,
    client_server: ClientServerFactory | None = None,
    peer_ssl: PeerSSL = (None, None),
    peer_cert_check: PeerCertCheck | None = None,
) -> None:
    """Run a member in this process until SIGTERM/SIGINT (uvloop when installed); see
    :func:`run_member` for the arguments."""
    logging.basicConfig(
        level=getattr(logging, str(getattr(config, "log_level", "info")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    tuned = gc_tuning.tune(os.environ)

    async def main() -> None:
        task = asyncio.create_task(run_member(
            config, client_server, peer_ssl, peer_cert_check,
            on_serving=gc_tuning.freeze_startup if tuned else None,
        ))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            log.info("stopped")

    asyncio.run(main())
