"""Hypothesis fuzzing of ``receive_data``: random frames, random bytes, mutated valid
conversations, arbitrary TCP segmentation.

Properties checked after every call:
* it returns a list of events and raises nothing (any exception fails the example);
* a ``ConnectionTerminated(remote=False)`` comes with a GOAWAY on the wire, and everything the
  server ever writes parses as HTTP/2 frames;
* memory the peer can make the connection hold stays within the configured bounds.
Failures print hypothesis' minimal example; ``--hypothesis-seed`` replays a run;
``KEELSON_FUZZ_EXAMPLES=N`` sets the number of examples per property (default 150).
"""

from __future__ import annotations

import os

from hyperframe.frame import GoAwayFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keelson.http2 import (
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    Event,
    H2Config,
    H2Connection,
    HeaderBlock,
    LocalProtocolError,
    RequestReceived,
    StreamEnded,
)
from keelson.http2 import _frames as fr
from tests.http2.wire import PREFACE, REQUEST, parse_frames

CONFIG = H2Config(
    max_concurrent_streams=8,
    max_header_block_size=8192,
    max_header_list_size=2048,
    reset_burst=20,
    reset_period_frames=200,
    max_unsent_bytes=32768,
    closed_streams_remembered=16,
    initial_window_size=65535,
    connection_window_size=1 << 17,
)
GRPC_OK = HeaderBlock.static(((b":status", b"200"), (b"content-type", b"application/grpc")))
# KEELSON_FUZZ_EXAMPLES=5000 for a longer run than the suite's default.
FUZZ = settings(
    max_examples=int(os.environ.get("KEELSON_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class Harness:
    """Feeds a server connection and plays a well-behaved application against it."""

    def __init__(self) -> None:
        self.conn = H2Connection(CONFIG)
        self.wire = bytearray(self.conn.data_to_send())
        self.terminated = False

    def feed(self, data: bytes, drain: bool = True) -> None:
        events = self.conn.receive_data(data)
        assert isinstance(events, list) and all(isinstance(e, Event) for e in events)
        self.check_bounds()
        for event in events:
            if isinstance(event, ConnectionTerminated) and not event.remote:
                assert not self.terminated, "terminated twice"
                self.terminated = True
            self.play(event)
        if drain or self.terminated:
            self.wire += self.conn.data_to_send()
        if self.terminated:
            frames = parse_frames(bytes(self.wire))
            assert any(isinstance(f, GoAwayFrame) for f in frames)

    def play(self, event: Event) -> None:
        """Answer like a gRPC handler; a closed stream or connection is an expected outcome."""
        try:
            if isinstance(event, DataReceived):
                self.conn.acknowledge_received_data(event.stream_id, event.flow_controlled_length)
            elif isinstance(event, RequestReceived):
                self.conn.send_headers(event.stream_id, GRPC_OK)
            elif isinstance(event, StreamEnded):
                self.conn.send_data(event.stream_id, b"\x00\x00\x00\x00\x03abc" * 20)
                self.conn.send_trailers(event.stream_id, [(b"grpc-status", b"0")])
        except LocalProtocolError:
            pass

    def check_bounds(self) -> None:
        conn = self.conn
        conn.check_invariants()
        assert conn._reader.buffered < fr.FRAME_HEADER_SIZE + CONFIG.max_frame_size
        assert len(conn._streams) <= CONFIG.max_concurrent_streams
        assert len(conn._closed) <= CONFIG.closed_streams_remembered
        assert conn._block is None or len(conn._block) <= CONFIG.max_header_block_size
        assert len(conn._out) <= CONFIG.max_unsent_bytes + 4 * CONFIG.max_frame_size
        assert set(conn._blocked) <= set(conn._streams)

    def finish(self) -> None:
        self.wire += self.conn.data_to_send()
        parse_frames(bytes(self.wire))


def handshake() -> bytes:
    return PREFACE + fr.settings_frame([(0x4, 1000)])


stream_ids = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 11, 13, 0x7FFFFFFF])
frame_types = st.integers(min_value=0, max_value=12)
flags = st.sampled_from([0, 1, 4, 5, 8, 0x20, 0x24, 0x2D, 0xFF])
random_frames = st.builds(
    lambda t, f, s, p: fr.frame(t, f, s, p), frame_types, flags, stream_ids,
    st.binary(max_size=64),
)


def _request_block(encoder: object, extra: int) -> bytes:
    from hpack import Encoder

    assert isinstance(encoder, Encoder)
    return encoder.encode([*REQUEST, (b"x-n", b"v" * extra)])


@st.composite
def conversations(draw: st.DrawFn) -> list[bytes]:
    """A plausible client conversation: requests, bodies, continuations, resets, control."""
    from hpack import Encoder

    encoder = Encoder()
    frames: list[bytes] = []
    sid = 1
    for _ in range(draw(st.integers(min_value=1, max_value=25))):
        kind = draw(st.sampled_from(
            ["req", "req_end", "cont", "data", "rst", "wu", "ping", "settings", "prio", "raw"]
        ))
        target = draw(st.sampled_from([sid, max(1, sid - 2), sid + 2]))
        if kind in ("req", "req_end"):
            block = _request_block(encoder, draw(st.integers(0, 3000)))
            frames.append(fr.headers_frame(sid, block, end_stream=kind == "req_end"))
            sid += 2
        elif kind == "cont":
            block = _request_block(encoder, draw(st.integers(0, 100)))
            cut = draw(st.integers(0, len(block)))
            frames.append(fr.headers_frame(sid, block[:cut], end_headers=False))
            frames.append(fr.continuation_frame(sid, block[cut:]))
            sid += 2
        elif kind == "data":
            size = draw(st.integers(0, 16384))
            pad = draw(st.sampled_from([-1, 0, 7]))
            data = bytes(size - (pad + 1 if pad >= 0 and size > pad else 0))
            frames.append(fr.data_frame(target, data, draw(st.booleans()), pad=pad))
        elif kind == "rst":
            frames.append(fr.rst_stream_frame(target, draw(st.sampled_from([0, 8, 0x99]))))
        elif kind == "wu":
            inc = draw(st.sampled_from([0, 1, 100, 1 << 20, (1 << 31) - 1]))
            frames.append(fr.window_update_frame(draw(st.sampled_from([0, target])), inc))
        elif kind == "ping":
            frames.append(fr.ping_frame(draw(st.binary(min_size=8, max_size=8))))
        elif kind == "settings":
            code = draw(st.integers(0, 10))
            value = draw(st.sampled_from([0, 1, 2, 100, 16384, 1 << 24, (1 << 31) - 1, 1 << 31]))
            frames.append(fr.settings_frame([(code, value)]))
        elif kind == "prio":
            frames.append(fr.priority_frame(target, draw(st.sampled_from([0, target, 1]))))
        else:
            frames.append(draw(random_frames))
    return frames


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A conversation with a few byte-level mutations applied."""
    wire = bytearray(b"".join(draw(conversations())))
    for _ in range(draw(st.integers(0, 4))):
        if not wire:
            break
        op = draw(st.sampled_from(["flip", "cut", "dup", "insert", "truncate"]))
        i = draw(st.integers(0, len(wire) - 1))
        if op == "flip":
            wire[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del wire[i : i + draw(st.integers(1, 20))]
        elif op == "dup":
            wire[i:i] = wire[i : i + draw(st.integers(1, 40))]
        elif op == "insert":
            wire[i:i] = draw(st.binary(min_size=1, max_size=12))
        else:
            del wire[i:]
    return bytes(wire)


def _segments(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@FUZZ
@given(frames=st.lists(random_frames, max_size=40), drain=st.booleans())
def test_random_frames(frames: list[bytes], drain: bool) -> None:
    h = Harness()
    h.feed(handshake())
    for frame in frames:
        h.feed(frame, drain=drain)
    h.finish()


@FUZZ
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 4000), max_size=10))
def test_random_bytes_after_and_instead_of_preface(data: bytes, cuts: list[int]) -> None:
    h = Harness()
    h.feed(handshake())
    for piece in _segments(data, cuts):
        h.feed(piece)
    h.finish()
    raw = H2Connection(CONFIG)
    events = raw.receive_data(data)
    assert all(isinstance(e, Event) for e in events)


@FUZZ
@given(frames=conversations(), cuts=st.lists(st.integers(0, 1 << 20), max_size=8))
def test_conversations(frames: list[bytes], cuts: list[int]) -> None:
    h = Harness()
    h.feed(handshake())
    for piece in _segments(b"".join(frames), cuts):
        h.feed(piece)
    h.finish()


@FUZZ
@given(wire=mutated(), drain=st.booleans())
def test_mutated_conversations(wire: bytes, drain: bool) -> None:
    h = Harness()
    h.feed(handshake())
    for i in range(0, len(wire), 997):
        h.feed(wire[i : i + 997], drain=drain)
    h.finish()


def test_stream_flood_stays_bounded() -> None:
    """Thousands of streams opened and abandoned: state stays within the configured bounds."""
    from hpack import Encoder

    h = Harness()
    h.feed(handshake())
    encoder = Encoder()
    for sid in range(1, 20001, 2):
        h.feed(fr.headers_frame(sid, encoder.encode(REQUEST)), drain=sid % 7 == 0)
        if h.terminated:
            break
    assert h.terminated  # refused streams exhaust the budget
    frames = parse_frames(bytes(h.wire))
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert goaways[-1].error_code == ErrorCode.ENHANCE_YOUR_CALM
