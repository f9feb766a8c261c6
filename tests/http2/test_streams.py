"""Stream lifecycle, concurrency, resets from both sides, and rapid-reset protection."""

from __future__ import annotations

import pytest

from keelson.http2 import (
    ErrorCode,
    H2Config,
    HeaderBlock,
    LocalProtocolError,
    RequestReceived,
    StreamClosedError,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from keelson.http2 import _frames as fr
from tests.http2.wire import REQUEST, Client, data_frames, goaway_code, resets


def test_stream_lifecycle_both_orders() -> None:
    c = Client()
    c.request(1)
    c.conn.send_headers(1, [(b":status", b"200")], end_stream=True)  # half-closed (local)
    assert c.conn.open_streams == 1
    assert c.send(fr.data_frame(1, b"", end_stream=True)) == [StreamEnded(1)]
    assert c.conn.open_streams == 0
    assert c.request(3, end_stream=True)[-1] == StreamEnded(3)  # half-closed (remote)
    c.conn.send_headers(3, [(b":status", b"200")])
    c.conn.send_trailers(3, [(b"grpc-status", b"0")])
    assert c.conn.open_streams == 0
    with pytest.raises(StreamClosedError):
        c.conn.send_data(3, b"late")


def test_client_trailers_end_the_stream() -> None:
    c = Client()
    c.request(1)
    events = c.send(c.headers(1, [(b"x-checksum", b"abc")], end_stream=True))
    assert events == [TrailersReceived(1, ((b"x-checksum", b"abc"),)), StreamEnded(1)]


def test_api_misuse_is_refused() -> None:
    c = Client()
    c.request(1)
    with pytest.raises(LocalProtocolError):
        c.conn.send_data(1, b"body before headers")
    c.conn.send_headers(1, [(b":status", b"200")])
    with pytest.raises(LocalProtocolError):
        c.conn.send_headers(1, [(b":status", b"200")])
    with pytest.raises(LocalProtocolError):
        c.conn.send_trailers(1, [(b":status", b"200")])  # pseudo-field in trailers
    with pytest.raises(StreamClosedError):
        c.conn.send_headers(3, [(b":status", b"200")])  # never opened
    with pytest.raises(LocalProtocolError):
        c.conn.reset_stream(9)  # idle
    with pytest.raises(LocalProtocolError):
        c.conn.ping(b"short")
    c.request(3)
    with pytest.raises(LocalProtocolError):
        c.conn.send_trailers(3, [(b"grpc-status", b"0")])  # before headers
    with pytest.raises(LocalProtocolError):
        c.conn.send_headers(3, [(b":status", b"200"), (b"X-Upper", b"1")])
    with pytest.raises(LocalProtocolError):
        c.conn.send_headers(3, HeaderBlock.static(((b"grpc-status", b"0"),), trailers=True))
    assert c.conn.highest_stream_id == 3
    assert c.conn.send_window(3) == 65535 and c.conn.send_window(99) == 0


def test_max_concurrent_streams_refuses_without_events() -> None:
    c = Client(H2Config(max_concurrent_streams=2))
    assert isinstance(c.request(1)[0], RequestReceived)
    assert isinstance(c.request(3)[0], RequestReceived)
    assert c.request(5) == []
    assert resets(c.frames()) == [(5, ErrorCode.REFUSED_STREAM)]
    c.send(fr.data_frame(5, b"in flight"))  # refused stream: ignored
    assert c.frames() == []
    c.send(fr.rst_stream_frame(1, ErrorCode.CANCEL))
    assert isinstance(c.request(7)[0], RequestReceived)


def test_refused_stream_keeps_hpack_in_sync() -> None:
    """A refused stream's block is still decoded, so later blocks referring to it work."""
    c = Client(H2Config(max_concurrent_streams=1))
    c.request(1)
    custom = (*REQUEST, (b"x-token", b"secret-value"))
    c.send(c.headers(3, custom))  # refused, but x-token entered both dynamic tables
    c.send(fr.rst_stream_frame(1, ErrorCode.CANCEL))
    block = c.block(custom)
    assert len(block) < 10  # all indexed now
    events = c.send(fr.headers_frame(5, block))
    assert events == [RequestReceived(5, custom)]


def test_client_reset_mid_stream_drops_queued_output() -> None:
    c = Client(settings=[(0x4, 5)])
    c.request(1)
    c.send(fr.data_frame(1, b"part"))
    c.conn.send_headers(1, [(b":status", b"200")])
    c.conn.send_data(1, b"0123456789")
    c.frames()
    events = c.send(fr.rst_stream_frame(1, ErrorCode.CANCEL))
    assert events == [StreamReset(1, ErrorCode.CANCEL, remote=True)]
    assert c.conn.open_streams == 0 and c.conn.queued_bytes(1) == 0
    with pytest.raises(StreamClosedError):
        c.conn.send_data(1, b"x")
    c.conn.reset_stream(1)  # a no-op now: racing the client is allowed
    assert c.frames() == []
    c.send(fr.window_update_frame(1, 100))  # closed stream: ignored
    assert data_frames(c.frames()) == []


def test_unknown_error_code_in_rst_stream_is_kept() -> None:
    c = Client()
    c.request(1)
    assert c.send(fr.rst_stream_frame(1, 0xABC)) == [StreamReset(1, 0xABC, remote=True)]


def test_our_reset_ignores_frames_in_flight() -> None:
    c = Client()
    c.request(1)
    c.conn.reset_stream(1, ErrorCode.INTERNAL_ERROR)
    assert resets(c.frames()) == [(1, ErrorCode.INTERNAL_ERROR)]
    events = c.send(fr.data_frame(1, b"x"), c.headers(1, [(b"t", b"1")], end_stream=True),
                    fr.rst_stream_frame(1, ErrorCode.CANCEL), fr.window_update_frame(1, 9))
    assert events == []
    assert resets(c.frames()) == []


def test_malformed_request_on_new_stream_produces_no_event() -> None:
    c = Client()
    events = c.send(c.headers(1, [(b":method", b"GET")]))
    assert events == []
    assert resets(c.frames()) == [(1, ErrorCode.PROTOCOL_ERROR)]


def test_repeated_request_lists_are_checked_each_time() -> None:
    """A repeated header block decodes to the same list, whose check is remembered; a
    different list (malformed, or a content-length a body-less request cannot have) is
    still checked, before and after."""
    c = Client()
    bad = [(b":method", b"POST"), (b":path", b"/x")]  # no :scheme
    with_length = [*REQUEST, (b"content-length", b"5")]
    for sid in (1, 3):
        assert isinstance(c.request(sid)[0], RequestReceived)
    assert c.send(c.headers(5, bad)) == []
    assert c.send(c.headers(7, with_length, end_stream=True)) == []
    assert isinstance(c.request(9)[0], RequestReceived)
    assert c.send(c.headers(11, bad)) == []
    assert c.send(c.headers(13, with_length, end_stream=True)) == []
    assert resets(c.frames()) == [(sid, ErrorCode.PROTOCOL_ERROR) for sid in (5, 7, 11, 13)]


def test_rapid_reset_counted_per_frames() -> None:
    c = Client(H2Config(reset_burst=5, reset_period_frames=1000))
    sid = 1
    for _ in range(5):
        c.send(c.headers(sid), fr.rst_stream_frame(sid, ErrorCode.CANCEL))
        sid += 2
    assert goaway_code(c.frames()) is None
    c.send(c.headers(sid), fr.rst_stream_frame(sid, ErrorCode.CANCEL))
    assert goaway_code(c.frames()) == ErrorCode.ENHANCE_YOUR_CALM


def test_rapid_reset_refills_with_the_callers_clock() -> None:
    now = [0.0]
    c = Client(H2Config(reset_burst=4, reset_period_seconds=1.0, clock=lambda: now[0]))
    sid = 1
    for _ in range(40):  # 4 per second sustained is within budget
        now[0] += 0.25
        c.send(c.headers(sid), fr.rst_stream_frame(sid, ErrorCode.CANCEL))
        sid += 2
    assert goaway_code(c.frames()) is None
    for _ in range(5):  # a burst of 5 in no time is not
        c.send(c.headers(sid), fr.rst_stream_frame(sid, ErrorCode.CANCEL))
        sid += 2
    assert goaway_code(c.frames()) == ErrorCode.ENHANCE_YOUR_CALM


def test_refused_streams_spend_the_reset_budget() -> None:
    c = Client(H2Config(max_concurrent_streams=1, reset_burst=3))
    c.request(1)
    for sid in (3, 5, 7):
        c.request(sid)
    assert goaway_code(c.frames()) is None
    c.request(9)
    assert goaway_code(c.frames()) == ErrorCode.ENHANCE_YOUR_CALM


def test_skipped_stream_ids_are_closed() -> None:
    c = Client()
    c.request(7)
    c.send(fr.data_frame(3, b"x"))  # 3 was skipped: implicitly closed, not idle
    out = c.frames()
    assert goaway_code(out) is None and resets(out) == [(3, ErrorCode.STREAM_CLOSED)]
