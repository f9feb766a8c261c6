"""bcrypt hashing as etcd does it."""

from __future__ import annotations

import pytest

from keelson.auth import (
    DEFAULT_BCRYPT_COST,
    effective_bcrypt_cost,
    hash_password,
    password_matches,
)


def test_hash_and_check() -> None:
    h = hash_password("s3cret", 4)
    assert h.startswith(b"$2a$04$") and b"s3cret" not in h
    assert h != hash_password("s3cret", 4)  # salted
    assert password_matches(h, "s3cret")
    assert not password_matches(h, "s3cret ")
    assert not password_matches(h, "")
    assert not password_matches(b"", "s3cret")
    assert not password_matches(b"not a hash", "s3cret")


def test_only_the_first_72_bytes_count_as_in_etcd_3_4() -> None:
    long = "x" * 72
    h = hash_password(long + "tail", 4)
    assert password_matches(h, long)
    assert password_matches(h, long + "other tail")
    assert not password_matches(h, "x" * 71)


def test_cost() -> None:
    assert hash_password("p", 5).startswith(b"$2a$05$")
    assert effective_bcrypt_cost(12) == 12
    assert effective_bcrypt_cost(3) == DEFAULT_BCRYPT_COST
    assert effective_bcrypt_cost(32) == DEFAULT_BCRYPT_COST
    with pytest.raises(ValueError):
        hash_password("p", 3)
