"""keelson.http2._frames against hyperframe: our builders produce the bytes hyperframe
produces, our reader parses what hyperframe serializes, and the reader's buffer is bounded."""

from __future__ import annotations

import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from keelson.http2 import ErrorCode
from keelson.http2 import _frames as fr
from keelson.http2.errors import ProtocolError
from tests.http2.wire import Client


def _hf(frame: Frame, **attrs: object) -> bytes:
    for key, value in attrs.items():
        setattr(frame, key, value)
    return frame.serialize()


PAIRS: dict[str, tuple[bytes, bytes]] = {
    "DATA": (fr.data_frame(1, b"abc", end_stream=True),
             _hf(DataFrame(1, flags=["END_STREAM"]), data=b"abc")),
    "DATA padded": (fr.data_frame(3, b"abc", pad=4),
                    _hf(DataFrame(3, flags=["PADDED"]), data=b"abc", pad_length=4)),
    "HEADERS": (fr.headers_frame(5, b"\x82\x84", end_stream=True),
                _hf(HeadersFrame(5, flags=["END_STREAM", "END_HEADERS"]), data=b"\x82\x84")),
    "HEADERS priority+padding": (
        fr.headers_frame(7, b"\x82", end_headers=False, pad=2, priority=(3, True, 200)),
        _hf(HeadersFrame(7, flags=["PRIORITY", "PADDED"]), data=b"\x82", pad_length=2,
            depends_on=3, exclusive=True, stream_weight=199),
    ),
    "CONTINUATION": (fr.continuation_frame(7, b"\x84"),
                     _hf(ContinuationFrame(7, flags=["END_HEADERS"]), data=b"\x84")),
    "PRIORITY": (fr.priority_frame(9, 1, 16, False),
                 _hf(PriorityFrame(9), depends_on=1, stream_weight=15, exclusive=False)),
    "RST_STREAM": (fr.rst_stream_frame(9, ErrorCode.CANCEL),
                   _hf(RstStreamFrame(9), error_code=8)),
    "SETTINGS": (fr.settings_frame([(4, 1000), (3, 10)]),
                 _hf(SettingsFrame(0, settings={4: 1000, 3: 10}))),
    "SETTINGS ACK": (fr.settings_frame(ack=True), _hf(SettingsFrame(0, flags=["ACK"]))),
    "PING": (fr.ping_frame(b"12345678", ack=True),
             _hf(PingFrame(0, flags=["ACK"]), opaque_data=b"12345678")),
    "GOAWAY": (fr.goaway_frame(11, ErrorCode.ENHANCE_YOUR_CALM, b"calm"),
               _hf(GoAwayFrame(0), last_stream_id=11, error_code=11, additional_data=b"calm")),
    "WINDOW_UPDATE": (fr.window_update_frame(0, 65535),
                      _hf(WindowUpdateFrame(0), window_increment=65535)),
    "unknown type": (fr.frame(0x42, 0x3, 5, b"ext"), b"\x00\x00\x03\x42\x03\x00\x00\x00\x05ext"),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_builders_match_hyperframe(name: str) -> None:
    ours, theirs = PAIRS[name]
    assert ours == theirs


@pytest.mark.parametrize("name", list(PAIRS))
def test_reader_parses_hyperframe_bytes(name: str) -> None:
    _, theirs = PAIRS[name]
    reader = fr.FrameReader(1 << 14)
    reader.feed(theirs[:5])
    assert reader.next_frame() is None
    reader.feed(theirs[5:] + b"\x00")
    frame = reader.next_frame()
    assert frame is not None
    assert fr.frame(frame.type, frame.flags, frame.stream_id, frame.payload) == theirs
    assert reader.next_frame() is None and reader.buffered == 1


def test_reader_refuses_oversized_frame_before_buffering_it() -> None:
    reader = fr.FrameReader(16384)
    reader.feed((16385 << 8 | fr.DATA).to_bytes(4, "big") + bytes([0, 0, 0, 0, 1]))
    with pytest.raises(ProtocolError) as info:
        reader.next_frame()
    assert info.value.code == ErrorCode.FRAME_SIZE_ERROR


def test_reader_clears_the_reserved_bit() -> None:
    reader = fr.FrameReader(16384)
    reader.feed(fr.frame(fr.PING, 0, 0x80000000, bytes(8)))
    frame = reader.next_frame()
    assert frame is not None and frame.stream_id == 0


def test_header_block_frames_split_exactly() -> None:
    wire = fr.header_block_frames(1, bytes(range(256)) * 130, True, 16384)
    reader = fr.FrameReader(16384)
    reader.feed(wire)
    frames = []
    while (f := reader.next_frame()) is not None:
        frames.append(f)
    assert [(f.type, f.flags) for f in frames] == [
        (fr.HEADERS, fr.FLAG_END_STREAM),
        (fr.CONTINUATION, 0),
        (fr.CONTINUATION, fr.FLAG_END_HEADERS),
    ]
    assert b"".join(f.payload for f in frames) == bytes(range(256)) * 130


def test_server_accepts_a_conversation_built_with_hyperframe() -> None:
    """The same scripted client, its frames serialized by hyperframe instead of _frames."""
    c = Client()
    block = c.block([(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/x"),
                     (b":authority", b"a")])
    wire = b"".join([
        _hf(HeadersFrame(1, flags=["PRIORITY", "PADDED"]), data=block[:4], pad_length=3,
            depends_on=0, stream_weight=31),
        _hf(ContinuationFrame(1, flags=["END_HEADERS"]), data=block[4:]),
        _hf(PriorityFrame(1), depends_on=0, stream_weight=1),
        _hf(DataFrame(1, flags=["PADDED"]), data=b"body", pad_length=10),
        fr.frame(0xEE, 0, 1, b"ignored"),  # hyperframe does not serialize unknown types
        _hf(WindowUpdateFrame(1), window_increment=10),
        _hf(DataFrame(1, flags=["END_STREAM"]), data=b"!"),
        _hf(PingFrame(0), opaque_data=b"hyperfrm"),
    ])
    events = c.send(wire)
    names = [type(e).__name__ for e in events]
    assert names == ["RequestReceived", "DataReceived", "WindowUpdated", "DataReceived",
                     "StreamEnded", "PingReceived"]
    assert events[1].flow_controlled_length == 15  # type: ignore[attr-defined]
