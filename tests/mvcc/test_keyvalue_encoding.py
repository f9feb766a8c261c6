"""KeyValue records are protobuf's mvccpb.KeyValue, byte for byte, so HashKV matches etcd."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keelson.mvcc.keyvalue import KeyValue, decode_kv, encode_kv
from keelson.proto.mvccpb import kv_pb2

int64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)


def _reference_varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64: a negative value takes ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _reference_encoding(kv: KeyValue) -> bytes:
    """mvccpb.KeyValue's wire format written out from the protobuf spec (fields in number
    order, zero values omitted): independent of the library encode_kv calls."""
    out = b""
    if kv.key:
        out += b"\x0a" + _reference_varint(len(kv.key)) + kv.key
    for tag, n in ((b"\x10", kv.create_revision), (b"\x18", kv.mod_revision),
                   (b"\x20", kv.version)):
        if n:
            out += tag + _reference_varint(n)
    if kv.value:
        out += b"\x2a" + _reference_varint(len(kv.value)) + kv.value
    if kv.lease:
        out += b"\x30" + _reference_varint(kv.lease)
    return out


@pytest.mark.parametrize(
    ("kv", "raw"),
    [
        # A put as the key bucket stores it (bytes are the on-disk format: never change).
        (KeyValue(b"foo", 2, 5, 3, b"bar", 0),
         bytes.fromhex("0a03666f6f100218052003") + b"\x2a\x03bar"),
        # A tombstone: only the key.
        (KeyValue(b"k"), b"\x0a\x01k"),
        # Multi-byte varints, a lease, a negative lease (ten bytes), an empty key.
        (KeyValue(b"", 300, 16384, 1, b"", 1 << 40),
         bytes.fromhex("10ac0218808001200130808080808020")),
        (KeyValue(b"a", 1, 1, 1, b"", -1),
         bytes.fromhex("0a0161100118012001") + b"\x30" + b"\xff" * 9 + b"\x01"),
    ],
)
def test_golden_encodings(kv: KeyValue, raw: bytes) -> None:
    assert encode_kv(kv) == raw
    assert _reference_encoding(kv) == raw
    assert decode_kv(raw) == kv


@given(st.binary(max_size=40), int64, int64, int64, st.binary(max_size=300), int64)
def test_encoding_matches_the_reference(key: bytes, create: int, mod: int, version: int,
                                       value: bytes, lease: int) -> None:
    kv = KeyValue(key, create, mod, version, value, lease)
    assert encode_kv(kv) == _reference_encoding(kv)


@given(st.binary(max_size=40), int64, int64, int64, st.binary(max_size=300), int64)
def test_encoding_is_protobufs(key: bytes, create: int, mod: int, version: int,
                               value: bytes, lease: int) -> None:
    kv = KeyValue(key, create, mod, version, value, lease)
    pb = kv_pb2.KeyValue(key=key, create_revision=create, mod_revision=mod,
                         version=version, value=value, lease=lease)
    assert encode_kv(kv) == pb.SerializeToString()
    assert decode_kv(encode_kv(kv)) == kv


@pytest.mark.parametrize(
    "raw", [b"\x0a\x05ab", b"\x10", b"\x0b", b"\x10" + b"\xff" * 11]
)
def test_malformed_records_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_kv(raw)
