"""RFC 9113 frame rules, one scenario per row: what the client sends -> how the server reacts.

Each scenario starts after the handshake with stream 1 open (request headers received, no
END_STREAM) and names the bytes to send and the expected reaction:
``("conn", code)`` GOAWAY with that code; ``("stream", id, code)`` RST_STREAM on that stream
and the connection lives on; ``("ignored",)`` nothing at all is written back.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from keelson.http2 import ConnectionTerminated, ErrorCode, RequestReceived
from keelson.http2 import _frames as fr
from tests.http2.wire import REQUEST, Client, goaway_code, resets

E = ErrorCode
Script = Callable[[Client], bytes]


def _closed_stream(c: Client) -> bytes:
    """Finish stream 1 in both directions, then send DATA on it."""
    c.send(fr.data_frame(1, b"", end_stream=True))
    c.conn.send_headers(1, [(b":status", b"200")], end_stream=True)
    c.frames()
    return fr.data_frame(1, b"late")


def _half_closed_remote(c: Client) -> bytes:
    c.send(fr.data_frame(1, b"x", end_stream=True))
    return fr.data_frame(1, b"more")


def _reset_by_us(c: Client) -> bytes:
    c.conn.reset_stream(1, E.CANCEL)
    c.frames()
    return fr.data_frame(1, b"in flight") + c.headers(1, [(b"grpc-trailer", b"x")], end_stream=True)


def _headers_on_closed(c: Client) -> bytes:
    _closed_stream(c)
    return c.headers(1, end_stream=True)


def _decreasing_id(c: Client) -> bytes:
    c.send(c.headers(5))
    return c.headers(3)


SCENARIOS: dict[str, tuple[Script, tuple[object, ...]]] = {
    "DATA on stream 0": (lambda c: fr.data_frame(0, b"x"), ("conn", E.PROTOCOL_ERROR)),
    "DATA on idle stream": (lambda c: fr.data_frame(3, b"x"), ("conn", E.PROTOCOL_ERROR)),
    "DATA on even stream": (lambda c: fr.data_frame(2, b"x"), ("conn", E.PROTOCOL_ERROR)),
    "DATA padding too long": (
        lambda c: fr.frame(fr.DATA, fr.FLAG_PADDED, 1, bytes([5]) + b"abcd"),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "DATA padded without pad length": (
        lambda c: fr.frame(fr.DATA, fr.FLAG_PADDED, 1, b""),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "DATA on half-closed (remote)": (_half_closed_remote, ("stream", 1, E.STREAM_CLOSED)),
    "DATA on closed stream": (_closed_stream, ("stream", 1, E.STREAM_CLOSED)),
    "DATA and trailers on a stream we reset": (_reset_by_us, ("ignored",)),
    "HEADERS on stream 0": (lambda c: c.headers(0), ("conn", E.PROTOCOL_ERROR)),
    "HEADERS on even stream": (lambda c: c.headers(2), ("conn", E.PROTOCOL_ERROR)),
    "HEADERS with decreasing stream id": (_decreasing_id, ("conn", E.PROTOCOL_ERROR)),
    "HEADERS on closed stream": (_headers_on_closed, ("conn", E.STREAM_CLOSED)),
    "HEADERS depending on itself": (
        lambda c: c.headers(3, priority=(3, False, 16)),
        ("stream", 3, E.PROTOCOL_ERROR),
    ),
    "HEADERS padding too long": (
        lambda c: fr.frame(fr.HEADERS, fr.FLAG_PADDED | fr.FLAG_END_HEADERS, 3, b"\x09abc"),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "HEADERS with PRIORITY flag but no room": (
        lambda c: fr.frame(fr.HEADERS, fr.FLAG_PRIORITY | fr.FLAG_END_HEADERS, 3, b"\x00\x00"),
        ("conn", E.FRAME_SIZE_ERROR),
    ),
    "HEADERS on half-closed (remote)": (
        lambda c: _half_closed_remote(c) and c.headers(1, [(b"x", b"1")], end_stream=True),
        ("stream", 1, E.STREAM_CLOSED),
    ),
    "trailers depending on their own stream": (
        lambda c: c.headers(1, [(b"x", b"1")], end_stream=True, priority=(1, False, 1)),
        ("stream", 1, E.PROTOCOL_ERROR),
    ),
    "HEADERS frame above SETTINGS_MAX_FRAME_SIZE": (
        lambda c: fr.headers_frame(3, bytes(16384) * 4, end_headers=False),
        ("conn", E.FRAME_SIZE_ERROR),
    ),
    "trailers without END_STREAM": (
        lambda c: c.headers(1, [(b"x-trailer", b"1")]),
        ("stream", 1, E.PROTOCOL_ERROR),
    ),
    "trailers with a pseudo-header": (
        lambda c: c.headers(1, [(b":path", b"/")], end_stream=True),
        ("stream", 1, E.PROTOCOL_ERROR),
    ),
    "PRIORITY on stream 0": (lambda c: fr.priority_frame(0, 1), ("conn", E.PROTOCOL_ERROR)),
    "PRIORITY of length 4": (
        lambda c: fr.frame(fr.PRIORITY, 0, 1, b"\x00\x00\x00\x03"),
        ("stream", 1, E.FRAME_SIZE_ERROR),
    ),
    "PRIORITY depending on itself": (
        lambda c: fr.priority_frame(1, 1),
        ("stream", 1, E.PROTOCOL_ERROR),
    ),
    "PRIORITY on an open stream": (lambda c: fr.priority_frame(1, 0, 200), ("ignored",)),
    "PRIORITY on an idle stream": (lambda c: fr.priority_frame(9, 1, 7, True), ("ignored",)),
    "RST_STREAM on stream 0": (
        lambda c: fr.rst_stream_frame(0, E.CANCEL),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "RST_STREAM on idle stream": (
        lambda c: fr.rst_stream_frame(3, E.CANCEL),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "RST_STREAM of length 3": (
        lambda c: fr.frame(fr.RST_STREAM, 0, 1, b"\x00\x00\x08"),
        ("conn", E.FRAME_SIZE_ERROR),
    ),
    "SETTINGS on a stream": (
        lambda c: fr.frame(fr.SETTINGS, 0, 1, b""),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "SETTINGS of length 5": (
        lambda c: fr.frame(fr.SETTINGS, 0, 0, b"\x00\x04\x00\x00\x00"),
        ("conn", E.FRAME_SIZE_ERROR),
    ),
    "SETTINGS ACK with payload": (
        lambda c: fr.frame(fr.SETTINGS, fr.FLAG_ACK, 0, b"\x00\x04\x00\x00\x00\x01"),
        ("conn", E.FRAME_SIZE_ERROR),
    ),
    "PUSH_PROMISE from a client": (
        lambda c: fr.frame(fr.PUSH_PROMISE, fr.FLAG_END_HEADERS, 1, b"\x00\x00\x00\x02"),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "PING of length 7": (
        lambda c: fr.frame(fr.PING, 0, 0, b"1234567"),
        ("conn", E.FRAME_SIZE_ERROR),
    ),
    "PING on a stream": (
        lambda c: fr.frame(fr.PING, 0, 1, b"12345678"),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "GOAWAY on a stream": (
        lambda c: fr.frame(fr.GOAWAY, 0, 1, bytes(8)),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "GOAWAY of length 7": (
        lambda c: fr.frame(fr.GOAWAY, 0, 0, bytes(7)),
        ("conn", E.FRAME_SIZE_ERROR),
    ),
    "WINDOW_UPDATE of length 3": (
        lambda c: fr.frame(fr.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"),
        ("conn", E.FRAME_SIZE_ERROR),
    ),
    "WINDOW_UPDATE of 0 on the connection": (
        lambda c: fr.window_update_frame(0, 0),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "WINDOW_UPDATE of 0 on a stream": (
        lambda c: fr.window_update_frame(1, 0),
        ("stream", 1, E.PROTOCOL_ERROR),
    ),
    "WINDOW_UPDATE on idle stream": (
        lambda c: fr.window_update_frame(5, 10),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "WINDOW_UPDATE on a closed stream": (
        lambda c: _closed_stream(c) and fr.window_update_frame(1, 10),
        ("ignored",),
    ),
    "RST_STREAM on a closed stream": (
        lambda c: _closed_stream(c) and fr.rst_stream_frame(1, E.CANCEL),
        ("ignored",),
    ),
    "CONTINUATION without HEADERS": (
        lambda c: fr.continuation_frame(1, b""),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "PING inside a header block": (
        lambda c: fr.headers_frame(3, c.block(REQUEST), end_headers=False)
        + fr.ping_frame(bytes(8)),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "CONTINUATION on another stream": (
        lambda c: fr.headers_frame(3, c.block(REQUEST)[:5], end_headers=False)
        + fr.continuation_frame(5, c.block(REQUEST)[5:]),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "unknown frame inside a header block": (
        lambda c: fr.headers_frame(3, c.block(REQUEST), end_headers=False) + fr.frame(0x42, 0, 0),
        ("conn", E.PROTOCOL_ERROR),
    ),
    "unknown frame type": (lambda c: fr.frame(0x42, 0xFF, 1, b"whatever"), ("ignored",)),
    "frame above SETTINGS_MAX_FRAME_SIZE": (
        lambda c: fr.data_frame(1, bytes(16385)),
        ("conn", E.FRAME_SIZE_ERROR),
    ),
    "bad HPACK (index out of range)": (
        lambda c: fr.headers_frame(3, b"\xff\x7f"),
        ("conn", E.COMPRESSION_ERROR),
    ),
    "bad HPACK (table size above our setting)": (
        lambda c: fr.headers_frame(3, b"\x3f\xe1\x7f"),  # size update to 16384 > 4096
        ("conn", E.COMPRESSION_ERROR),
    ),
    "bad HPACK (truncated literal)": (
        lambda c: fr.headers_frame(3, b"\x00\x05ab"),
        ("conn", E.COMPRESSION_ERROR),
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_frame_rule(name: str) -> None:
    script, expected = SCENARIOS[name]
    c = Client()
    assert isinstance(c.request(1)[0], RequestReceived)
    events = c.send(script(c))
    out = c.frames()
    terminated = [e for e in events if isinstance(e, ConnectionTerminated)]
    if expected[0] == "conn":
        assert goaway_code(out) == expected[1]
        assert terminated and terminated[-1].error_code == expected[1]
        assert not terminated[-1].remote
        assert c.send(fr.ping_frame(bytes(8))) == []  # dead: input ignored from now on
    elif expected[0] == "stream":
        assert goaway_code(out) is None and not terminated
        assert resets(out) == [(expected[1], expected[2])]
        c.send(fr.ping_frame(b"stillok!"))  # the connection lives on
        assert [f.opaque_data for f in c.frames()] == [b"stillok!"]
    else:
        assert [f for f in out if type(f).__name__ != "WindowUpdateFrame"] == [], out
        assert not terminated
