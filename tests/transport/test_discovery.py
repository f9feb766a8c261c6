"""The DISCOVERY channel: a joining member learns cluster id and member list over the
peer URL, without knowing the cluster id; the listener survives garbage on that channel."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from keelson.transport.discovery import DiscoveryError, discover, discover_one
from keelson.transport.frames import (
    MAGIC,
    MAX_DISCOVERY_BYTES,
    PROTOCOL_VERSION,
    Channel,
    DiscoveryInfo,
    FrameError,
    FrameKind,
    Handshake,
    decode_discovery_info,
    encode_discovery_info,
    encode_handshake,
    frame,
)
from keelson.transport.transport import Transport

CLUSTER = 0xC0FFEE


def run(coro: object, timeout: float = 20.0) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro, timeout)  # type: ignore[arg-type]

    asyncio.run(main())


def closed_port() -> int:
    """A port nothing listens on (bound by the OS, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def listener(members: bytes | None) -> tuple[Transport, str]:
    t = Transport(7, CLUSTER, lambda m: None)
    if members is not None:
        t.set_discovery_provider(lambda: members)
    port = await t.start("127.0.0.1", 0)
    return t, f"http://127.0.0.1:{port}"


def test_discovery_info_round_trip_and_bad_bodies() -> None:
    d = DiscoveryInfo(CLUSTER, 7, b"member list")
    data = encode_discovery_info(d)
    assert data[4] == FrameKind.DISCOVERY_INFO
    assert decode_discovery_info(data[5:]) == d
    with pytest.raises(FrameError, match="too short"):
        decode_discovery_info(b"\x01\x00")
    with pytest.raises(FrameError, match="format 9"):
        decode_discovery_info(b"\x09" + bytes(16))


def test_discover_answers_without_cluster_id_and_skips_dead_urls() -> None:
    async def body() -> None:
        t, url = await listener(b"\x0a\x02m1")
        dead = f"http://127.0.0.1:{closed_port()}"
        got = await discover([dead, "not a url", url], timeout=2.0)
        assert got == DiscoveryInfo(CLUSTER, 7, b"\x0a\x02m1")
        await t.stop()

    run(body())


def test_discover_fails_with_etcds_message_when_nobody_answers() -> None:
    async def body() -> None:
        t, url = await listener(None)  # no provider: refuses discovery
        dead = f"http://127.0.0.1:{closed_port()}"
        with pytest.raises(DiscoveryError) as ei:
            await discover([dead, url], timeout=2.0)
        text = str(ei.value)
        assert text.startswith("could not retrieve cluster information from the given URLs")
        assert "does not answer discovery" in text
        with pytest.raises(DiscoveryError, match="no peer URLs"):
            await discover([], timeout=1.0)
        await t.stop()

    run(body())


def test_silent_or_garbage_answer_is_a_bounded_discovery_error() -> None:
    async def body() -> None:
        async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await asyncio.sleep(10)

        async def huge(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(struct.pack(">I", MAX_DISCOVERY_BYTES + 1) + b"x" * 64)
            await w.drain()

        async def wrong_kind(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(frame(FrameKind.HANDSHAKE_OK))
            await w.drain()

        for handler, why in ((silent, "no answer within"), (huge, "outside"),
                             (wrong_kind, "unexpected frame kind")):
            srv = await asyncio.start_server(handler, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            with pytest.raises(DiscoveryError, match=why):
                await discover_one(f"http://127.0.0.1:{port}", timeout=0.5)
            srv.close()

    run(body())


def test_listener_survives_garbage_on_the_discovery_channel() -> None:
    async def body() -> None:
        t, url = await listener(b"list")
        port = int(url.rsplit(":", 1)[1])
        hs = encode_handshake(Handshake(MAGIC, PROTOCOL_VERSION, Channel.DISCOVERY, 0, 0, 0))
        for payload in (hs[:7], hs + b"\xff" * 100, b"\x00" * 9, hs[:4] + b"\x02" + hs[5:]):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            await asyncio.wait_for(reader.read(), 5)  # answered or closed, never hung
            writer.close()
        assert (await discover_one(url)).members == b"list"
        await t.stop()

    run(body())
