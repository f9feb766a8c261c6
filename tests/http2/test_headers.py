"""Request header validation (RFC 9113 section 8), CONTINUATION sequences, header-size
limits, and the state-free cached header blocks."""

from __future__ import annotations

import pytest
from hpack import Decoder, Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from keelson.http2 import ErrorCode, H2Config, HeaderBlock, RequestReceived, StreamEnded
from keelson.http2 import _frames as fr
from keelson.http2._headers import encode_static_only
from tests.http2.wire import REQUEST, Client, goaway_code, resets

BASE = dict(REQUEST)


def _with(**changes: bytes | None) -> list[tuple[bytes, bytes]]:
    headers = dict(BASE)
    for key, value in changes.items():
        name = key.replace("_", "-").encode()
        name = b":" + name[1:] if key.startswith("P") else name
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return list(headers.items())


MALFORMED: dict[str, list[tuple[bytes, bytes]]] = {
    "missing :method": _with(Pmethod=None),
    "missing :scheme": _with(Pscheme=None),
    "missing :path": _with(Ppath=None),
    "empty :path": _with(Ppath=b""),
    "response pseudo-header": [(b":status", b"200"), *REQUEST],
    "unknown pseudo-header": [*REQUEST[:4], (b":protocol", b"websocket"), *REQUEST[4:]],
    "repeated pseudo-header": [*REQUEST[:4], (b":path", b"/other"), *REQUEST[4:]],
    "pseudo after regular": [*REQUEST[1:], REQUEST[0]],
    "uppercase name": [*REQUEST, (b"X-Token", b"abc")],
    "space in name": [*REQUEST, (b"x token", b"abc")],
    "colon inside name": [*REQUEST, (b"x:token", b"abc")],
    "empty name": [*REQUEST, (b"", b"abc")],
    "newline in value": [*REQUEST, (b"x-token", b"a\nb")],
    "NUL in value": [*REQUEST, (b"x-token", b"a\x00b")],
    "leading space in value": [*REQUEST, (b"x-token", b" abc")],
    "connection header": [*REQUEST, (b"connection", b"keep-alive")],
    "keep-alive header": [*REQUEST, (b"keep-alive", b"5")],
    "transfer-encoding header": [*REQUEST, (b"transfer-encoding", b"chunked")],
    "upgrade header": [*REQUEST, (b"upgrade", b"h2c")],
    "te other than trailers": _with(te=b"gzip"),
    "bad content-length": [*REQUEST, (b"content-length", b"12a")],
    "CONNECT with :path": _with(Pmethod=b"CONNECT"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_is_a_stream_error(name: str) -> None:
    c = Client()
    events = c.send(c.headers(1, MALFORMED[name]))
    assert events == []
    out = c.frames()
    assert resets(out) == [(1, ErrorCode.PROTOCOL_ERROR)] and goaway_code(out) is None


@pytest.mark.parametrize(
    "headers",
    [
        list(REQUEST),
        [(b":method", b"CONNECT"), (b":authority", b"example.com:443")],
        [*REQUEST, (b"grpc-timeout", b"5S"), (b"token", b"abc"), (b"x-bin", b"\x80\xff")],
        [*REQUEST, (b"user-agent", b"grpc-go/1.60"), (b"x-empty", b"")],
    ],
)
def test_valid_requests_are_delivered_verbatim(headers: list[tuple[bytes, bytes]]) -> None:
    c = Client()
    assert c.send(c.headers(1, headers)) == [RequestReceived(1, tuple(headers))]


def test_content_length_is_checked_against_the_body() -> None:
    c = Client()
    c.send(c.headers(1, [*REQUEST, (b"content-length", b"3")]))
    c.send(fr.data_frame(1, b"abcd"))
    assert resets(c.frames()) == [(1, ErrorCode.PROTOCOL_ERROR)]
    c.send(c.headers(3, [*REQUEST, (b"content-length", b"3")]))
    c.send(fr.data_frame(3, b"ab", end_stream=True))
    assert resets(c.frames()) == [(3, ErrorCode.PROTOCOL_ERROR)]
    c.send(c.headers(5, [*REQUEST, (b"content-length", b"3")]))
    assert c.send(fr.data_frame(5, b"abc", end_stream=True))[-1] == StreamEnded(5)
    assert c.send(c.headers(7, [*REQUEST, (b"content-length", b"3")], end_stream=True)) == []
    assert resets(c.frames()) == [(7, ErrorCode.PROTOCOL_ERROR)]
    c.send(c.headers(9, [*REQUEST, (b"content-length", b"3")]), fr.data_frame(9, b"ab"))
    c.send(c.headers(9, [(b"x-trailer", b"1")], end_stream=True))
    assert resets(c.frames()) == [(9, ErrorCode.PROTOCOL_ERROR)]


def test_header_block_above_the_cap_before_continuation() -> None:
    c = Client(H2Config(max_header_block_size=100, max_frame_size=1 << 15))
    c.send(fr.settings_frame(ack=True))
    c.send(fr.headers_frame(1, bytes(200), end_headers=False))
    assert goaway_code(c.frames()) == ErrorCode.ENHANCE_YOUR_CALM


@pytest.mark.parametrize("pieces", [2, 3, 17])
def test_continuation_sequence_reassembles(pieces: int) -> None:
    c = Client()
    headers = [*REQUEST, (b"x-big", b"v" * 300)]
    block = c.block(headers)
    cut = [block[i * len(block) // pieces : (i + 1) * len(block) // pieces] for i in range(pieces)]
    wire = fr.headers_frame(1, cut[0], end_stream=True, end_headers=False, pad=4,
                            priority=(0, False, 16))
    wire += b"".join(fr.continuation_frame(1, p, end_headers=False) for p in cut[1:-1])
    wire += fr.continuation_frame(1, cut[-1])
    events = []
    for i in range(0, len(wire), 7):  # and in small TCP segments
        events += c.send(wire[i : i + 7])
    assert events == [RequestReceived(1, tuple(headers)), StreamEnded(1)]


def test_empty_continuation_flood_is_bounded() -> None:
    c = Client(H2Config(max_header_block_size=1000))
    c.send(fr.headers_frame(1, c.block(REQUEST)[:3], end_headers=False))
    c.send(fr.continuation_frame(1, b"", end_headers=False) * 500)  # count: test_floods.py
    assert c.conn._block is not None and len(c.conn._block) == 3
    c.send(fr.continuation_frame(1, b"x" * 1000, end_headers=False))
    assert goaway_code(c.frames()) == ErrorCode.ENHANCE_YOUR_CALM


def test_hpack_bomb_is_cut_off() -> None:
    """One literal added to the table, then indexed thousands of times: tiny block, huge list."""
    c = Client(H2Config(max_header_block_size=64 << 10))
    big = c.block([*REQUEST, (b"x-bomb", b"b" * 4000)])
    c.send(fr.headers_frame(1, big, end_stream=True))
    c.frames()
    bomb = c.block(REQUEST) + b"\xbe" * 4000  # index 62: the newest dynamic entry
    assert len(bomb) < 16384
    c.send(fr.headers_frame(3, bomb, end_stream=True))
    assert goaway_code(c.frames()) == ErrorCode.ENHANCE_YOUR_CALM


def test_header_list_above_advertised_size_gets_431() -> None:
    c = Client(H2Config(max_header_list_size=1000))
    events = c.send(c.headers(1, [*REQUEST, (b"x-big", b"v" * 2000)]))
    assert events == []
    out = c.frames()
    assert c.decode(out) == [(1, [(b":status", b"431")])]
    assert resets(out) == [(1, ErrorCode.NO_ERROR)]
    assert c.send(c.headers(3, REQUEST, end_stream=True))[0] == RequestReceived(3, REQUEST)


# ------------------------------------------------------------------ cached header blocks

GRPC_OK = HeaderBlock.static(((b":status", b"200"), (b"content-type", b"application/grpc")))


def test_cached_grpc_response_block_bytes() -> None:
    # :status 200 is static index 8; content-type is static name 31 -> literal w/o indexing.
    assert GRPC_OK.block == b"\x88\x0f\x10\x10application/grpc"


def test_cached_block_with_long_values_and_custom_table_size() -> None:
    long = HeaderBlock.static(((b":status", b"200"), (b"x-" + b"n" * 200, b"v" * 7000)))
    c = Client(H2Config(header_table_size=8192))
    assert c.server_preface[0].settings[0x1] == 8192
    c.request(1, end_stream=True)
    c.conn.send_headers(1, long, end_stream=True)
    assert c.decode(c.frames()) == [(1, list(long.headers))]


def test_invalid_cached_blocks_are_refused() -> None:
    with pytest.raises(ValueError):
        HeaderBlock.static(((b"content-type", b"x"),))  # no :status
    with pytest.raises(ValueError):
        HeaderBlock.static(((b"grpc-status", b"0"), (b":status", b"200")), trailers=True)


fields = st.tuples(
    st.sampled_from([b"content-type", b"grpc-status", b"grpc-message", b"x-custom",
                     b":status", b"accept-encoding", b"www-authenticate"]),
    st.binary(max_size=200),
)


@settings(max_examples=200, deadline=None)
@given(prior=st.lists(fields, max_size=8), headers=st.lists(fields, max_size=8))
def test_static_blocks_decode_the_same_whatever_the_dynamic_table(
    prior: list[tuple[bytes, bytes]], headers: list[tuple[bytes, bytes]]
) -> None:
    """The proof in _headers, checked: any prior table state; the block leaves it unchanged."""
    encoder, decoder = Encoder(), Decoder()
    decoder.decode(encoder.encode(prior), raw=True)  # arbitrary dynamic-table contents
    before = list(decoder.header_table.dynamic_entries)
    block = encode_static_only(tuple(headers))
    assert [tuple(h) for h in decoder.decode(block, raw=True)] == headers
    assert list(decoder.header_table.dynamic_entries) == before
    fresh = Decoder()
    assert [tuple(h) for h in fresh.decode(block, raw=True)] == headers
    assert len(fresh.header_table.dynamic_entries) == 0


def test_cached_and_encoded_blocks_interleave_on_one_connection() -> None:
    c = Client()
    for sid in range(1, 40, 2):
        c.request(sid, end_stream=True)
        if sid % 3:
            c.conn.send_headers(sid, GRPC_OK)
        else:
            c.conn.send_headers(sid, [(b":status", b"200"), (b"x-n", str(sid).encode())])
        c.conn.send_trailers(sid, [(b"grpc-status", b"0"), (b"grpc-message", b"m%d" % sid)])
    decoded = c.decode(c.frames())
    assert len(decoded) == 40
    assert all(h == list(GRPC_OK.headers) for sid, h in decoded[0::2] if sid % 3)
