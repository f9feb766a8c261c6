"""What we write, in wire order: the output buffer, the HPACK encoder, the connection send
window and the framing of header blocks and DATA.

``H2Connection`` (``_send``, ``_receive``) decides *what* may be sent (stream states, API
rules); this module turns it into frames, and it is the only place that appends
HEADERS/CONTINUATION/DATA to the buffer.

Invariants:
* HPACK blocks are encoded at the moment they are appended to ``buffer``, so the encoder's
  dynamic table evolves in exactly the order the peer decodes (trailers waiting behind
  DATA stay a header list until they are flushed).
* A cached ``HeaderBlock`` is written only after the encoder has emitted any pending dynamic
  table size update (RFC 7541 section 4.2; proof of reuse safety in ``_headers``).
* DATA never exceeds min(connection window, stream window, the peer's max frame size).
* ``control_unsent`` counts the bytes in ``buffer`` that answer the peer (ACKs, resets,
  window updates); ``take()`` resets it. The application's own output is not counted.
"""

from __future__ import annotations

import enum
from typing import cast

from hpack import Encoder

from keelson.http2 import _frames as fr
from keelson.http2._events import Headers
from keelson.http2._flow import OutboundWindow
from keelson.http2._headers import HeaderBlock
from keelson.http2._settings import DEFAULTS, SettingCode
from keelson.http2._stream import Stream

ENCODER_TABLE_CAP = 4096  # we never use a bigger dynamic table for our responses


class Flushed(enum.Enum):
    """What ``Output.flush`` achieved for a stream."""

    BLOCKED = "blocked"  # DATA left waiting for a window
    DRAINED = "drained"  # nothing queued, stream not ended
    ENDED = "ended"  # the END_STREAM frame went out


class Output:
    """The connection's outbound side (see module docstring)."""

    __slots__ = ("buffer", "control_unsent", "encoder", "window", "max_frame_size",
                 "_size_update")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.control_unsent = 0
        self.encoder = Encoder()
        self.window = OutboundWindow(DEFAULTS[SettingCode.INITIAL_WINDOW_SIZE])
        self.max_frame_size = DEFAULTS[SettingCode.MAX_FRAME_SIZE]
        self._size_update = False  # the encoder owes the peer a dynamic table size update

    def take(self) -> bytes:
        """Everything written since the last call."""
        out = bytes(self.buffer)
        self.buffer.clear()
        self.control_unsent = 0
        return out

    def control(self, frame: bytes) -> None:
        """Write a frame answering the peer (metered in ``control_unsent``)."""
        self.buffer += frame
        self.control_unsent += len(frame)

    def peer_table_size(self, size: int) -> None:
        """The peer changed SETTINGS_HEADER_TABLE_SIZE: resize our encoder's table (capped)."""
        new = min(size, ENCODER_TABLE_CAP)
        if new != self.encoder.header_table_size:
            self.encoder.header_table_size = new
            self._size_update = True

    def encode(self, headers: Headers | HeaderBlock) -> bytes:
        """HPACK-encode now (the caller writes the result next, keeping wire order)."""
        if isinstance(headers, HeaderBlock):
            if self._size_update:
                self._size_update = False
                return self.encoder.encode(()) + headers.block
            return headers.block
        self._size_update = False
        return self.encoder.encode(headers)

    def header_block(self, stream_id: int, headers: Headers | HeaderBlock, end_stream: bool,
                     control: bool = False) -> None:
        """Encode and write HEADERS (+ CONTINUATION as the peer's frame size requires)."""
        frames = fr.header_block_frames(
            stream_id, self.encode(headers), end_stream, self.max_frame_size
        )
        if control:
            self.control(frames)
        else:
            self.buffer += frames

    def flush(self, stream: Stream) -> Flushed:
        """Write the stream's queued DATA as far as the windows allow, then its end.

        The caller makes sure the stream may still send (open or half-closed remote).
        """
        sid = stream.stream_id
        queue = stream.queue
        max_frame = self.max_frame_size
        window = self.window
        buffer = self.buffer
        while queue:
            allowed = min(window.size, stream.outbound.size, max_frame)
            if allowed <= 0:
                return Flushed.BLOCKED
            chunk = queue[0]
            if len(chunk) <= allowed:
                queue.popleft()
            else:
                queue[0] = chunk[allowed:]
                chunk = chunk[:allowed]
            n = len(chunk)
            window.size -= n
            stream.outbound.size -= n
            stream.queued_bytes -= n
            last = not queue and stream.local_end_queued and stream.trailers is None
            buffer += fr.data_frame(sid, chunk, end_stream=last)
            if last:
                return Flushed.ENDED
        if not stream.local_end_queued:
            return Flushed.DRAINED
        trailers = stream.trailers
        if trailers is not None:
            stream.trailers = None
            self.header_block(sid, cast("Headers | HeaderBlock", trailers), True)
        else:
            buffer += fr.data_frame(sid, b"", end_stream=True)
        return Flushed.ENDED
