"""The error table: exact etcd strings and codes, uniqueness, lookups."""

from __future__ import annotations

import pytest

from keelson.proto import errors
from keelson.proto.errors import Code, EtcdError


@pytest.mark.parametrize(
    ("err", "code", "message"),
    [
        (
            errors.COMPACTED,
            Code.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            errors.FUTURE_REV,
            Code.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (errors.LEASE_NOT_FOUND, Code.NOT_FOUND, "etcdserver: requested lease not found"),
        (errors.REQUEST_TOO_LARGE, Code.INVALID_ARGUMENT, "etcdserver: request is too large"),
        (
            errors.AUTH_NOT_ENABLED,
            Code.FAILED_PRECONDITION,
            "etcdserver: authentication is not enabled",
        ),
        (errors.EMPTY_KEY, Code.INVALID_ARGUMENT, "etcdserver: key is not provided"),
        (errors.NO_LEADER, Code.UNAVAILABLE, "etcdserver: no leader"),
        (errors.INVALID_AUTH_TOKEN, Code.UNAUTHENTICATED, "etcdserver: invalid auth token"),
        (errors.NO_SPACE, Code.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded"),
        (errors.CORRUPT, Code.DATA_LOSS, "etcdserver: corrupt cluster"),
    ],
)
def test_exact_code_and_message(err: EtcdError, code: Code, message: str) -> None:
    assert err.code == code
    assert err.message == message
    assert str(err) == message


def test_names_and_messages_unique() -> None:
    table = errors.all_errors()
    assert len(table) == 54  # every entry of etcd 3.4 rpctypes server-side errors
    assert len({e.name for e in table}) == len(table)
    assert len({e.message for e in table}) == len(table)
    assert [e.name for e in table] == sorted(e.name for e in table)


def test_every_message_is_etcdserver_prefixed_and_roundtrips() -> None:
    for err in errors.all_errors():
        assert err.message.startswith("etcdserver: ")
        assert errors.by_message(err.message) is err
        assert errors.by_name(err.name) is err
        assert getattr(errors, err.name) is err
    assert errors.by_message("nope") is None


def test_codes_are_grpc_numbers() -> None:
    assert int(Code.INVALID_ARGUMENT) == 3
    assert int(Code.UNAVAILABLE) == 14
    assert int(Code.UNAUTHENTICATED) == 16


def test_raise_and_catch() -> None:
    with pytest.raises(EtcdError) as info:
        raise errors.KEY_NOT_FOUND
    assert info.value == errors.KEY_NOT_FOUND
