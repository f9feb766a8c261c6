"""Member-to-member transport: raft messages, forwarded requests and snapshots over TCP/TLS.

Theory of operation
-------------------
Each member listens on one asyncio server. For every peer it knows (``add_peer``) it keeps
one *outbound* MESSAGES connection, dialled lazily by a per-peer writer task the first time
something is queued for that peer. Messages flow one way on a connection (dialer to
listener); the peer answers raft messages over its own outbound connection to us, as etcd's
rafthttp does with its pair of streams.

``send`` never blocks: it encodes each message into a frame (see ``frames``) and appends it
to the peer's bounded queue. The writer task takes *everything* queued in one turn and hands
it to the socket in a single ``write`` (so 1000 ``send`` calls in one loop turn cost one
write), then awaits ``drain``; messages queued meanwhile form the next batch. If the queue is
full the message is dropped and ``on_unreachable(peer)`` is reported (raft retries). If the
writer cannot connect, the queue is discarded (stale raft traffic; raft retransmits),
``on_unreachable`` is reported, pending requests fail, and it retries with exponential
backoff capped at ``backoff_max``. A connection that breaks is dropped and redialled on the
next send. ``active_since(peer)`` is the ``time.monotonic()`` at which the current outbound
connection completed its handshake, ``None`` while there is none.

Receiving: an accepted connection reads its handshake (and, on the SNAPSHOT channel, the
whole stream) through a ``StreamReader``; on the MESSAGES channel, once the handshake is
answered, its protocol (``_InboundProtocol``) hands every chunk the socket gives straight to
a ``FrameBuffer`` and each complete frame is handled in that callback, in order: a MESSAGE is
decoded and delivered to ``on_message``, a REQUEST starts its handler; after a chunk that
delivered messages, ``on_delivered`` (if given) is called once, so the owner can act on all
of them together. There is no task wake-up per message; the connection's task only waits
for the end (EOF, loss, or a bad frame, which closes the connection).

Handshake: the dialer's first frame names magic, protocol version, channel, cluster id,
sender id and receiver id. The listener answers HANDSHAKE_OK; on any mismatch (wrong
cluster, wrong receiver, unknown magic/version/channel, a removed sender) it logs one line,
answers one REJECTED frame with the reason and closes; on garbage, an oversized length or a
silent dialer (``handshake_timeout``) it logs one line and closes. A peer never crashes the
listener; it only loses its own connection. A dialer told REJECTED/REMOVED reports
``on_removed()``: this member was removed from the cluster and must stop, as etcd's member
does when a peer answers its stream with 410 Gone.

Discovery: a DISCOVERY handshake (see ``frames``) needs no cluster id; the listener answers
with its cluster id, its member id and the bytes returned by the provider set with
``set_discovery_provider`` (the server's member list), or REJECTED when none is set.
``keelson.transport.discovery.discover`` is the dialing side, used by a member that joins an
existing cluster before it knows the cluster id.

Requests (``request``/``set_request_handler``): a REQUEST frame (request id, kind, payload)
is queued on the same outbound MESSAGES connection as raft traffic, so it is ordered with
it; the listener runs the handler registered for ``kind`` in its own task and writes a
RESPONSE frame (same request id; ok flag; answer or error text) back on *that same
connection*, which the dialer reads with a per-connection reader task. Request ids come
from one counter per transport, so they are unique per connection. A request fails with
``TransportError`` on timeout, when the connection is lost or cannot be made, when the
peer is unknown, and with the remote message when the handler raised or no handler exists.

Snapshots: every MsgSnap goes over its own SNAPSHOT connection (see ``snapshot``), so a
large snapshot never sits in front of heartbeats. The sender reports
``on_snapshot_status(peer, failed)`` once the receiver acknowledged the assembled snapshot
(``failed=False``) or anything went wrong (``failed=True``, plus ``on_unreachable``).

TLS: with ``ssl_server`` the listener accepts sockets itself and runs each TLS handshake
with ``loop.connect_accepted_socket`` (bounded by ``handshake_timeout``), so a handshake
that fails (a certificate not signed by the trusted CA, no certificate while one is
required, a plain-text dialer) is *seen*: it is logged as a warning once per (remote host,
reason) and at debug level after that, so a misconfigured or hostile member retrying every
second does not flood the log. ``peer_cert_check``, when given, is awaited for every
accepted handshake with the client certificate (``getpeercert()``) and the remote host, and
may refuse the connection with a reason (etcd's ``--peer-cert-allowed-cn`` and its check
that a peer's certificate names the address it dials from). A dialer whose TLS handshake
fails (the peer's certificate is not trusted, or its name does not match the URL) logs a
warning once per peer until a dial succeeds again.

Handshakes from a member removed with ``remove_peer`` are rejected, as etcd does; other
senders need not be known peers (a joining member may dial before it is added here).
A received snapshot is assembled in memory, bounded by ``max_snapshot_bytes``.

``send``, ``request`` and ``stop`` must be called from the event loop's thread. All callbacks
run on the event loop; ``on_unreachable`` from ``send`` is scheduled with
``call_soon`` so it never re-enters the caller. Exceptions from callbacks and handlers are
logged, never propagated into the transport. ``stop()`` closes the listener and every
connection and cancels and awaits every task; pending requests fail with TransportError.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from keelson.raft.types import Message, MessageType
from keelson.transport.codec import CodecError, decode_message, encode_message_frame
from keelson.transport.frames import (
    LENGTH,
    MAGIC,
    PROTOCOL_VERSION,
    Channel,
    DiscoveryInfo,
    FrameBuffer,
    FrameError,
    FrameKind,
    Handshake,
    Rejection,
    RejectReason,
    Request,
    Response,
    decode_handshake,
    decode_rejection,
    decode_request,
    decode_response,
    encode_discovery_info,
    encode_handshake,
    encode_rejection,
    encode_request,
    encode_response,
    frame,
    read_frame,
)
from keelson.transport.snapshot import (
    acknowledge_snapshot,
    receive_snapshot,
    split_snapshot,
    stream_snapshot,
)

__all__ = [
    "PeerCertCheck",
    "PeerRejected",
    "PeerStats",
    "RequestHandler",
    "TLSClosed",
    "Transport",
    "TransportError",
]

log = logging.getLogger(__name__)

RequestHandler = Callable[[bytes], Awaitable[bytes]]
PeerCertCheck = Callable[[dict[str, object] | None, str], Awaitable[str | None]]
"""(verified peer certificate as ``getpeercert()`` gives it, remote host) -> None to accept,
or the reason to refuse the connection."""

_NETWORK_ERRORS = (OSError, asyncio.IncompleteReadError, TimeoutError, CodecError)
_MAX_REFUSALS_REMEMBERED = 1024  # (host, reason) pairs whose TLS refusal was logged


class TransportError(Exception):
    """A request could not be completed; the message says why."""


class PeerRejected(FrameError):
    """The listener answered our handshake with REJECTED (``reason``: a RejectReason)."""

    def __init__(self, reason: int, text: str) -> None:
        super().__init__(f"rejected by peer: {text}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PeerStats:
    """Counters of one peer's outbound MESSAGES traffic (for tests and metrics)."""

    frames_sent: int
    writes: int
    dropped: int


def _parse_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of a peer URL like ``http://127.0.0.1:2380``; ValueError if bad."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"peer URL {url!r}: want http(s)://host:port")
    try:
        port = u.port
    except ValueError as exc:
        raise ValueError(f"peer URL {url!r}: {exc}") from exc
    if port is None:
        raise ValueError(f"peer URL {url!r} has no port")
    return u.hostname, port, u.scheme == "https"


class TLSClosed(ConnectionResetError):
    """The listener closed a TLS connection before answering its first frame: with TLS 1.3
    the dialer's handshake completes before the listener has checked the dialer's
    certificate, so a refused certificate shows up as this, not as an ``ssl.SSLError``."""

    def __str__(self) -> str:
        return (
            "connection closed right after the TLS handshake "
            "(is our certificate signed by a CA the peer trusts?)"
        )


def _tls_reason(exc: BaseException) -> str:
    """A TLS failure in a few words: OpenSSL's verify message or reason when there is one
    ("certificate verify failed: unable to get local issuer certificate")."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, TLSClosed):
        return str(exc)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    if isinstance(exc, TimeoutError):
        return "no TLS handshake in time"
    if isinstance(exc, (ConnectionError, EOFError)):
        return "connection closed during the TLS handshake (our certificate refused?)"
    return str(exc) or type(exc).__name__


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()


_SNAP = MessageType.SNAP  # a module constant: an enum member lookup costs ~0.2 µs per send

_READER_LIMIT = 2**16
"""``StreamReader`` buffer limit of inbound connections (asyncio's default)."""

_WRITE_NOW_LIMIT = 256 * 1024
"""Unsent bytes above which ``send`` leaves a peer's messages to its writer task, which
waits for the socket to drain."""


class _InboundProtocol(asyncio.StreamReaderProtocol):
    """The protocol of an accepted connection: a ``StreamReaderProtocol`` (the handshake and
    the SNAPSHOT channel read its ``StreamReader``) whose incoming bytes can be diverted to a
    callback instead, as the MESSAGES channel does after its handshake (``divert``).

    Writing is unaffected: the connection's ``StreamWriter`` keeps using this protocol's
    flow control. ``ended`` says EOF or the connection's loss has been seen; once diverted,
    the ``on_end`` callback hears about either (``None`` for EOF, else the error)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        accepted: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
        | None = None,
        *,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(reader, accepted, loop=loop)
        self.ended = False
        self._diverted = False  # once set, the StreamReader never gets another byte
        self._on_data: Callable[[bytes], None] | None = None
        self._on_end: Callable[[BaseException | None], None] | None = None

    def divert(
        self,
        on_data: Callable[[bytes], None] | None,
        on_end: Callable[[BaseException | None], None] | None,
    ) -> None:
        """From now on hand incoming bytes to ``on_data`` and EOF or loss to ``on_end``
        (``None, None`` stops; later bytes are then dropped, the connection is closing)."""
        self._diverted = True
        self._on_data = on_data
        self._on_end = on_end

    def data_received(self, data: bytes) -> None:
        if not self._diverted:
            super().data_received(data)
        elif self._on_data is not None:
            self._on_data(data)

    def eof_received(self) -> bool | None:
        self.ended = True
        if self._on_end is not None:
            self._on_end(None)
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        super().connection_lost(exc)
        if self._on_end is not None:
            self._on_end(exc)


class _Peer:
    """Outbound state for one peer; owned by its writer task (``send`` writes directly
    only while nothing is queued)."""

    def __init__(self, peer_id: int, urls: list[str]) -> None:
        self.id = peer_id
        self.urls = urls
        self.next_url = 0
        self.queue: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.active_since: float | None = None
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.frames_sent = 0
        self.writes = 0
        self.dropped = 0
        self.tls_problem: str | None = None  # the last TLS failure logged for this peer


class Transport:
    """See the module docstring. Create, ``add_peer``, ``await start(...)``, ``send``."""

    def __init__(
        self,
        local_id: int,
        cluster_id: int,
        on_message: Callable[[Message], None],
        *,
        on_delivered: Callable[[], None] | None = None,
        on_unreachable: Callable[[int], None] | None = None,
        on_snapshot_status: Callable[[int, bool], None] | None = None,
        on_removed: Callable[[], None] | None = None,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        peer_cert_check: PeerCertCheck | None = None,
        max_queue: int = 4096,
        max_frame_bytes: int = 64 * 1024 * 1024,
        max_snapshot_bytes: int = 8 * 1024 * 1024 * 1024,
        snapshot_chunk_bytes: int = 256 * 1024,
        dial_timeout: float = 2.0,
        handshake_timeout: float = 5.0,
        snapshot_timeout: float = 60.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 1.0,
    ) -> None:
        if local_id <= 0:
            raise ValueError("local_id must be a positive integer")
        if snapshot_chunk_bytes >= max_frame_bytes:
            raise ValueError("snapshot_chunk_bytes must be below max_frame_bytes")
        self.local_id = local_id
        self.cluster_id = cluster_id
        self._on_message = on_message
        self._on_delivered = on_delivered
        self._on_unreachable = on_unreachable
        self._on_snapshot_status = on_snapshot_status
        self._on_removed = on_removed
        self._discovery: Callable[[], bytes] | None = None
        self._ssl_server = ssl_server
        self._ssl_client = ssl_client
        self._peer_cert_check = peer_cert_check
        self._tls_listeners: list[tuple[socket.socket, asyncio.Task[None]]] = []
        self._tls_refused: set[tuple[str, str]] = set()  # (remote host, reason) logged once
        self._max_queue = max_queue
        self._max_frame = max_frame_bytes
        self._max_snapshot = max_snapshot_bytes
        self._chunk = snapshot_chunk_bytes
        self._dial_timeout = dial_timeout
        self._handshake_timeout = handshake_timeout
        self._snapshot_timeout = snapshot_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._peers: dict[int, _Peer] = {}
        self._handlers: dict[str, RequestHandler] = {}
        self._request_ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # inbound, snapshot and handler tasks
        self._inbound: set[asyncio.StreamWriter] = set()
        self._inbound_from: dict[int, set[asyncio.StreamWriter]] = {}  # by handshake sender
        self._stopping = False
        self._removed: set[int] = set()

    # ----------------------------------------------------------------- lifecycle

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the bound port."""
        self._stopping = False
        if self._ssl_server is not None:
            return await self._start_tls_listener(host, port)
        loop = asyncio.get_running_loop()

        def accepted() -> _InboundProtocol:
            reader = asyncio.StreamReader(limit=_READER_LIMIT, loop=loop)
            return _InboundProtocol(reader, self._accept, loop=loop)

        self._server = await loop.create_server(accepted, host, port, reuse_address=True)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def _start_tls_listener(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        task = loop.create_task(self._accept_tls(sock), name=f"transport-accept-{port}")
        self._tls_listeners.append((sock, task))
        bound: int = sock.getsockname()[1]
        return bound

    async def _accept_tls(self, sock: socket.socket) -> None:
        """Accept connections on ``sock`` until it is closed; each handshake runs in its own
        task so a slow or silent dialer never holds up the others."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as exc:
                if self._stopping:
                    return
                log.warning("transport: accept failed: %r", exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._handshake_tls(conn, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handshake_tls(self, conn: socket.socket, addr: object) -> None:
        assert self._ssl_server is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_READER_LIMIT, loop=loop)
        protocol = _InboundProtocol(reader, loop=loop)
        host = addr[0] if isinstance(addr, tuple) else str(addr)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self._ssl_server,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except (TimeoutError, OSError, EOFError) as exc:
            conn.close()
            self._log_refused(host, _tls_reason(exc))
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        if self._peer_cert_check is not None:
            ssl_object = writer.get_extra_info("ssl_object")
            cert = ssl_object.getpeercert() if ssl_object is not None else None
            try:
                problem = await self._peer_cert_check(cert, host)
            except Exception as exc:  # a check that fails refuses; never crash the listener
                problem = f"checking the certificate failed: {exc!r}"
            if problem:
                self._log_refused(host, problem)
                _close(writer)
                return
        await self._accept(reader, writer)

    def _log_refused(self, host: str, reason: str) -> None:
        key = (host, reason)
        if key in self._tls_refused:
            log.debug("transport: refused TLS connection from %s: %s", host, reason)
            return
        if len(self._tls_refused) >= _MAX_REFUSALS_REMEMBERED:  # many hosts: bound memory
            self._tls_refused.clear()
        self._tls_refused.add(key)
        log.warning(
            "transport: refused TLS connection from %s: %s (logged once per host and reason)",
            host,
            reason,
        )

    async def stop(self) -> None:
        """Close the listener and all connections; cancel and await every task. Pending
        requests fail with TransportError; queued messages are discarded."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        tasks: list[asyncio.Task[None]] = []
        listeners, self._tls_listeners = self._tls_listeners, []
        tasks.extend(accept_task for _, accept_task in listeners)
        for peer in list(self._peers.values()):
            tasks.extend(self._retire(peer, "transport stopped"))
        for w in list(self._inbound):
            _close(w)
        tasks.extend(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock, _ in listeners:  # closed once no sock_accept waits on it
            sock.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    # ---------------------------------------------------------------------- peers

    def add_peer(self, peer_id: int, urls: list[str]) -> None:
        """Know ``peer_id`` at ``urls`` (tried in turn). Re-adding updates its URLs.
        ValueError for a malformed URL, or https without an ``ssl_client`` context."""
        self._check_urls(urls)
        self._removed.discard(peer_id)
        if peer_id in self._peers:
            self.update_peer(peer_id, urls)
            return
        self._peers[peer_id] = _Peer(peer_id, list(urls))

    def update_peer(self, peer_id: int, urls: list[str]) -> None:
        """Change a peer's URLs; its current connection is dropped and redialled lazily."""
        self._check_urls(urls)
        peer = self._peers.get(peer_id)
        if peer is None:
            self.add_peer(peer_id, urls)
            return
        if peer.urls != list(urls):
            peer.urls = list(urls)
            peer.next_url = 0
            self._drop_connection(peer, peer.writer, "peer URLs changed")

    def remove_peer(self, peer_id: int) -> None:
        """Forget ``peer_id``: its queue is dropped, its connection closed, its pending
        requests fail, and from now on the listener rejects connections from it (etcd never
        reuses a removed member's id; ``add_peer`` lifts this). Unknown ids are ignored."""
        self._removed.add(peer_id)
        peer = self._peers.get(peer_id)
        if peer is not None:
            for t in self._retire(peer, "peer removed"):
                t.cancel()
        for w in list(self._inbound_from.get(peer_id, ())):
            _close(w)  # its next dial is rejected as REMOVED, so it learns it must stop

    def set_discovery_provider(self, provider: Callable[[], bytes]) -> None:
        """Answer DISCOVERY handshakes with ``provider()`` (the encoded member list), which
        runs on the event loop for each one and must be quick."""
        self._discovery = provider

    def active_since(self, peer_id: int) -> float | None:
        peer = self._peers.get(peer_id)
        return None if peer is None else peer.active_since

    def peer_stats(self, peer_id: int) -> PeerStats | None:
        peer = self._peers.get(peer_id)
        if peer is None:
            return None
        return PeerStats(peer.frames_sent, peer.writes, peer.dropped)

    def _check_urls(self, urls: list[str]) -> None:
        if not urls:
            raise ValueError("a peer needs at least one URL")
        for url in urls:
            _, _, tls = _parse_url(url)
            if tls and self._ssl_client is None:
                raise ValueError(f"peer URL {url!r} is https but no client TLS context was given")

    def _retire(self, peer: _Peer, why: str) -> list[asyncio.Task[None]]:
        tasks = [t for t in (peer.task, peer.reader_task) if t is not None]
        self._peers.pop(peer.id, None)
        peer.queue.clear()
        self._drop_connection(peer, peer.writer, why)
        self._fail_pending(peer, f"peer {peer.id:x}: {why}")
        return tasks

    # ---------------------------------------------------------------------- sending

    def send(self, msgs: Iterable[Message]) -> None:
        """Send messages to their ``to`` peers; never blocks. A peer whose connection is
        up and idle gets its messages written at once, in one write per peer (no task
        switch on the commit path); otherwise they are queued for the peer's writer task.
        Messages to unknown peers are dropped; a full queue drops the message and reports
        the peer unreachable."""
        out: dict[int, list[bytes]] = {}
        for m in msgs:
            peer = self._peers.get(m.to)
            if peer is None:
                log.debug("transport: dropping %s to unknown peer %x", m.type.name, m.to)
                continue
            if m.type == _SNAP:
                if not self._stopping:
                    self._spawn(self._send_snapshot(peer, m))
                continue
            try:
                data = encode_message_frame(m)
            except CodecError as exc:
                log.warning("transport: cannot encode %s to %x: %s", m.type.name, m.to, exc)
                continue
            out.setdefault(m.to, []).append(data)
        for peer_id, frames in out.items():
            peer = self._peers[peer_id]
            if not self._write_now(peer, frames):
                for data in frames:
                    self._enqueue(peer, data)

    def _write_now(self, peer: _Peer, frames: list[bytes]) -> bool:
        """Write ``frames`` to the peer's connection now if that keeps their order (nothing
        queued before them) and the socket is keeping up; False: queue them instead."""
        writer = peer.writer
        if writer is None or peer.queue or self._stopping:
            return False
        transport = writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() > _WRITE_NOW_LIMIT:
            return False
        try:
            writer.write(frames[0] if len(frames) == 1 else b"".join(frames))
        except (OSError, RuntimeError) as exc:
            log.debug("transport: write to peer %x failed: %r", peer.id, exc)
            self._drop_connection(peer, writer, f"write failed: {exc!r}")
            return False
        peer.writes += 1
        peer.frames_sent += len(frames)
        return True

    def _enqueue(self, peer: _Peer, data: bytes) -> bool:
        if self._stopping:
            return False
        if len(peer.queue) >= self._max_queue:
            peer.dropped += 1
            asyncio.get_running_loop().call_soon(self._report_unreachable, peer.id)
            return False
        peer.queue.append(data)
        peer.wake.set()
        if peer.task is None or peer.task.done():
            if peer.task is not None and not peer.task.cancelled() and peer.task.exception():
                log.error("transport: writer to %x died", peer.id, exc_info=peer.task.exception())
            peer.task = asyncio.get_running_loop().create_task(self._run_writer(peer))
        return True

    async def _dial(
        self, peer: _Peer, channel: Channel
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        url = peer.urls[peer.next_url % len(peer.urls)]
        host, port, tls = _parse_url(url)
        ctx = self._ssl_client if tls else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=host if ctx is not None else None
            ),
            self._dial_timeout,
        )
        try:
            writer.write(
                encode_handshake(
                    Handshake(
                        MAGIC, PROTOCOL_VERSION, channel, self.cluster_id, self.local_id, peer.id
                    )
                )
            )
            await writer.drain()
            try:
                kind, body = await asyncio.wait_for(
                    read_frame(reader, self._max_frame), self._dial_timeout
                )
            except asyncio.IncompleteReadError as exc:
                if ctx is not None and not exc.partial:
                    raise TLSClosed() from None
                raise
            if kind == FrameKind.REJECTED:
                r = decode_rejection(body)
                raise PeerRejected(r.reason, r.text)
            if kind != FrameKind.HANDSHAKE_OK:
                raise FrameError(f"unexpected frame kind {kind} in handshake answer")
        except BaseException:
            _close(writer)
            raise
        return reader, writer

    async def _run_writer(self, peer: _Peer) -> None:
        backoff = self._backoff_initial
        while True:
            await peer.wake.wait()
            if not peer.queue:
                peer.wake.clear()
                continue
            if peer.writer is None:
                try:
                    reader, writer = await self._dial(peer, Channel.MESSAGES)
                except _NETWORK_ERRORS as exc:
                    if isinstance(exc, ssl.SSLError | TLSClosed):
                        reason = _tls_reason(exc)
                        if peer.tls_problem is None:  # once until a dial succeeds
                            peer.tls_problem = reason
                            log.warning(
                                "transport: TLS handshake with peer %x failed: %s "
                                "(logged once until it succeeds)",
                                peer.id,
                                reason,
                            )
                    log.debug("transport: cannot reach peer %x: %r", peer.id, exc)
                    self._check_removed(exc)
                    peer.next_url += 1
                    peer.dropped += len(peer.queue)
                    peer.queue.clear()
                    peer.wake.clear()
                    self._fail_pending(peer, f"peer {peer.id:x} unreachable: {exc!r}")
                    self._report_unreachable(peer.id)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._backoff_max)
                    continue
                backoff = self._backoff_initial
                peer.tls_problem = None
                peer.writer = writer
                peer.active_since = time.monotonic()
                peer.reader_task = asyncio.get_running_loop().create_task(
                    self._read_responses(peer, reader, writer)
                )
            batch = b"".join(peer.queue)
            count = len(peer.queue)
            peer.queue.clear()
            peer.wake.clear()
            writer = peer.writer
            try:
                writer.write(batch)
                peer.writes += 1
                peer.frames_sent += count
                await writer.drain()
            except OSError as exc:
                log.debug("transport: write to peer %x failed: %r", peer.id, exc)
                self._drop_connection(peer, writer, f"write failed: {exc!r}")
                self._report_unreachable(peer.id)

    async def _read_responses(
        self, peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        why = "connection closed by peer"
        try:
            while True:
                kind, body = await read_frame(reader, self._max_frame)
                if kind != FrameKind.RESPONSE:
                    raise FrameError(f"unexpected frame kind {kind} from the listener")
                resp = decode_response(body)
                fut = peer.pending.pop(resp.request_id, None)
                if fut is None or fut.done():
                    continue
                if resp.ok:
                    fut.set_result(resp.payload)
                else:
                    fut.set_exception(
                        TransportError(resp.payload.decode("utf-8", errors="replace"))
                    )
        except (OSError, asyncio.IncompleteReadError) as exc:
            why = f"connection lost: {exc!r}"
        except CodecError as exc:
            why = f"bad frame from peer: {exc}"
            log.warning("transport: closing connection to peer %x: %s", peer.id, exc)
        self._drop_connection(peer, writer, why)

    def _drop_connection(self, peer: _Peer, writer: asyncio.StreamWriter | None, why: str) -> None:
        """Close ``writer`` if it is still the peer's connection; fail pending requests."""
        if writer is None or peer.writer is not writer:
            return
        _close(writer)
        peer.writer = None
        peer.active_since = None
        reader_task = peer.reader_task
        peer.reader_task = None
        if reader_task is not None and reader_task is not asyncio.current_task():
            reader_task.cancel()
        self._fail_pending(peer, f"peer {peer.id:x}: {why}")

    def _fail_pending(self, peer: _Peer, why: str) -> None:
        pending = peer.pending
        peer.pending = {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(TransportError(why))

    def _check_removed(self, exc: BaseException) -> None:
        """A peer refused us as removed from the cluster: tell the owner once per refusal."""
        if not isinstance(exc, PeerRejected) or exc.reason != RejectReason.REMOVED:
            return
        if self._on_removed is None or self._stopping:
            return
        try:
            self._on_removed()
        except Exception:
            log.exception("transport: on_removed raised")

    def _report_unreachable(self, peer_id: int) -> None:
        if self._on_unreachable is None or self._stopping:
            return
        try:
            self._on_unreachable(peer_id)
        except Exception:
            log.exception("transport: on_unreachable(%x) raised", peer_id)

    # --------------------------------------------------------------------- requests

    def set_request_handler(self, kind: str, handler: RequestHandler) -> None:
        """Answer requests of ``kind`` with ``handler``; an exception it raises is sent back
        to the requester as a TransportError with its message."""
        if len(kind.encode()) > 255:
            raise ValueError("request kind longer than 255 bytes")
        self._handlers[kind] = handler

    async def request(self, peer_id: int, kind: str, payload: bytes, timeout: float) -> bytes:
        """Run ``kind``'s handler on ``peer_id`` with ``payload``; its answer. TransportError
        on timeout, an unknown or unreachable peer, or an error from the remote handler.
        Cancelling the call abandons the request (a late answer is ignored)."""
        peer = self._peers.get(peer_id)
        if peer is None:
            raise TransportError(f"unknown peer {peer_id:x}")
        request_id = next(self._request_ids)
        data = encode_request(Request(request_id, kind, payload))
        if len(data) - LENGTH.size > self._max_frame:
            raise TransportError(f"request of {len(payload)} bytes is too large")
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        peer.pending[request_id] = fut
        if not self._enqueue(peer, data):
            peer.pending.pop(request_id, None)
            raise TransportError(f"send queue to peer {peer_id:x} is full")
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TransportError(
                f"request {kind!r} to peer {peer_id:x} timed out after {timeout}s"
            ) from None
        finally:
            peer.pending.pop(request_id, None)

    async def _answer(self, req: Request, writer: asyncio.StreamWriter) -> None:
        handler = self._handlers.get(req.kind)
        if handler is None:
            resp = Response(req.request_id, False, f"no handler for {req.kind!r}".encode())
        else:
            try:
                resp = Response(req.request_id, True, await handler(req.payload))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("transport: handler %r failed: %r", req.kind, exc)
                text = str(exc) or type(exc).__name__
                resp = Response(req.request_id, False, text.encode())
        if not writer.is_closing():
            with contextlib.suppress(OSError):
                writer.write(encode_response(resp))
                await writer.drain()

    # -------------------------------------------------------------------- snapshots

    async def _send_snapshot(self, peer: _Peer, m: Message) -> None:
        failed = True
        writer: asyncio.StreamWriter | None = None
        try:
            header, data = split_snapshot(m)
            reader, writer = await self._dial(peer, Channel.SNAPSHOT)
            await stream_snapshot(
                reader,
                writer,
                header,
                data,
                chunk_bytes=self._chunk,
                max_frame=self._max_frame,
                timeout=self._snapshot_timeout,
            )
            failed = False
        except _NETWORK_ERRORS as exc:
            log.warning("transport: sending snapshot to peer %x failed: %r", peer.id, exc)
            self._check_removed(exc)
        finally:
            _close(writer)
            if not self._stopping:
                if failed:
                    self._report_unreachable(peer.id)
                if self._on_snapshot_status is not None:
                    try:
                        self._on_snapshot_status(peer.id, failed)
                    except Exception:
                        log.exception("transport: on_snapshot_status(%x) raised", peer.id)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._stopping or task is None:
            _close(writer)
            return
        self._tasks.add(task)
        self._inbound.add(writer)
        addr = writer.get_extra_info("peername")
        sender: int | None = None
        try:
            kind, body = await asyncio.wait_for(
                read_frame(reader, self._max_frame), self._handshake_timeout
            )
            if kind != FrameKind.HANDSHAKE:
                raise FrameError(f"first frame has kind {kind}, not a handshake")
            h = decode_handshake(body)
            problem, reason = self._check_handshake(h)
            if problem:
                log.warning("transport: rejecting connection from %s: %s", addr, problem)
                writer.write(encode_rejection(Rejection(reason, problem)))
                await writer.drain()
                return
            if h.channel == Channel.DISCOVERY:
                await self._serve_discovery(addr, writer)
                return
            self._inbound_from.setdefault(h.sender_id, set()).add(writer)
            sender = h.sender_id
            writer.write(frame(FrameKind.HANDSHAKE_OK))
            await writer.drain()
            if h.channel == Channel.MESSAGES:
                await self._serve_messages(h, reader, writer)
            else:
                await self._serve_snapshot(h, reader, writer)
        except TimeoutError:  # before OSError, of which it is a subclass
            log.warning("transport: closing connection from %s: no frame in time", addr)
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.debug("transport: connection from %s ended: %r", addr, exc)
        except CodecError as exc:
            log.warning("transport: closing connection from %s: %s", addr, exc)
        except asyncio.CancelledError:
            # stop() cancels connection tasks; ending quietly keeps asyncio's stream
            # callback from logging the cancellation as an error.
            if not self._stopping:
                raise
        finally:
            self._inbound.discard(writer)
            if sender is not None:
                conns = self._inbound_from.get(sender)
                if conns is not None:
                    conns.discard(writer)
                    if not conns:
                        del self._inbound_from[sender]
            self._tasks.discard(task)
            _close(writer)

    def _check_handshake(self, h: Handshake) -> tuple[str, int]:
        """("", _) to accept, else (why, RejectReason)."""
        mismatch = RejectReason.MISMATCH
        if h.magic != MAGIC:
            return f"bad magic {h.magic!r}", mismatch
        if h.version != PROTOCOL_VERSION:
            return f"protocol version {h.version}, want {PROTOCOL_VERSION}", mismatch
        if h.channel == Channel.DISCOVERY:
            if self._discovery is None:
                return "this member does not answer discovery", mismatch
            return "", 0
        if h.cluster_id != self.cluster_id:
            return f"cluster id {h.cluster_id:x}, want {self.cluster_id:x}", mismatch
        if h.receiver_id != self.local_id:
            return f"addressed to member {h.receiver_id:x}, this is {self.local_id:x}", mismatch
        if h.sender_id in self._removed:
            return (
                f"member {h.sender_id:x} has been permanently removed from the cluster",
                RejectReason.REMOVED,
            )
        if h.channel not in (Channel.MESSAGES, Channel.SNAPSHOT):
            return f"unknown channel {h.channel}", mismatch
        return "", 0

    async def _serve_discovery(self, addr: object, writer: asyncio.StreamWriter) -> None:
        provider = self._discovery
        if provider is None:  # checked by _check_handshake; kept for the type checker
            return
        try:
            members = provider()
        except Exception:
            log.exception("transport: discovery provider raised")
            writer.write(encode_rejection(Rejection(RejectReason.MISMATCH, "internal error")))
            await writer.drain()
            return
        log.info("transport: answering a discovery request from %s", addr)
        writer.write(encode_discovery_info(DiscoveryInfo(self.cluster_id, self.local_id, members)))
        await writer.drain()

    def _deliver(self, m: Message) -> None:
        try:
            self._on_message(m)
        except Exception:
            log.exception("transport: on_message raised for %s from %x", m.type.name, m.frm)

    def _delivered(self) -> None:
        """Tell the owner that a chunk's messages have all been delivered (it may now act
        on them together)."""
        if self._on_delivered is not None:
            try:
                self._on_delivered()
            except Exception:
                log.exception("transport: on_delivered raised")

    async def _serve_messages(
        self, h: Handshake, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Handle the MESSAGES frames of one inbound connection until it ends.

        From here on the connection's bytes skip the ``StreamReader``: the protocol hands
        every chunk the socket gives it straight to a ``FrameBuffer`` and each complete
        frame is handled there and then, in order (a MESSAGE is delivered to ``on_message``,
        a REQUEST spawns its handler). Delivering from the protocol callback rather than from
        this task saves a task wake-up and two ``readexactly`` per message. This task only
        waits for the end: a bad frame raises its ``CodecError``, EOF raises
        ``IncompleteReadError`` (the bytes of a cut frame as ``partial``), as reading frame
        by frame did, so the connection's end is logged and cleaned up the same way."""
        protocol = writer.transport.get_protocol()
        if not isinstance(protocol, _InboundProtocol):  # every listener path makes one
            raise TypeError(f"inbound connection has protocol {protocol!r}")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        frames = FrameBuffer(self._max_frame)
        deliver = self._deliver
        message_kind = FrameKind.MESSAGE
        sender = h.sender_id

        def on_data(data: bytes) -> None:
            if done.done():  # failed (or being torn down): ignore the rest
                return
            delivered = False
            try:
                for kind, body in frames.feed(data):
                    if kind == message_kind:
                        deliver(decode_message(body))
                        delivered = True
                    elif kind == FrameKind.REQUEST:
                        self._spawn(self._answer(decode_request(body), writer))
                    else:
                        raise FrameError(f"unexpected frame kind {kind} from peer {sender:x}")
            except CodecError as exc:
                done.set_exception(exc)
            if delivered:
                self._delivered()

        def on_end(exc: BaseException | None) -> None:
            if not done.done():
                done.set_exception(exc or asyncio.IncompleteReadError(frames.pending(), None))

        ended = protocol.ended
        protocol.divert(on_data, on_end)
        try:
            # What the StreamReader buffered before the switch (the dialer may send frames
            # right behind its handshake) comes first. With EOF fed, ``read`` returns the
            # buffer without suspending, so no chunk can overtake it; it raises if the
            # connection was already lost with an error.
            reader.feed_eof()
            rest = await reader.read()
            if rest:
                on_data(rest)
            if ended:
                on_end(None)
            await done
        finally:
            protocol.divert(None, None)

    async def _serve_snapshot(
        self, h: Handshake, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        m = await receive_snapshot(
            reader,
            max_frame=self._max_frame,
            max_snapshot=self._max_snapshot,
            idle_timeout=self._snapshot_timeout,
        )
        if m.snapshot is None:  # receive_snapshot guarantees one; checked without assert
            raise FrameError("snapshot stream lost its snapshot")
        log.info(
            "transport: received snapshot of %d bytes at index %d from %x",
            len(m.snapshot.data),
            m.snapshot.metadata.index,
            h.sender_id,
        )
        self._deliver(m)
        await acknowledge_snapshot(writer)
