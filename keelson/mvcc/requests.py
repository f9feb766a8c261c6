"""The requests the key space serves and their results, as etcd's v3 KV API shapes them.

Theory of operation. These are mvcc's own immutable values, mirroring the fields of etcd's
``RangeRequest``, ``PutRequest``, ``DeleteRangeRequest``, ``TxnRequest`` and ``Compare`` and
their responses; the API layer translates protobuf messages to and from them. A
``range_end`` follows etcd: ``b""`` means the single key ``key``, ``b"\\0"`` means every key
at or after ``key`` (so ``key=b"\\0", range_end=b"\\0"`` is the whole key space), anything
else is the exclusive end of ``[key, range_end)``; ``prefix_end`` computes the end of a
prefix range. Each response carries the store revision its header would report.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from keelson.mvcc.keyvalue import KeyValue


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with ``prefix`` (etcd's
    GetPrefixRangeEnd): the prefix with its last non-0xff byte incremented, or ``b"\\0"``
    (every key) when there is none."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def index_range_end(range_end: bytes) -> bytes | None:
    """Translate an API range_end to the index's convention: None for a single key, b""
    for no upper bound, else the exclusive end."""
    if range_end == b"":
        return None
    if range_end == b"\0":
        return b""
    return range_end


class SortOrder(enum.IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


@dataclass(frozen=True, slots=True)
class RangeRequest:
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: SortOrder = SortOrder.NONE
    sort_target: SortTarget = SortTarget.KEY
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(frozen=True, slots=True)
class RangeResponse:
    revision: int
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    count: int = 0


@dataclass(frozen=True, slots=True)
class PutRequest:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class PutResponse:
    revision: int
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeResponse:
    revision: int
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


class CompareResult(enum.IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class CompareTarget(enum.IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


@dataclass(frozen=True, slots=True)
class Compare:
    """``key`` (or ``[key, range_end)``) ``target`` ``result`` operand; the operand is
    ``value`` for CompareTarget.VALUE and ``number`` for every other target."""

    key: bytes
    target: CompareTarget
    result: CompareResult
    value: bytes = b""
    number: int = 0
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class TxnRequest:
    compare: tuple[Compare, ...] = ()
    success: tuple[RequestOp, ...] = ()
    failure: tuple[RequestOp, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResponse:
    revision: int
    succeeded: bool
    responses: tuple[ResponseOp, ...] = ()


RequestOp = RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest
ResponseOp = RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse
