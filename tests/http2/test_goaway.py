"""GOAWAY both ways: graceful drain, the two-step drain, connection errors, and the bound on
output a peer that never reads can make us queue."""

from __future__ import annotations

import pytest

from keelson.http2 import (
    ConnectionClosedError,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    H2Config,
    PingAck,
    PingReceived,
    RequestReceived,
)
from keelson.http2 import _frames as fr
from tests.http2.wire import Client, goaway, goaway_code


def test_graceful_drain_finishes_open_streams_and_ignores_new_ones() -> None:
    c = Client()
    c.request(1)
    c.request(3)
    c.conn.goaway()
    g = goaway(c.frames())
    assert g is not None and (g.last_stream_id, g.error_code) == (3, 0)
    assert not c.conn.drained
    assert c.request(5, end_stream=True) == []  # above last_stream_id: ignored, HPACK decoded
    assert c.send(fr.data_frame(5, b"x")) == []
    assert c.send(fr.data_frame(3, b"y", end_stream=True))[0] == DataReceived(3, b"y", 1)
    for sid in (1, 3):
        c.conn.send_headers(sid, [(b":status", b"200")])
        c.conn.send_trailers(sid, [(b"grpc-status", b"0")])
    c.send(fr.data_frame(1, b"", end_stream=True))
    assert c.conn.drained
    c.frames()
    c.send(fr.ping_frame(b"12345678"))  # still a working connection until closed
    assert len(c.frames()) == 1


def test_two_step_drain_only_lowers_last_stream_id() -> None:
    c = Client()
    c.request(1)
    c.conn.goaway(last_stream_id=(1 << 31) - 1)
    assert isinstance(c.request(3)[0], RequestReceived)  # still accepted
    c.conn.ping(b"drain-01")
    c.conn.goaway()
    c.conn.goaway(last_stream_id=99)  # may not raise it again
    ids = [f.last_stream_id for f in c.frames() if type(f).__name__ == "GoAwayFrame"]
    assert ids == [(1 << 31) - 1, 3, 3]
    assert c.send(fr.ping_frame(b"drain-01", ack=True)) == [PingAck(b"drain-01")]


def test_goaway_with_error_ends_the_connection() -> None:
    c = Client()
    c.request(1)
    c.conn.goaway(ErrorCode.INTERNAL_ERROR, debug=b"shutting down")
    assert goaway_code(c.frames()) == ErrorCode.INTERNAL_ERROR
    assert c.conn.terminated and c.conn.drained
    assert c.request(3) == []
    with pytest.raises(ConnectionClosedError):
        c.conn.send_headers(1, [(b":status", b"200")])


def test_client_goaway_is_reported_and_streams_continue() -> None:
    c = Client()
    c.request(1)
    events = c.send(fr.goaway_frame(0, ErrorCode.NO_ERROR, b"bye"))
    assert events == [ConnectionTerminated(ErrorCode.NO_ERROR, 0, b"bye", remote=True)]
    c.conn.send_headers(1, [(b":status", b"200")], end_stream=True)
    assert len(c.frames()) == 1


def test_connection_error_reports_last_processed_stream() -> None:
    c = Client()
    c.request(1)
    c.request(3)
    events = c.send(fr.ping_frame(b"short"))
    assert events == [ConnectionTerminated(ErrorCode.FRAME_SIZE_ERROR, 3,
                                           b"PING length is not 8", remote=False)]
    g = goaway(c.frames())
    assert g is not None and g.last_stream_id == 3
    with pytest.raises(ConnectionClosedError):
        c.conn.send_data(1, b"x")
    with pytest.raises(ConnectionClosedError):
        c.conn.ping(b"12345678")
    c.conn.acknowledge_received_data(1, 0)  # harmless after the end


def test_ping_is_answered_with_the_same_payload() -> None:
    c = Client()
    assert c.send(fr.ping_frame(b"\x00\x01\x02\x03\x04\x05\x06\x07")) == [
        PingReceived(b"\x00\x01\x02\x03\x04\x05\x06\x07")]
    (ack,) = c.frames()
    assert "ACK" in ack.flags and ack.opaque_data == b"\x00\x01\x02\x03\x04\x05\x06\x07"


def test_peer_that_never_reads_cannot_grow_our_output() -> None:
    c = Client(H2Config(max_unsent_bytes=10_000))
    events = c.send(fr.ping_frame(bytes(8)) * 10_000)  # 170 kB of PING ACKs owed
    assert isinstance(events[-1], ConnectionTerminated)
    assert events[-1].error_code == ErrorCode.ENHANCE_YOUR_CALM
    assert len(c.conn.data_to_send()) < 10_000 + 100


def test_application_output_does_not_count_as_peer_induced() -> None:
    """A large response waiting in the output buffer is not the peer's doing."""
    c = Client(H2Config(max_unsent_bytes=10_000), settings=[(0x4, 1 << 20)])
    c.send(fr.window_update_frame(0, 1 << 20))
    c.frames()
    c.request(1, end_stream=True)
    c.conn.send_headers(1, [(b":status", b"200")])
    c.conn.send_data(1, bytes(500_000))  # not drained yet
    assert c.send(fr.ping_frame(bytes(8))) == [PingReceived(bytes(8))]
    assert goaway_code(c.frames()) is None
