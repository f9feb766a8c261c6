"""Connection preface and SETTINGS: the server preface, the client preface (split, wrong,
HTTP/1.1), value validation, ACKs both ways, and settings changing what we send."""

from __future__ import annotations

import pytest
from hyperframe.frame import DataFrame, HeadersFrame, SettingsFrame, WindowUpdateFrame

from keelson.http2 import (
    ConnectionTerminated,
    ErrorCode,
    H2Config,
    H2Connection,
    HeaderBlock,
    RemoteSettingsChanged,
    SettingCode,
    SettingsAcknowledged,
)
from keelson.http2 import _frames as fr
from tests.http2.wire import PREFACE, Client, data_frames, goaway_code, parse_frames

S = SettingCode


def test_server_preface_advertises_limits_and_opens_connection_window() -> None:
    conn = H2Connection(H2Config(max_concurrent_streams=7, initial_window_size=1000,
                                 connection_window_size=1 << 20, max_frame_size=1 << 15))
    settings, update = parse_frames(conn.data_to_send())
    assert isinstance(settings, SettingsFrame) and isinstance(update, WindowUpdateFrame)
    assert settings.settings == {S.ENABLE_PUSH: 0, S.MAX_CONCURRENT_STREAMS: 7,
                                 S.INITIAL_WINDOW_SIZE: 1000, S.MAX_FRAME_SIZE: 1 << 15,
                                 S.MAX_HEADER_LIST_SIZE: 16 << 10}
    assert (update.stream_id, update.window_increment) == (0, (1 << 20) - 65535)


def test_preface_byte_by_byte() -> None:
    conn = H2Connection()
    conn.data_to_send()
    wire = PREFACE + fr.settings_frame([(S.MAX_FRAME_SIZE, 1 << 15)])
    events = []
    for i in range(len(wire)):
        events += conn.receive_data(wire[i : i + 1])
    assert events == [RemoteSettingsChanged(((S.MAX_FRAME_SIZE, 1 << 14, 1 << 15),))]
    assert [type(f) for f in parse_frames(conn.data_to_send())] == [SettingsFrame]


def test_http1_request_gets_a_readable_refusal() -> None:
    conn = H2Connection()
    conn.data_to_send()
    events = conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert events == [ConnectionTerminated(ErrorCode.PROTOCOL_ERROR, 0,
                                           b"invalid connection preface", remote=False)]
    assert conn.data_to_send().startswith(b"HTTP/1.1 505 ")
    assert conn.receive_data(PREFACE) == []


@pytest.mark.parametrize(
    "garbage", [b"\x16\x03\x01\x02\x00", b"PRI * HTTP/2.0\r\n\r\nXY\r\n\r\n", b"\x00" * 30]
)
def test_garbage_preface_gets_goaway(garbage: bytes) -> None:
    conn = H2Connection()
    conn.data_to_send()
    events = conn.receive_data(garbage)
    assert isinstance(events[0], ConnectionTerminated)
    assert goaway_code(parse_frames(conn.data_to_send())) == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize("first", [fr.ping_frame(bytes(8)), fr.settings_frame(ack=True),
                                   fr.window_update_frame(0, 1)])
def test_preface_must_end_in_settings(first: bytes) -> None:
    c = Client(handshake=False)
    c.send(PREFACE + first)
    assert goaway_code(c.frames()) == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("setting", "value", "code"),
    [
        (S.ENABLE_PUSH, 2, ErrorCode.PROTOCOL_ERROR),
        (S.INITIAL_WINDOW_SIZE, 1 << 31, ErrorCode.FLOW_CONTROL_ERROR),
        (S.MAX_FRAME_SIZE, (1 << 14) - 1, ErrorCode.PROTOCOL_ERROR),
        (S.MAX_FRAME_SIZE, 1 << 24, ErrorCode.PROTOCOL_ERROR),
        (S.ENABLE_CONNECT_PROTOCOL, 2, ErrorCode.PROTOCOL_ERROR),
        (S.NO_RFC7540_PRIORITIES, 7, ErrorCode.PROTOCOL_ERROR),
    ],
)
def test_invalid_setting_values(setting: int, value: int, code: ErrorCode) -> None:
    c = Client()
    c.send(fr.settings_frame([(setting, value)]))
    assert goaway_code(c.frames()) == code
    # The refused frame changed nothing.
    assert c.conn.remote_setting(setting) != value


@pytest.mark.parametrize(
    ("setting", "value"),
    [(S.ENABLE_PUSH, 1), (S.INITIAL_WINDOW_SIZE, (1 << 31) - 1), (S.MAX_FRAME_SIZE, (1 << 24) - 1),
     (S.MAX_FRAME_SIZE, 1 << 14), (0x99, 12345), (0xFFFF, 0)],
)
def test_valid_and_unknown_settings_are_acked(setting: int, value: int) -> None:
    c = Client()
    events = c.send(fr.settings_frame([(setting, value)]))
    out = c.frames()
    assert len(out) == 1 and isinstance(out[0], SettingsFrame) and "ACK" in out[0].flags
    if setting in list(S):
        assert c.conn.remote_setting(setting) == value
    else:
        assert events == []


def test_our_settings_ack_is_reported_once() -> None:
    c = Client()
    events = c.send(fr.settings_frame(ack=True))
    assert events == [SettingsAcknowledged(((S.ENABLE_PUSH, 0), (S.MAX_CONCURRENT_STREAMS, 100),
                                            (S.INITIAL_WINDOW_SIZE, 1 << 20),
                                            (S.MAX_HEADER_LIST_SIZE, 16 << 10)))]
    assert c.send(fr.settings_frame(ack=True)) == []  # nothing pending: ignored
    assert c.frames() == []


def test_peer_max_frame_size_bounds_our_data_frames() -> None:
    c = Client(settings=[(S.INITIAL_WINDOW_SIZE, 1 << 20)])
    c.send(fr.window_update_frame(0, 1 << 20))
    c.request(1, end_stream=True)
    c.conn.send_headers(1, [(b":status", b"200")])
    c.conn.send_data(1, bytes(40000))
    sizes = [len(f.data) for f in data_frames(c.frames())]
    assert sizes == [16384, 16384, 7232]
    c.send(fr.settings_frame([(S.MAX_FRAME_SIZE, 1 << 15)]))
    c.frames()
    c.conn.send_data(1, bytes(40000), end_stream=True)
    sizes = [len(f.data) for f in data_frames(c.frames())]
    assert sizes == [32768, 7232]


def test_big_header_block_is_split_into_continuations() -> None:
    c = Client()
    c.request(1, end_stream=True)
    big = [(b":status", b"200")] + [(b"x-meta-%d" % i, b"v" * 1000) for i in range(40)]
    c.conn.send_headers(1, big, end_stream=True)
    out = c.frames()
    assert [type(f).__name__ for f in out][:2] == ["HeadersFrame", "ContinuationFrame"]
    assert all(len(f.data) <= 16384 for f in out)
    assert c.decode(out) == [(1, big)]


def test_peer_header_table_size_change_is_signalled_before_any_block() -> None:
    """The size update must lead the next block, cached blocks included (RFC 7541 4.2)."""
    c = Client()
    cached = HeaderBlock.static(((b":status", b"200"), (b"content-type", b"application/grpc")))
    c.request(1, end_stream=True)
    c.conn.send_headers(1, [(b":status", b"200"), (b"x-long-lived", b"abc")], end_stream=True)
    c.decode(c.frames())  # the client's decoder now has a dynamic entry
    c.send(fr.settings_frame([(S.HEADER_TABLE_SIZE, 0)]))
    c.decoder.max_allowed_table_size = 0
    c.frames()
    c.request(3, end_stream=True)
    c.conn.send_headers(3, cached, end_stream=True)
    out = c.frames()
    block = b"".join(f.data for f in out if isinstance(f, HeadersFrame))
    assert block[0] & 0xE0 == 0x20 and block[1:] == cached.block  # size update, then cache
    assert c.decode(out) == [(3, list(cached.headers))]
    c.request(5, end_stream=True)
    c.conn.send_headers(5, cached, end_stream=True)
    out = c.frames()
    assert b"".join(f.data for f in out if isinstance(f, HeadersFrame)) == cached.block


def test_settings_initial_window_change_applies_to_open_streams() -> None:
    c = Client(settings=[(S.INITIAL_WINDOW_SIZE, 100)])
    c.request(1)
    c.conn.send_headers(1, [(b":status", b"200")])
    c.frames()
    c.conn.send_data(1, bytes(300))
    assert [len(f.data) for f in data_frames(c.frames())] == [100]
    # Lowering makes the window negative (-50): nothing flows even after +30.
    c.send(fr.settings_frame([(S.INITIAL_WINDOW_SIZE, 50)]), fr.window_update_frame(1, 30))
    assert data_frames(c.frames()) == []
    # Raising to 250 shifts the window by +200: 180 bytes may go now.
    c.send(fr.settings_frame([(S.INITIAL_WINDOW_SIZE, 250)]))
    assert [len(f.data) for f in data_frames(c.frames())] == [180]
    assert c.conn.queued_bytes(1) == 20


def test_settings_initial_window_overflow_is_flow_control_error() -> None:
    c = Client()
    c.request(1)
    c.send(fr.window_update_frame(1, (1 << 31) - 1 - 65535))  # stream window at the max
    c.send(fr.settings_frame([(S.INITIAL_WINDOW_SIZE, 65536)]))
    assert goaway_code(c.frames()) == ErrorCode.FLOW_CONTROL_ERROR


def test_data_frames_are_hyperframe_parseable_with_end_stream() -> None:
    c = Client()
    c.request(1, end_stream=True)
    c.conn.send_headers(1, [(b":status", b"200")])
    c.conn.send_data(1, b"abc", end_stream=True)
    out = c.frames()
    assert isinstance(out[-1], DataFrame) and "END_STREAM" in out[-1].flags
    assert c.conn.open_streams == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"max_frame_size": 1000}, {"max_frame_size": 1 << 24}, {"initial_window_size": 1 << 31},
     {"connection_window_size": 1000}, {"max_concurrent_streams": -1},
     {"reset_period_frames": 0}],
)
def test_config_values_the_rfc_forbids_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        H2Config(**kwargs)  # type: ignore[arg-type]
