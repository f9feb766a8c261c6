"""KeyValue records are protobuf's mvccpb.KeyValue, byte for byte, so HashKV matches etcd."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keelson.mvcc.keyvalue import KeyValue, decode_kv, encode_kv
from keelson.proto.mvccpb import kv_pb2

int64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)


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
