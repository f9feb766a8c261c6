"""etcd's HTTP endpoints: ``/health``, ``/version`` and ``/metrics``.

etcd 3.4 answers these on its client URLs (multiplexed with gRPC) and on
``--listen-metrics-urls``. keelson's gRPC server (grpcio) cannot share its port with
HTTP/1.1, so keelson serves them on ``--listen-metrics-urls`` only; monitoring set up for
etcd's metrics URL works unchanged.

- ``GET /health``: ``{"health":"true"}`` (200) when the member has no alarm (other than those
  named by ``?exclude=NOSPACE``), knows a leader (skipped with ``?serializable=true``) and
  can serve a one-key read (linearizable unless ``?serializable=true``) within the request
  timeout; otherwise ``{"health":"false"}`` with 503. As etcd, any other method gets 405.
- ``GET /version``: ``{"etcdserver":"3.4.0","etcdcluster":"3.4.0"}``, the versions keelson
  answers as (etcd clients gate features on them).
- ``GET /metrics``: Prometheus text format (see :mod:`keelson.api.metrics`).

One asyncio server per address, on the member's event loop; HTTP/1.1 parsing is h11's.
Addresses listed in ``tls_addresses`` (``https://`` metrics URLs) are served over TLS with
the client side's certificate (``ssl_context``), as etcd serves them.
A client that sends garbage, too much, or nothing gets 400 or a closed connection; it can
never hurt the member. Keep-alive is supported; each connection is served sequentially.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11

from keelson.api.metrics import MetricsExporter
from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb

log = logging.getLogger(__name__)

SERVER_VERSION = "3.4.0"
CLUSTER_VERSION = "3.4.0"
MAX_REQUEST_HEAD_BYTES = 16 * 1024
IDLE_TIMEOUT = 30.0


class HttpEndpoints:
    """The HTTP side of a member's API; ``start`` binds, ``stop`` closes everything."""

    def __init__(
        self,
        server: Any,
        addresses: Sequence[tuple[str, int]],
        request_timeout: float,
        *,
        ssl_context: ssl.SSLContext | None = None,
        tls_addresses: Sequence[tuple[str, int]] = (),
    ):
        if tls_addresses and ssl_context is None:
            raise ValueError("https metrics addresses need the client TLS context")
        self._server = server
        self._addresses = list(addresses)
        self._ssl = ssl_context
        self._tls_addresses = set(tls_addresses)
        self._timeout = request_timeout
        self._servers: list[asyncio.Server] = []
        self._conns: set[asyncio.Task[None]] = set()
        self.metrics = MetricsExporter(server)
        self.ports: list[int] = []

    async def start(self) -> None:
        for host, port in self._addresses:
            secure = (host, port) in self._tls_addresses
            srv = await asyncio.start_server(
                self._serve_conn, host, port, ssl=self._ssl if secure else None
            )
            self._servers.append(srv)
            self.ports.append(srv.sockets[0].getsockname()[1])
            log.info(
                "serving /health, /version and /metrics on %s://%s:%d",
                "https" if secure else "http", host, self.ports[-1],
            )

    async def stop(self) -> None:
        for srv in self._servers:
            srv.close()
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(BaseException):
                await task
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await srv.wait_closed()
        self._servers.clear()

    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio logs a cancelled connection task as an error)
        except Exception:
            log.exception("HTTP connection failed")
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(writer, conn, 400, b"bad request\n", close=True)
                return
            if event is h11.NEED_DATA:
                if conn.our_state is h11.MUST_CLOSE:  # "Connection: close" answered: done
                    return
                data = await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                status, body, ctype = await self._route(event)
                # the body (if any) is read and dropped by the loop below
                await self._send(writer, conn, status, body, content_type=ctype)
                continue
            if isinstance(event, (h11.Data, h11.EndOfMessage)):
                if isinstance(event, h11.EndOfMessage) and conn.our_state is h11.DONE:
                    if conn.their_state is h11.DONE:
                        try:
                            conn.start_next_cycle()
                        except h11.LocalProtocolError:
                            return
                continue
            if isinstance(event, h11.ConnectionClosed) or conn.our_state is h11.MUST_CLOSE:
                return

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        conn: h11.Connection,
        status: int,
        body: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        close: bool = False,
    ) -> None:
        headers = [("content-type", content_type), ("content-length", str(len(body)))]
        if status == 405:
            headers.append(("allow", "GET"))
        if close:
            headers.append(("connection", "close"))
        out = conn.send(
            h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase)
        )
        out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        writer.write(out or b"")
        await writer.drain()

    async def _route(self, req: h11.Request) -> tuple[int, bytes, str]:
        target = urlsplit(req.target.decode("ascii", "replace"))
        query = parse_qs(target.query)
        path = target.path
        if path not in ("/health", "/version", "/metrics"):
            return 404, b"404 page not found\n", "text/plain; charset=utf-8"
        if req.method != b"GET":
            return 405, b"Method Not Allowed\n", "text/plain; charset=utf-8"
        if path == "/version":
            body = json.dumps(
                {"etcdserver": SERVER_VERSION, "etcdcluster": CLUSTER_VERSION},
                separators=(",", ":"),
            ).encode()
            return 200, body, "application/json"
        if path == "/metrics":
            text = await self.metrics.render()
            return 200, text, "text/plain; version=0.0.4; charset=utf-8"
        healthy = await self.check_health(
            excluded=set(query.get("exclude", [])),
            serializable=query.get("serializable", [""])[0] == "true",
        )
        self.metrics.count_health(healthy)
        answer = json.dumps({"health": "true" if healthy else "false"}, separators=(",", ":"))
        return (200 if healthy else 503), answer.encode(), "text/plain; charset=utf-8"

    async def check_health(self, excluded: set[str], serializable: bool) -> bool:
        """etcd's health rule: no alarm outside ``excluded``, a known leader (unless
        serializable), and a one-key read served within the request timeout."""
        try:
            alarms = await self._server.alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET))
        except Exception as exc:
            log.warning("/health: cannot list alarms: %s", exc)
            return False
        for a in alarms.alarms:
            if pb.AlarmType.Name(a.alarm) not in excluded:
                log.warning("/health false: alarm %s on %x", pb.AlarmType.Name(a.alarm), a.memberID)
                return False
        if not serializable and self._server.leader_id == 0:
            log.warning("/health false: no leader")
            return False
        try:
            await asyncio.wait_for(
                self._server.range(
                    pb.RangeRequest(
                        key=b"health", keys_only=True, limit=1, serializable=serializable
                    )
                ),
                self._timeout,
            )
        except Exception as exc:
            if exc in (errors.USER_EMPTY, errors.PERMISSION_DENIED):
                return True  # etcd: with auth on, a refused read still shows the member serves
            log.warning("/health false: range failed: %s", exc or type(exc).__name__)
            return False
        return True
