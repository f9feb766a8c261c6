"""FrameBuffer (chunked frame splitting) and the fused MESSAGE frame encoder."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keelson.raft.types import Entry, Message, MessageType
from keelson.transport.codec import CodecError, encode_message, encode_message_frame
from keelson.transport.frames import FrameBuffer, FrameError, FrameKind, frame

from .test_codec import messages

CAP = 1024


def stream_of(frames: list[tuple[int, bytes]]) -> bytes:
    return b"".join(frame(FrameKind(kind), body) for kind, body in frames)


def feed_all(buf: FrameBuffer, chunks: list[bytes]) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    for chunk in chunks:
        out.extend(buf.feed(chunk))
    return out


SAMPLE = [
    (FrameKind.MESSAGE, b"first"),
    (FrameKind.REQUEST, b""),
    (FrameKind.MESSAGE, bytes(range(200))),
    (FrameKind.RESPONSE, b"x"),
]


def test_several_frames_in_one_chunk_come_out_in_order() -> None:
    out = feed_all(FrameBuffer(CAP), [stream_of(SAMPLE)])
    assert out == [(int(k), b) for k, b in SAMPLE]
    assert all(type(body) is bytes for _, body in out)


def test_a_split_at_every_byte_boundary_gives_the_same_frames() -> None:
    data = stream_of(SAMPLE)
    want = [(int(k), b) for k, b in SAMPLE]
    for i in range(len(data) + 1):
        buf = FrameBuffer(CAP)
        assert feed_all(buf, [data[:i], data[i:]]) == want, i
        assert buf.pending() == b""
    # And one byte at a time: nothing is yielded before a frame's last byte.
    buf = FrameBuffer(CAP)
    seen: list[tuple[int, bytes]] = []
    ends = {len(stream_of(SAMPLE[: n + 1])) for n in range(len(SAMPLE))}
    for i in range(len(data)):
        got = list(buf.feed(data[i : i + 1]))
        assert bool(got) == (i + 1 in ends), i
        seen.extend(got)
    assert seen == want


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(list(FrameKind)), st.binary(max_size=CAP - 1)), max_size=8),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_any_chunking_gives_the_same_frames(
    frames: list[tuple[FrameKind, bytes]], cuts: list[int]
) -> None:
    data = stream_of(frames)
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert feed_all(FrameBuffer(CAP), chunks) == [(int(k), b) for k, b in frames]


def test_oversize_length_is_rejected_before_the_body_arrives() -> None:
    buf = FrameBuffer(CAP)
    with pytest.raises(FrameError, match=f"frame length {CAP + 1} outside 1..{CAP}"):
        list(buf.feed(struct.pack(">I", CAP + 1)))
    # The length itself split over two chunks: refused once its fourth byte is in.
    buf = FrameBuffer(CAP)
    assert list(buf.feed(struct.pack(">I", 0xFFFFFFF0)[:2])) == []
    with pytest.raises(FrameError, match="outside"):
        list(buf.feed(struct.pack(">I", 0xFFFFFFF0)[2:]))
    # A frame of exactly the cap is fine.
    body = b"y" * (CAP - 1)
    assert feed_all(FrameBuffer(CAP), [frame(FrameKind.MESSAGE, body)]) == [
        (FrameKind.MESSAGE, body)
    ]


def test_zero_length_is_rejected() -> None:
    with pytest.raises(FrameError, match="frame length 0"):
        list(FrameBuffer(CAP).feed(struct.pack(">I", 0)))


def test_garbage_after_a_valid_frame_yields_the_frame_then_fails() -> None:
    good = frame(FrameKind.MESSAGE, b"ok")
    gen = FrameBuffer(CAP).feed(good + b"\xff\xff\xff\xff garbage")
    assert next(gen) == (FrameKind.MESSAGE, b"ok")
    with pytest.raises(FrameError):
        next(gen)
    # Garbage that is a plausible length waits for more bytes, and is held as pending.
    buf = FrameBuffer(CAP)
    assert feed_all(buf, [good + b"\x00\x00\x00\x09abc"]) == [(FrameKind.MESSAGE, b"ok")]
    assert buf.pending() == b"\x00\x00\x00\x09abc"


@settings(deadline=None)
@given(messages)
def test_encode_message_frame_is_frame_of_encode_message(m: Message) -> None:
    assert encode_message_frame(m) == frame(FrameKind.MESSAGE, encode_message(m))


def test_encode_message_frame_raises_codec_error_like_encode_message() -> None:
    for bad in (
        Message(MessageType.APP, term=-1),
        Message(MessageType.HEARTBEAT, commit=2**64),
        Message(MessageType.APP, entries=(Entry(1, -1),)),
        Message(MessageType.APP, entries=(Entry(1, 1, data="text"),)),  # type: ignore[arg-type]
    ):
        with pytest.raises(CodecError):
            encode_message(bad)
        with pytest.raises(CodecError):
            encode_message_frame(bad)
