"""Request header decoding: the ``hpack`` decoder plus a memo of blocks that are provably
decoded the same way again.

A gRPC client sends nearly the same request header block on every call. Once its fields sit
in the dynamic table, the block is all indexed references — byte-for-byte identical from one
call to the next — and decoding it neither reads anything but the tables nor changes them.
``HeaderDecoder`` remembers such blocks (bytes -> header list) together with the decoder
state they were decoded in, and answers a repeat without decoding.

Why a hit is exact. HPACK decoding is a pure function of (block, decoder state); the state
is the dynamic table's entries, its maximum size and the size limits. A memo entry is made
only when decoding left that state unchanged (so skipping the decode later skips no state
change), and it records the state as (the newest entry *object*, entry count, table max
size, allowed max size, header-list limit). A hit requires the current state to match:
  * hpack inserts by creating a new ``(name, value)`` tuple and pushing it at the front;
    evictions remove from the back. The memo holds a reference to the recorded front
    object, so no later tuple can share its identity. Hence if that very object is still the
    front, nothing was inserted since: any insertion leaves a newer front, and making the old
    object the front again would need evicting the newer entries first, which evicts it
    first (it is older).
  * With no insertion, entries can only have been evicted, which lowers the count; the
    count matches, so nothing was evicted: the entries are exactly those of the recording.
  * The sizes are compared directly.
So a hit happens only in the same state, where the decode would return the recorded list.
Blocks that insert (literal with incremental indexing, e.g. a changing ``grpc-timeout``) or
resize are never memoized. The memo holds at most ``MEMO_ENTRIES`` blocks of at most
``MEMO_BLOCK_BYTES`` bytes each.
"""

from __future__ import annotations

from hpack import Decoder

from keelson.http2._events import Headers

MEMO_ENTRIES = 32
MEMO_BLOCK_BYTES = 1024

_State = tuple[object, int, int, int, int]


class HeaderDecoder:
    """An hpack ``Decoder`` (exposed as ``decoder``) with the memo described above."""

    __slots__ = ("decoder", "_memo")

    def __init__(self, max_header_list_size: int) -> None:
        self.decoder = Decoder(max_header_list_size=max_header_list_size)
        self._memo: dict[bytes, tuple[_State, Headers]] = {}

    def _state(self) -> _State:
        decoder = self.decoder
        table = decoder.header_table
        entries = table.dynamic_entries
        return (
            entries[0] if entries else None,
            len(entries),
            table.maxsize,
            decoder.max_allowed_table_size,
            decoder.max_header_list_size,
        )

    def decode(self, block: bytes) -> Headers:
        """Decode one complete header block; raises what ``hpack`` raises."""
        before = self._state()
        hit = self._memo.get(block)
        if hit is not None:
            state, headers = hit
            if state[0] is before[0] and state[1:] == before[1:]:
                return headers
        headers = tuple(self.decoder.decode(block, raw=True))
        if len(block) <= MEMO_BLOCK_BYTES:
            after = self._state()
            if after[0] is before[0] and after[1:] == before[1:]:
                memo = self._memo
                if len(memo) >= MEMO_ENTRIES:
                    memo.clear()
                memo[block] = (before, headers)
        return headers
