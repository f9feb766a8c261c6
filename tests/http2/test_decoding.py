"""The request-header memo in keelson.http2._decoding: hits only in the recorded decoder
state, checked against a plain hpack Decoder fed the same blocks."""

from __future__ import annotations

from hpack import Decoder, Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from keelson.http2._decoding import MEMO_ENTRIES, HeaderDecoder


def test_indexed_block_is_memoized_and_invalidated_by_insertion() -> None:
    decoder = HeaderDecoder(65536)
    # Literal with incremental indexing: x-a enters the table (not memoized: state changed).
    assert decoder.decode(b"\x40\x03x-a\x011") == ((b"x-a", b"1"),)
    assert decoder._memo == {}
    # Index 62 = the newest dynamic entry: memoized.
    assert decoder.decode(b"\xbe") == ((b"x-a", b"1"),)
    assert list(decoder._memo) == [b"\xbe"]
    assert decoder.decode(b"\xbe") == ((b"x-a", b"1"),)
    # A new entry makes index 62 mean something else: the memo must not answer.
    decoder.decode(b"\x40\x03x-b\x012")
    assert decoder.decode(b"\xbe") == ((b"x-b", b"2"),)
    # A size update evicting everything (same count check alone would not see a resize).
    decoder.decode(b"\x20")
    decoder.decode(b"\x3f\xe1\x1f")  # back to 4096
    assert decoder.decode(b"\x82") == ((b":method", b"GET"),)


def test_same_front_object_after_eviction_and_reinsertion_is_not_a_hit() -> None:
    """A table holding one entry: insert, evict by inserting, re-insert an equal entry."""
    decoder = HeaderDecoder(65536)
    decoder.decode(b"\x3f\x09")  # table max size 40: room for exactly one small entry
    decoder.decode(b"\x40\x01a\x011")  # a: 1 (size 34)
    assert decoder.decode(b"\xbe") == ((b"a", b"1"),)
    decoder.decode(b"\x40\x01b\x012")  # evicts a
    decoder.decode(b"\x40\x01a\x011")  # a: 1 again, a *new* entry with equal content
    assert decoder.decode(b"\xbe") == ((b"a", b"1"),)  # (equal either way; must not crash)
    decoder.decode(b"\x40\x01c\x013")
    assert decoder.decode(b"\xbe") == ((b"c", b"3"),)


fields = st.tuples(st.sampled_from([b"x-a", b"x-b", b"grpc-timeout", b":path", b"token"]),
                   st.sampled_from([b"1", b"2", b"/p", b"v" * 40, b""]))
ops = st.one_of(
    st.tuples(st.just("headers"), st.lists(fields, max_size=5), st.booleans()),
    st.tuples(st.just("resize"), st.sampled_from([0, 40, 100, 4096]), st.booleans()),
    st.tuples(st.just("repeat"), st.integers(0, 50), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(script=st.lists(ops, max_size=60))
def test_memo_agrees_with_plain_decoder(script: list[tuple[str, object, bool]]) -> None:
    encoder = Encoder()
    plain, memo = Decoder(), HeaderDecoder(65536)
    sent: list[bytes] = []
    for op, arg, sensitive in script:
        if op == "headers":
            assert isinstance(arg, list)
            block = encoder.encode([(n, v, sensitive) for n, v in arg])
        elif op == "resize":
            assert isinstance(arg, int)
            encoder.header_table_size = arg
            block = encoder.encode([])
        else:
            if not sent:
                continue
            assert isinstance(arg, int)
            block = sent[arg % len(sent)]  # replay an old block against the current tables
        sent.append(block)
        try:
            expected = [tuple(h) for h in plain.decode(block, raw=True)]
        except Exception as err:  # a replay may be invalid now: both must refuse it
            try:
                memo.decode(block)
            except type(err):
                return
            raise AssertionError(f"memo decoded a block hpack refuses: {err}") from err
        assert [tuple(h) for h in memo.decode(block)] == expected
        assert list(memo.decoder.header_table.dynamic_entries) == list(
            plain.header_table.dynamic_entries)
        assert len(memo._memo) <= MEMO_ENTRIES
