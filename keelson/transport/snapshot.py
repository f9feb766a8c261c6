"""Streaming a MsgSnap over its own connection, in chunks.

Theory of operation: raft snapshots can be hundreds of megabytes, while heartbeats must keep
arriving every few hundred milliseconds. So the transport never puts a MsgSnap on a peer's
MESSAGES connection: it dials a separate SNAPSHOT connection (same handshake) and streams::

    dialer   SNAP_BEGIN (data length u64 + the MsgSnap encoded with empty data)
             SNAP_CHUNK * n   (each at most chunk_bytes, awaited with drain)
    listener SNAP_DONE        (after on_message has been given the whole message)

Each chunk is followed by ``drain``, so the event loop interleaves the MESSAGES connection's
writes between chunks and memory held in socket buffers stays bounded. The listener checks
the announced length against ``max_snapshot`` before accepting any data, accepts no chunk
that would exceed it, and waits at most ``idle_timeout`` for each frame; it assembles the
snapshot in memory. The dialer treats the stream as delivered only when SNAP_DONE arrives
within ``timeout``. Any error raises (``CodecError``/``FrameError``, ``OSError``,
``TimeoutError``, ``asyncio.IncompleteReadError``); the transport turns it into
``on_snapshot_status(peer, failed=True)``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from keelson.raft.types import Message, MessageType
from keelson.transport.codec import decode_message, encode_message
from keelson.transport.frames import (
    LENGTH,
    FrameError,
    FrameKind,
    decode_snap_begin,
    encode_snap_begin,
    frame,
    read_frame,
)


def split_snapshot(m: Message) -> tuple[bytes, bytes]:
    """(the MsgSnap encoded without its data, the data); FrameError if ``m`` has none."""
    if m.type != MessageType.SNAP or m.snapshot is None:
        raise FrameError(f"{m.type.name} carries no snapshot")
    header = encode_message(replace(m, snapshot=replace(m.snapshot, data=b"")))
    return header, m.snapshot.data


async def stream_snapshot(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    header: bytes,
    data: bytes,
    *,
    chunk_bytes: int,
    max_frame: int,
    timeout: float,
) -> None:
    """Send one snapshot on a handshaken SNAPSHOT connection; return once acknowledged."""
    writer.write(encode_snap_begin(len(data), header))
    view = memoryview(data)
    for off in range(0, len(view), chunk_bytes):
        chunk = view[off : off + chunk_bytes]
        writer.write(LENGTH.pack(len(chunk) + 1) + bytes((FrameKind.SNAP_CHUNK,)))
        writer.write(chunk)
        await writer.drain()
    await writer.drain()
    kind, _ = await asyncio.wait_for(read_frame(reader, max_frame), timeout)
    if kind != FrameKind.SNAP_DONE:
        raise FrameError(f"unexpected frame kind {kind} after snapshot")


async def receive_snapshot(
    reader: asyncio.StreamReader, *, max_frame: int, max_snapshot: int, idle_timeout: float
) -> Message:
    """Read one streamed snapshot; the MsgSnap with its data restored."""
    kind, body = await asyncio.wait_for(read_frame(reader, max_frame), idle_timeout)
    if kind != FrameKind.SNAP_BEGIN:
        raise FrameError(f"snapshot stream starts with frame kind {kind}")
    total, header = decode_snap_begin(body)
    if total > max_snapshot:
        raise FrameError(f"snapshot of {total} bytes exceeds the limit of {max_snapshot}")
    m = decode_message(header)
    if m.type != MessageType.SNAP or m.snapshot is None or m.snapshot.data:
        raise FrameError("snapshot stream header is not a MsgSnap without data")
    data = bytearray()
    while len(data) < total:
        kind, body = await asyncio.wait_for(read_frame(reader, max_frame), idle_timeout)
        if kind != FrameKind.SNAP_CHUNK:
            raise FrameError(f"unexpected frame kind {kind} in snapshot stream")
        if len(data) + len(body) > total:
            raise FrameError("snapshot chunks exceed the announced length")
        data += body
    return replace(m, snapshot=replace(m.snapshot, data=bytes(data)))


async def acknowledge_snapshot(writer: asyncio.StreamWriter) -> None:
    """Tell the dialer its snapshot was delivered."""
    writer.write(frame(FrameKind.SNAP_DONE))
    await writer.drain()
