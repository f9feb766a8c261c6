"""Flow control in both directions (RFC 9113 section 5.2, 6.9): windows, padding, batching
of WINDOW_UPDATE, buffering of what our send windows do not allow, overflow rules."""

from __future__ import annotations

import pytest

from keelson.http2 import (
    DataReceived,
    ErrorCode,
    H2Config,
    LocalProtocolError,
    SettingCode,
    StreamEnded,
    WindowUpdated,
)
from keelson.http2 import _frames as fr
from tests.http2.wire import Client, data_frames, goaway_code, resets, window_updates

S = SettingCode
SMALL = H2Config(initial_window_size=65535, connection_window_size=65535)


def _fill(c: Client, stream_id: int, n: int, end_stream: bool = False) -> list[object]:
    events: list[object] = []
    while n > 0:
        chunk = min(n, 16384)
        n -= chunk
        events += c.send(fr.data_frame(stream_id, bytes(chunk), end_stream=end_stream and n == 0))
    return events


def test_padding_counts_against_windows() -> None:
    c = Client()
    c.request(1)
    events = c.send(fr.data_frame(1, b"hello", pad=10))
    assert events == [DataReceived(1, b"hello", 16)]  # 1 pad-length octet + 5 + 10


def test_padding_only_data_is_reported_for_acknowledgement() -> None:
    c = Client()
    c.request(1)
    assert c.send(fr.data_frame(1, b"", end_stream=True, pad=3)) == [
        DataReceived(1, b"", 4), StreamEnded(1)]


def test_stream_window_exceeded_is_a_stream_error() -> None:
    c = Client(H2Config(initial_window_size=65535))
    c.request(1)
    c.request(3)
    _fill(c, 1, 65535)
    c.send(fr.data_frame(1, b"x"))
    assert resets(c.frames()) == [(1, ErrorCode.FLOW_CONTROL_ERROR)]
    # The connection window got the refused byte back; stream 3 is unaffected.
    assert c.send(fr.data_frame(3, b"y")) == [DataReceived(3, b"y", 1)]


def test_connection_window_exceeded_is_a_connection_error() -> None:
    c = Client(H2Config(initial_window_size=65535, connection_window_size=65535))
    c.request(1)
    c.request(3)
    _fill(c, 1, 40000)
    _fill(c, 3, 25535)
    assert goaway_code(c.frames()) is None
    c.send(fr.data_frame(3, b"z"))
    assert goaway_code(c.frames()) == ErrorCode.FLOW_CONTROL_ERROR


def test_smaller_window_is_enforced_once_acked() -> None:
    c = Client(H2Config(initial_window_size=1000))
    c.request(1)
    _fill(c, 1, 5000)  # before the ACK the client may still use 65535
    assert resets(c.frames()) == []
    c.send(fr.settings_frame(ack=True))
    c.request(3)
    _fill(c, 3, 1000)
    assert resets(c.frames()) == []
    c.send(fr.data_frame(3, b"!"))
    assert resets(c.frames()) == [(3, ErrorCode.FLOW_CONTROL_ERROR)]


def test_acknowledged_data_reopens_windows_in_batches() -> None:
    c = Client(SMALL)
    c.request(1)
    _fill(c, 1, 65535)
    assert window_updates(c.frames()) == []
    c.conn.acknowledge_received_data(1, 30000)
    assert window_updates(c.frames()) == []  # below half the window: batched
    c.conn.acknowledge_received_data(1, 3000)
    assert sorted(window_updates(c.frames())) == [(0, 33000), (1, 33000)]
    _fill(c, 1, 33000)  # exactly what was reopened is accepted
    assert resets(c.frames()) == [] and goaway_code(c.frames()) is None


def test_acknowledging_more_than_received_is_refused() -> None:
    c = Client()
    c.request(1)
    c.send(fr.data_frame(1, b"abc"))
    with pytest.raises(LocalProtocolError):
        c.conn.acknowledge_received_data(1, 4)
    c.conn.acknowledge_received_data(1, 3)
    with pytest.raises(LocalProtocolError):
        c.conn.acknowledge_received_data(1, 1)


def test_data_after_end_stream_does_not_need_stream_updates() -> None:
    c = Client(SMALL)
    c.request(1)
    _fill(c, 1, 40000, end_stream=True)
    c.conn.acknowledge_received_data(1, 40000)
    assert window_updates(c.frames()) == [(0, 40000)]  # no update for a half-closed stream


def test_data_on_a_stream_we_reset_returns_connection_window() -> None:
    c = Client(SMALL)
    c.request(1)
    c.conn.reset_stream(1)
    c.frames()
    _fill(c, 1, 40000)  # in flight when we reset: ignored, but the window comes back
    assert window_updates(c.frames()) == [(0, 32768), ]
    c.request(3)
    _fill(c, 3, 65535 - 40000 + 32768)
    assert goaway_code(c.frames()) is None


def test_reset_stream_data_is_acknowledged_by_the_application_later() -> None:
    c = Client(SMALL)
    c.request(1)
    _fill(c, 1, 40000)
    c.send(fr.rst_stream_frame(1, ErrorCode.CANCEL))
    c.conn.acknowledge_received_data(1, 40000)  # the stream is gone; the connection is not
    assert window_updates(c.frames()) == [(0, 40000)]


def test_send_waits_for_stream_window_and_flushes_on_update() -> None:
    c = Client(settings=[(S.INITIAL_WINDOW_SIZE, 10)])
    c.request(1, end_stream=True)
    c.conn.send_headers(1, [(b":status", b"200")])
    c.conn.send_data(1, b"0123456789abcdefghijklmno", end_stream=True)
    out = data_frames(c.frames())
    assert [(f.data, "END_STREAM" in f.flags) for f in out] == [(b"0123456789", False)]
    assert c.conn.send_window(1) == 0 and c.conn.queued_bytes(1) == 15
    events = c.send(fr.window_update_frame(1, 5))
    assert events == [WindowUpdated(1, 5)]
    assert [f.data for f in data_frames(c.frames())] == [b"abcde"]
    c.send(fr.window_update_frame(1, 100))
    out = data_frames(c.frames())
    assert [(f.data, "END_STREAM" in f.flags) for f in out] == [(b"fghijklmno", True)]
    assert c.conn.open_streams == 0


def test_send_waits_for_connection_window_across_streams() -> None:
    c = Client(settings=[(S.INITIAL_WINDOW_SIZE, 1 << 20)])
    for sid in (1, 3):
        c.request(sid, end_stream=True)
        c.conn.send_headers(sid, [(b":status", b"200")])
    c.conn.send_data(1, bytes(60000), end_stream=True)
    c.conn.send_data(3, bytes(10000), end_stream=True)
    sent = {1: 0, 3: 0}
    for f in data_frames(c.frames()):
        sent[f.stream_id] += len(f.data)
    assert sent == {1: 60000, 3: 5535}
    c.send(fr.window_update_frame(0, 4465))
    out = data_frames(c.frames())
    assert sum(len(f.data) for f in out) == 4465 and "END_STREAM" in out[-1].flags


def test_trailers_wait_behind_queued_data() -> None:
    c = Client(settings=[(S.INITIAL_WINDOW_SIZE, 4)])
    c.request(1, end_stream=True)
    c.conn.send_headers(1, [(b":status", b"200")])
    c.conn.send_data(1, b"12345678")
    c.conn.send_trailers(1, [(b"grpc-status", b"0")])
    out = c.frames()
    assert [type(f).__name__ for f in out] == ["HeadersFrame", "DataFrame"]
    c.send(fr.window_update_frame(1, 4))
    out = c.frames()
    assert [type(f).__name__ for f in out] == ["DataFrame", "HeadersFrame"]
    assert "END_STREAM" in out[1].flags
    assert c.decode(out) == [(1, [(b"grpc-status", b"0")])]


def test_empty_end_stream_needs_no_window() -> None:
    c = Client(settings=[(S.INITIAL_WINDOW_SIZE, 0)])
    c.request(1, end_stream=True)
    c.conn.send_headers(1, [(b":status", b"200")])
    c.conn.send_data(1, b"", end_stream=True)
    out = data_frames(c.frames())
    assert [(f.data, "END_STREAM" in f.flags) for f in out] == [(b"", True)]


@pytest.mark.parametrize("stream_id", [0, 1])
def test_window_update_overflow(stream_id: int) -> None:
    c = Client()
    c.request(1)
    c.send(fr.window_update_frame(stream_id, (1 << 31) - 1 - 65535))
    assert c.frames() == []  # exactly 2^31-1 is fine
    c.send(fr.window_update_frame(stream_id, 1))
    out = c.frames()
    if stream_id == 0:
        assert goaway_code(out) == ErrorCode.FLOW_CONTROL_ERROR
    else:
        assert resets(out) == [(1, ErrorCode.FLOW_CONTROL_ERROR)]


def test_window_update_after_reset_does_not_resurrect_queued_data() -> None:
    c = Client(settings=[(S.INITIAL_WINDOW_SIZE, 1)])
    c.request(1, end_stream=True)
    c.conn.send_headers(1, [(b":status", b"200")])
    c.conn.send_data(1, b"abc", end_stream=True)
    c.frames()
    c.send(fr.rst_stream_frame(1, ErrorCode.CANCEL))
    c.send(fr.window_update_frame(1, 100), fr.window_update_frame(0, 100))
    assert data_frames(c.frames()) == []
