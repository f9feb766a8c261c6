"""``send_response``: a stream's whole answer in one call gives the bytes, state and errors
of ``send_headers`` + ``send_data`` + ``send_trailers``, whatever the windows allow."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from keelson.http2 import (
    H2Config,
    HeaderBlock,
    LocalProtocolError,
    SettingCode,
    StreamClosedError,
)
from keelson.http2 import _frames as fr
from tests.http2.wire import Client

S = SettingCode
HEADERS = HeaderBlock.static(((b":status", b"200"), (b"content-type", b"application/grpc")))
TRAILERS = HeaderBlock.static(((b"grpc-status", b"0"),), trailers=True)
Answer = Callable[[Client, int, bytes], None]


def fused(c: Client, sid: int, data: bytes) -> None:
    c.conn.send_response(sid, HEADERS, data, TRAILERS)


def three_calls(c: Client, sid: int, data: bytes) -> None:
    c.conn.send_headers(sid, HEADERS)
    c.conn.send_data(sid, data)
    c.conn.send_trailers(sid, TRAILERS)


def transcript(answer: Answer, settings: Sequence[tuple[int, int]], sizes: Sequence[int],
               end_stream: bool) -> list[object]:
    """Bytes and state after answering one stream per size, then after windows open."""
    c = Client(H2Config(), settings=settings)
    seen: list[object] = []
    for i, n in enumerate(sizes):
        sid = 2 * i + 1
        c.request(sid, end_stream=end_stream)
        answer(c, sid, bytes([i]) * n)
        seen += [c.conn.data_to_send(), c.conn.open_streams, c.conn.queued_bytes(sid),
                 c.conn.send_window(sid)]
    for sid in range(1, 2 * len(sizes), 2):
        c.send(fr.window_update_frame(sid, 1 << 20))
    c.send(fr.window_update_frame(0, 1 << 20))
    seen += [c.conn.data_to_send(), c.conn.open_streams]
    return seen


@pytest.mark.parametrize("end_stream", [True, False])
@pytest.mark.parametrize(("settings", "sizes"), [
    ((), [5, 300, 0]),  # the usual case: every answer fits
    (((S.INITIAL_WINDOW_SIZE, 10),), [5, 12, 10]),  # the stream window is too small
    (((S.MAX_FRAME_SIZE, 16384),), [16384, 16385]),  # one frame at most
    (((S.INITIAL_WINDOW_SIZE, 1 << 20),), [40000, 30000, 5]),  # the connection window runs out
])
def test_same_as_three_calls(settings: Sequence[tuple[int, int]], sizes: Sequence[int],
                             end_stream: bool) -> None:
    assert transcript(fused, settings, sizes, end_stream) == transcript(
        three_calls, settings, sizes, end_stream)


def test_fast_path_frames_and_stream_end() -> None:
    c = Client()
    c.request(1, end_stream=True)
    fused(c, 1, b"hello")
    out = c.frames()
    assert [type(f).__name__ for f in out] == ["HeadersFrame", "DataFrame", "HeadersFrame"]
    assert out[1].data == b"hello" and "END_STREAM" in out[2].flags
    assert c.conn.open_streams == 0


def test_misuse_is_refused_like_the_three_calls() -> None:
    c = Client()
    c.request(1)
    c.conn.send_headers(1, HEADERS)
    with pytest.raises(LocalProtocolError):
        fused(c, 1, b"x")  # headers already sent
    with pytest.raises(StreamClosedError):
        fused(c, 3, b"x")  # never opened
    c.request(3)
    with pytest.raises(LocalProtocolError):
        c.conn.send_response(3, TRAILERS, b"x", TRAILERS)  # trailers as headers
    c.request(5)
    with pytest.raises(LocalProtocolError):
        c.conn.send_response(5, HEADERS, b"x", HEADERS)  # headers as trailers
    c.request(7)
    fused(c, 7, b"x")
    with pytest.raises(StreamClosedError):
        fused(c, 7, b"x")  # already answered
