"""Round trips and hostile input for the raft message codec."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keelson.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from keelson.transport.codec import CodecError, decode_message, encode_message
from keelson.transport.frames import (
    FrameError,
    Request,
    Response,
    decode_handshake,
    decode_request,
    decode_response,
    decode_snap_begin,
    encode_request,
    encode_response,
)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
small_bytes = st.binary(max_size=64)

entries = st.builds(Entry, u64, u64, st.sampled_from(list(EntryType)), small_bytes)
conf_states = st.builds(
    ConfState,
    st.lists(u64, max_size=5).map(tuple),
    st.lists(u64, max_size=5).map(tuple),
)
snapshots = st.builds(
    Snapshot, st.builds(SnapshotMetadata, u64, u64, conf_states), st.binary(max_size=256)
)
messages = st.builds(
    Message,
    type=st.sampled_from(list(MessageType)),
    to=u64,
    frm=u64,
    term=u64,
    log_term=u64,
    index=u64,
    entries=st.lists(entries, max_size=5).map(tuple),
    commit=u64,
    snapshot=st.none() | snapshots,
    reject=st.booleans(),
    reject_hint=u64,
    context=small_bytes,
)


@settings(deadline=None)
@given(messages)
def test_round_trip(m: Message) -> None:
    assert decode_message(encode_message(m)) == m


@settings(deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_codec_error(data: bytes) -> None:
    try:
        decode_message(data)
    except CodecError:
        pass


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_mutated_encodings_only_raise_codec_error(m: Message, data: st.DataObject) -> None:
    buf = bytearray(encode_message(m))
    action = data.draw(st.sampled_from(["flip", "truncate", "append", "splice"]))
    if action == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] = data.draw(st.integers(0, 255))
    elif action == "truncate":
        del buf[data.draw(st.integers(0, len(buf) - 1)) :]
    elif action == "append":
        buf += data.draw(st.binary(min_size=1, max_size=16))
    else:
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    try:
        decode_message(bytes(buf))
    except CodecError:
        pass


def test_truncated_and_trailing_are_errors() -> None:
    m = Message(MessageType.APP, to=2, frm=1, entries=(Entry(1, 1, data=b"x"),))
    buf = encode_message(m)
    for n in range(len(buf)):
        with pytest.raises(CodecError):
            decode_message(buf[:n])
    with pytest.raises(CodecError, match="trailing"):
        decode_message(buf + b"\0")


def test_bad_enum_values_are_errors() -> None:
    buf = bytearray(encode_message(Message(MessageType.APP, entries=(Entry(1, 1),))))
    bad = bytearray(buf)
    bad[0] = 200
    with pytest.raises(CodecError, match="message type"):
        decode_message(bytes(bad))
    bad = bytearray(buf)
    bad[1] = 0x80
    with pytest.raises(CodecError, match="flag"):
        decode_message(bytes(bad))
    bad = bytearray(buf)
    bad[struct.calcsize(">BBQQQQQQQII") + 16] = 9  # the entry's type byte
    with pytest.raises(CodecError, match="entry type"):
        decode_message(bytes(bad))


def test_absurd_lengths_are_rejected_before_allocating() -> None:
    buf = bytearray(encode_message(Message(MessageType.APP)))
    struct.pack_into(">I", buf, len(buf) - 4, 0xFFFFFFFF)  # entry count
    with pytest.raises(CodecError, match="entry count"):
        decode_message(bytes(buf))
    buf = bytearray(encode_message(Message(MessageType.SNAP, snapshot=Snapshot(data=b"abc"))))
    struct.pack_into(">Q", buf, len(buf) - 11, 2**63)  # snapshot data length
    with pytest.raises(CodecError, match="snapshot data"):
        decode_message(bytes(buf))


def test_unrepresentable_values_cannot_be_encoded() -> None:
    with pytest.raises(CodecError):
        encode_message(Message(MessageType.APP, term=-1))
    with pytest.raises(CodecError):
        encode_message(Message(MessageType.APP, index=2**64))


@settings(deadline=None)
@given(st.binary(max_size=128))
def test_frame_decoders_only_raise_frame_error(data: bytes) -> None:
    for decode in (decode_handshake, decode_request, decode_response, decode_snap_begin):
        try:
            decode(data)
        except FrameError:
            pass


@given(u64, st.text(max_size=40), st.binary(max_size=64), st.booleans())
def test_request_and_response_round_trip(rid: int, kind: str, payload: bytes, ok: bool) -> None:
    req = Request(rid, kind, payload)
    assert decode_request(encode_request(req)[5:]) == req
    resp = Response(rid, ok, payload)
    assert decode_response(encode_response(resp)[5:]) == resp
