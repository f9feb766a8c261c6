"""The MESSAGES receive path reads in chunks: frames split over reads, several frames per
read, REQUEST frames among messages, and garbage after good frames, over a real socket."""

from __future__ import annotations

import asyncio
import struct

from keelson.raft.types import Entry, Message, MessageType
from keelson.transport.codec import encode_message
from keelson.transport.frames import (
    FrameKind,
    Request,
    decode_response,
    encode_request,
    frame,
    read_frame,
)
from keelson.transport.transport import Transport

from .test_transport import CLUSTER, Node, eventually, handshake, hb, run


def message_frame(m: Message) -> bytes:
    return frame(FrameKind.MESSAGE, encode_message(m))


def test_frames_split_across_reads_and_batched_in_one_read_arrive_in_order() -> None:
    async def body() -> None:
        b = Node(2, max_frame_bytes=4096, snapshot_chunk_bytes=1024)
        await b.start()

        async def echo(p: bytes) -> bytes:
            return b"echo:" + p

        b.t.set_request_handler("echo", echo)
        reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
        try:
            writer.write(handshake())
            assert await asyncio.wait_for(read_frame(reader, 64), 5) == (
                FrameKind.HANDSHAKE_OK,
                b"",
            )
            app = Message(
                MessageType.APP, to=2, frm=9, term=4, entries=(Entry(4, 1, data=b"v" * 300),)
            )
            stream = b"".join(
                [
                    message_frame(hb(9, 2, 1)),
                    message_frame(hb(9, 2, 2)),
                    encode_request(Request(7, "echo", b"hi")),
                    message_frame(hb(9, 2, 3)),
                    message_frame(app),
                ]
            )
            # Pieces of 7 bytes, each drained and followed by a pause so most of them
            # arrive as reads of their own, cutting headers and bodies everywhere.
            for i in range(0, len(stream), 7):
                writer.write(stream[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0.001)
            await eventually(lambda: len(b.received) == 4)
            assert [m.term for m in b.received] == [1, 2, 3, 4]
            assert b.received[3] == app
            kind, resp = await asyncio.wait_for(read_frame(reader, 4096), 5)
            assert kind == FrameKind.RESPONSE
            answer = decode_response(resp)
            assert (answer.request_id, answer.ok, answer.payload) == (7, True, b"echo:hi")
            # Many frames in one write are all delivered, in order.
            writer.write(b"".join(message_frame(hb(9, 2, t)) for t in range(10, 60)))
            await eventually(lambda: len(b.received) == 54)
            assert [m.term for m in b.received[4:]] == list(range(10, 60))
            # A good frame then an oversized length in the same write: the frame is
            # delivered, then the listener closes without waiting for the claimed body.
            writer.write(message_frame(hb(9, 2, 99)) + struct.pack(">I", 0xFFFFFFF0) + b"x")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert b.received[-1].term == 99 and len(b.received) == 55
        finally:
            writer.close()
            await b.t.stop()

    run(body())


def test_a_frame_cut_by_the_peer_closing_delivers_nothing_and_the_listener_serves_on() -> None:
    async def body() -> None:
        b = Node(2)
        await b.start()
        data = message_frame(hb(9, 2, 5))
        reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
        writer.write(handshake() + message_frame(hb(9, 2, 4)) + data[:-3])
        await writer.drain()
        assert await asyncio.wait_for(read_frame(reader, 64), 5) == (FrameKind.HANDSHAKE_OK, b"")
        await eventually(lambda: len(b.received) == 1)
        writer.close()
        await asyncio.sleep(0.05)
        assert [m.term for m in b.received] == [4]
        # A new connection is served as usual.
        reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
        writer.write(handshake() + data)
        await eventually(lambda: len(b.received) == 2)
        assert b.received[1].term == 5
        writer.close()
        await b.t.stop()

    run(body())


def test_frames_right_behind_the_handshake_and_then_eof_are_all_delivered() -> None:
    """The listener may have buffered frames (and even the EOF) by the time it has checked
    the handshake; they are handled before anything read later, and EOF ends the
    connection without losing them."""

    async def body() -> None:
        b = Node(2)
        await b.start()
        for attempt in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
            terms = [attempt * 100 + t for t in range(20)]
            writer.write(handshake() + b"".join(message_frame(hb(9, 2, t)) for t in terms))
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == frame(FrameKind.HANDSHAKE_OK)
            await eventually(lambda n=attempt: len(b.received) == 20 * (n + 1))
            assert [m.term for m in b.received[-20:]] == terms
            writer.close()
        await eventually(lambda: not b.t._inbound)  # every connection was cleaned up
        await b.t.stop()

    run(body())


def test_on_delivered_is_called_once_per_chunk_that_delivered_messages() -> None:
    """The owner hears once after all of a read's messages are delivered (so it can act on
    them together), not per message, and not for a read that delivered none."""

    async def body() -> None:
        seen: list[int] = []  # how many messages had been delivered at each call
        b = Node(2, max_frame_bytes=4096, snapshot_chunk_bytes=1024)
        b.t = Transport(2, CLUSTER, b.received.append, max_frame_bytes=4096,
                        snapshot_chunk_bytes=1024,
                        on_delivered=lambda: seen.append(len(b.received)))
        await b.start()

        async def echo(p: bytes) -> bytes:
            return p

        b.t.set_request_handler("echo", echo)
        reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
        try:
            writer.write(handshake())
            await asyncio.wait_for(read_frame(reader, 64), 5)
            writer.write(b"".join(message_frame(hb(9, 2, t)) for t in range(1, 6)))
            await eventually(lambda: len(b.received) == 5)
            await asyncio.sleep(0.05)
            assert seen == [5]
            # A read holding only a request delivers no message: no call.
            writer.write(encode_request(Request(7, "echo", b"x")))
            await asyncio.wait_for(read_frame(reader, 4096), 5)
            assert seen == [5]
            # Half a frame delivers nothing; the read completing it delivers one.
            one = message_frame(hb(9, 2, 6))
            writer.write(one[:5])
            await writer.drain()
            await asyncio.sleep(0.05)
            assert seen == [5]
            writer.write(one[5:])
            await eventually(lambda: seen == [5, 6])
        finally:
            writer.close()
            await b.t.stop()

    run(body())


def test_on_delivered_raising_is_logged_and_delivery_goes_on() -> None:
    async def body() -> None:
        calls: list[int] = []

        def boom() -> None:
            calls.append(1)
            raise RuntimeError("owner failed")

        b = Node(2)
        b.t = Transport(2, CLUSTER, b.received.append, on_delivered=boom)
        await b.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
        try:
            writer.write(handshake())
            await asyncio.wait_for(read_frame(reader, 64), 5)
            writer.write(message_frame(hb(9, 2, 1)))
            await eventually(lambda: len(calls) == 1)
            writer.write(message_frame(hb(9, 2, 2)))
            await eventually(lambda: len(b.received) == 2 and len(calls) == 2)
        finally:
            writer.close()
            await b.t.stop()

    run(body())
