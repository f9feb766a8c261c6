"""In-process members for the server tests: configs with short timers, and a router that
wires several members of one event loop together (no sockets)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from keelson.raft import Message
from keelson.server.etcdserver import EtcdServer, MemberConfig

URLS = {1: ("http://127.0.0.1:2380",), 2: ("http://127.0.0.1:2381",),
        3: ("http://127.0.0.1:2382",)}
"""Peer URLs of the three members a ``Router`` cluster has (never dialed)."""


def single_member_config(tmp: Path, **overrides: Any) -> MemberConfig:
    """A one-member cluster in ``tmp`` with 10 ms heartbeats; ``overrides`` win."""
    fields: dict[str, Any] = dict(
        name="m1", data_dir=str(tmp), member_id=0x1234, cluster_id=0xABCD,
        peers={0x1234: ("http://127.0.0.1:2380",)}, heartbeat_interval_ms=10,
        election_timeout_ms=50, request_timeout_s=5.0,
    )
    fields.update(overrides)
    return MemberConfig(**fields)


def router_member_config(tmp: Path, mid: int, parallel: bool = False,
                         peers: dict[int, tuple[str, ...]] | None = None, new: bool = True,
                         **overrides: Any) -> MemberConfig:
    """Member ``mid`` of a ``Router`` cluster, data in ``tmp/m<mid>``. Elections take 3-6 s
    so that a test's deliberate stalls do not start one."""
    fields: dict[str, Any] = dict(
        name=f"m{mid}", data_dir=str(tmp / f"m{mid}"), member_id=mid, cluster_id=99,
        peers=URLS if peers is None else peers, new_cluster=new, heartbeat_interval_ms=10,
        election_timeout_ms=3000, request_timeout_s=10.0, parallel_append=parallel,
    )
    fields.update(overrides)
    return MemberConfig(**fields)


class Router:
    """Delivers messages between in-process members; members in ``down`` neither send nor
    receive (a crashed or cut-off process)."""

    def __init__(self) -> None:
        self.servers: dict[int, EtcdServer] = {}
        self.down: set[int] = set()
        self.highest_sent = 0
        """The highest entry index any message handed to ``send`` carried."""
        self.sent: list[Message] = []
        """Every message handed to ``send``, in order."""

    def send(self, msgs: list[Message]) -> None:
        loop = asyncio.get_running_loop()
        self.sent.extend(msgs)
        for m in msgs:
            if m.entries:
                self.highest_sent = max(self.highest_sent, m.entries[-1].index)
            dest = self.servers.get(m.to)
            if dest is not None and m.frm not in self.down and m.to not in self.down:
                loop.call_soon(deliver, dest, m)

    async def start_three(self, tmp: Path, **overrides: Any) -> dict[int, EtcdServer]:
        """Start members 1-3 (``router_member_config`` with ``overrides``)."""
        for mid in URLS:
            self.servers[mid] = EtcdServer(router_member_config(tmp, mid, **overrides),
                                           send=self.send)
        for s in self.servers.values():
            await s.start()
        return self.servers

    @contextlib.asynccontextmanager
    async def three(self, tmp: Path, **overrides: Any) -> AsyncIterator[dict[int, EtcdServer]]:
        """``start_three``, and stop every member on the way out."""
        servers = await self.start_three(tmp, **overrides)
        try:
            yield servers
        finally:
            for s in servers.values():
                await s.stop()


def deliver(dest: EtcdServer, m: Message) -> None:
    """What the transport and ``run_member`` do for each read of peer messages: step, then
    let the member handle the resulting Ready at once (``EtcdServer.drive_delivered``)."""
    dest.step(m)
    dest.drive_delivered()


async def until(cond: Any, timeout: float = 20.0) -> None:
    """Poll ``cond()`` every 10 ms until true; AssertionError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def leader_of(servers: dict[int, EtcdServer]) -> EtcdServer:
    await until(lambda: any(s.is_leader for s in servers.values()))
    return next(s for s in servers.values() if s.is_leader)
