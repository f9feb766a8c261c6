"""The harness's TCP proxy in front of every member's peer listener.

Theory of operation: each member ``dst`` listens for peers on a private port; the URL it
advertises (and the one in ``--initial-cluster``) is a port of this proxy. keelson's peer
transport opens connections whose first frame is a HANDSHAKE naming the sender's member id
(``keelson.transport.frames``), so the proxy reads that one frame, maps the id to a member
name (ids registered with ``set_member_id``), and then forwards bytes both ways.

A connection from ``src`` to ``dst`` (``src`` dialled, ``dst`` listens) carries ``src``'s
messages and requests to ``dst`` and the answers to those requests back. The rule for the
ordered pair ``(src, dst)`` governs those connections:

* ``pass``: forward at once;
* ``delay``: bytes from the dialer are held ``ms`` milliseconds (a queue with arrival times,
  so latency grows, throughput does not collapse);
* ``drop``: existing connections are closed and new ones are closed right after their
  handshake frame is read (so the dialer sees a connection error and retries later).

``dst``'s messages to ``src`` travel on ``dst``'s own connections to ``src``, governed by
``(dst, src)``; so a one-way cut is ``drop`` on one ordered pair only. Connections whose
first frame is not a readable handshake, or whose sender is unknown, are forwarded under
the rule ``("?", dst)`` (normally pass): a member that joined moments ago may dial before
the harness learned its id.

The proxy runs its own event loop in a daemon thread; every public method is thread-safe
(rules live under a lock; closing connections is scheduled on the proxy's loop). Invariant:
after ``set_rule(src, dst, "drop")`` returns, no byte from a ``src``->``dst`` connection is
forwarded to ``dst`` any more (the rule is checked before every forwarded chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from keelson.transport.frames import FrameKind, decode_handshake

log = logging.getLogger("torture.proxy")

_LENGTH = struct.Struct(">I")
_MAX_HANDSHAKE = 4096
UNKNOWN = "?"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rule:
    """What happens to bytes from ``src`` to ``dst``: ``kind`` is pass, drop or delay."""

    kind: str = "pass"
    delay_ms: int = 0


PASS = Rule()


@dataclass(eq=False)
class _Conn:
    """One proxied connection; ``sender`` is the handshake's sender id (None: unreadable)."""

    sender: int | None
    dst: str
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def close(self) -> None:
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.close()


class PeerProxy:
    """One proxy listener per member, all on one private event loop thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[tuple[str, str], Rule] = {}
        self._names: dict[int, str] = {}
        self._conns: set[_Conn] = set()
        self._servers: dict[str, asyncio.Server] = {}
        self._targets: dict[str, int] = {}
        self.forwarded_bytes = 0
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="torture-proxy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # --- members -------------------------------------------------------------------------

    def add_member(self, name: str, target_port: int) -> int:
        """Listen for ``name``'s peers on a fresh port forwarding to ``target_port``; return it."""

        async def start() -> int:
            server = await asyncio.start_server(
                lambda r, w: self._accept(name, r, w), "127.0.0.1", 0
            )
            self._servers[name] = server
            self._targets[name] = target_port
            return int(server.sockets[0].getsockname()[1])

        return self._call(start())

    def set_member_id(self, member_id: int, name: str) -> None:
        """Map a raft member id (as sent in handshakes) to the harness's member name."""
        with self._lock:
            self._names[member_id] = name

    def close(self) -> None:
        """Close every listener and connection and stop the proxy's loop."""

        async def stop() -> None:
            for s in self._servers.values():
                s.close()
            for c in list(self._conns):
                c.close()

        with contextlib.suppress(Exception):
            self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # --- rules -----------------------------------------------------------------------------

    def rule(self, src: str, dst: str) -> Rule:
        with self._lock:
            return self._rules.get((src, dst), PASS)

    def set_rule(self, src: str, dst: str, rule: Rule) -> None:
        """Set the rule for ``src``->``dst`` connections; a drop closes the existing ones."""
        with self._lock:
            if rule == PASS:
                self._rules.pop((src, dst), None)
            else:
                self._rules[(src, dst)] = rule
        if rule.kind == "drop":
            self._loop.call_soon_threadsafe(self._close_matching, src, dst)

    def cut(self, src: str, dst: str) -> None:
        """One-way cut: nothing from ``src`` reaches ``dst``."""
        self.set_rule(src, dst, Rule("drop"))

    def cut_both(self, a: str, b: str) -> None:
        self.cut(a, b)
        self.cut(b, a)

    def delay(self, src: str, dst: str, ms: int) -> None:
        self.set_rule(src, dst, Rule("delay", ms))

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Cut every link between members of different groups (both directions)."""
        gs = [sorted(g) for g in groups]
        for i, g in enumerate(gs):
            for h in gs[i + 1 :]:
                for a in g:
                    for b in h:
                        self.cut_both(a, b)

    def heal(self) -> None:
        """Every link passes again."""
        with self._lock:
            self._rules.clear()

    def describe(self) -> str:
        with self._lock:
            items = sorted(self._rules.items())
        return (
            ", ".join(
                f"{s}->{d}:{r.kind}{'' if r.kind != 'delay' else f'({r.delay_ms}ms)'}"
                for (s, d), r in items
            )
            or "all pass"
        )

    # --- the data path (proxy loop only) -------------------------------------------------------

    def _src(self, conn: _Conn) -> str:
        """The sender's name, resolved at each use: its id may be learned after it dialled."""
        if conn.sender is None:
            return UNKNOWN
        with self._lock:
            return self._names.get(conn.sender, UNKNOWN)

    def _conn_rule(self, conn: _Conn) -> Rule:
        return self.rule(self._src(conn), conn.dst)

    def _close_matching(self, src: str, dst: str) -> None:
        for c in list(self._conns):
            if c.dst == dst and self._src(c) == src:
                c.close()

    async def _accept(
        self, dst: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = _Conn(None, dst, [writer])
        self._conns.add(conn)
        try:
            first = await self._read_first_frame(reader)
            if first is None:
                return
            conn.sender = self._sender(first)
            if self._conn_rule(conn).kind == "drop":
                self.refused += 1
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self._targets[dst]), 5.0
                )
            except (OSError, TimeoutError):
                return
            conn.writers.append(up_writer)
            up_writer.write(first)
            await asyncio.gather(
                self._pump(conn, reader, up_writer, forward=True),
                self._pump(conn, up_reader, writer, forward=False),
                return_exceptions=True,
            )
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._conns.discard(conn)
            conn.close()

    async def _read_first_frame(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await asyncio.wait_for(reader.readexactly(_LENGTH.size), 10.0)
            (length,) = _LENGTH.unpack(head)
            if length == 0 or length > _MAX_HANDSHAKE:
                return head  # not ours to judge: forward and let the member refuse it
            body = await asyncio.wait_for(reader.readexactly(length), 10.0)
            return head + body
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            return None

    def _sender(self, first: bytes) -> int | None:
        body = first[_LENGTH.size :]
        if len(body) < 1 or body[0] != FrameKind.HANDSHAKE:
            return None
        try:
            return decode_handshake(body[1:]).sender_id
        except Exception:
            return None

    async def _pump(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        forward: bool,
    ) -> None:
        """Copy bytes one way. ``forward`` is dialer->listener, which the rule delays.

        Both directions stop once the rule becomes drop: the answers on a cut connection are
        as lost as the requests.
        """
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.get_running_loop().create_task(self._send_from(conn, queue, writer))
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                rule = self._conn_rule(conn)
                if rule.kind == "drop":
                    break
                due = time.monotonic() + (rule.delay_ms / 1000 if forward else 0.0)
                queue.put_nowait((due, data))
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(Exception):
                await sender
            conn.close()

    async def _send_from(
        self, conn: _Conn, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._conn_rule(conn).kind == "drop":
                return
            writer.write(data)
            self.forwarded_bytes += len(data)
            await writer.drain()
