"""Test support for keelson.http2: a scripted client speaking raw frames to an H2Connection.

``Client`` owns its own HPACK encoder/decoder (so header blocks it builds stay in sync with
the server's tables across a test) and parses everything the server writes with
``hyperframe`` — an implementation independent of keelson's own ``_frames``.
"""

from __future__ import annotations

from collections.abc import Sequence

from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    WindowUpdateFrame,
)

from keelson.http2 import ErrorCode, Event, H2Config, H2Connection
from keelson.http2 import _frames as fr

PREFACE = fr.CONNECTION_PREFACE

REQUEST: tuple[tuple[bytes, bytes], ...] = (
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/etcdserverpb.KV/Put"),
    (b":authority", b"127.0.0.1:2379"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
)


def parse_frames(data: bytes) -> list[Frame]:
    """Cut server output into hyperframe frames (fails the test on a malformed frame)."""
    frames = []
    view = memoryview(data)
    offset = 0
    while offset < len(data):
        frame, length = Frame.parse_frame_header(view[offset : offset + 9])
        frame.parse_body(view[offset + 9 : offset + 9 + length])
        assert offset + 9 + length <= len(data), "truncated frame in server output"
        frames.append(frame)
        offset += 9 + length
    return frames


class Client:
    """A raw-frame HTTP/2 client driving one server H2Connection in memory."""

    def __init__(
        self,
        config: H2Config | None = None,
        settings: Sequence[tuple[int, int]] = (),
        handshake: bool = True,
    ) -> None:
        self.conn = H2Connection(config)
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.server_preface = parse_frames(self.conn.data_to_send())
        if handshake:
            events = self.send(PREFACE + fr.settings_frame(list(settings)))
            assert all(type(e).__name__ == "RemoteSettingsChanged" for e in events), events
            self.frames()  # drop the SETTINGS ACK

    def send(self, *data: bytes) -> list[Event]:
        """Deliver bytes (frames) to the server; return its events."""
        return self.conn.receive_data(b"".join(data))

    def block(self, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
        """HPACK-encode a header list with this client's (stateful) encoder."""
        return self.encoder.encode(list(headers))

    def headers(
        self,
        stream_id: int,
        headers: Sequence[tuple[bytes, bytes]] = REQUEST,
        end_stream: bool = False,
        **kwargs: object,
    ) -> bytes:
        """A complete HEADERS frame for ``headers``."""
        return fr.headers_frame(stream_id, self.block(headers), end_stream=end_stream, **kwargs)  # type: ignore[arg-type]

    def request(self, stream_id: int, end_stream: bool = False) -> list[Event]:
        return self.send(self.headers(stream_id, end_stream=end_stream))

    def frames(self) -> list[Frame]:
        """Everything the server queued since the last call, parsed."""
        return parse_frames(self.conn.data_to_send())

    def decode(self, frames: list[Frame]) -> list[tuple[int, list[tuple[bytes, bytes]]]]:
        """Decode the header blocks in ``frames`` (HEADERS + CONTINUATION) in order."""
        blocks: list[tuple[int, list[tuple[bytes, bytes]]]] = []
        pending = b""
        for f in frames:
            if isinstance(f, HeadersFrame | ContinuationFrame):
                pending += f.data
                if "END_HEADERS" in f.flags:
                    blocks.append((f.stream_id, list(self.decoder.decode(pending, raw=True))))
                    pending = b""
        return blocks


def goaway(frames: list[Frame]) -> GoAwayFrame | None:
    found = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert len(found) <= 1
    return found[0] if found else None


def goaway_code(frames: list[Frame]) -> ErrorCode | None:
    g = goaway(frames)
    return None if g is None else ErrorCode(g.error_code)


def resets(frames: list[Frame]) -> list[tuple[int, ErrorCode]]:
    return [(f.stream_id, ErrorCode(f.error_code)) for f in frames if isinstance(f, RstStreamFrame)]


def data_frames(frames: list[Frame]) -> list[DataFrame]:
    return [f for f in frames if isinstance(f, DataFrame)]


def window_updates(frames: list[Frame]) -> list[tuple[int, int]]:
    return [(f.stream_id, f.window_increment) for f in frames if isinstance(f, WindowUpdateFrame)]
