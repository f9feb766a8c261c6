"""The lessor on a temp-dir LMDB backend with a virtual clock."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from keelson.backend import Backend
from keelson.lease import (
    EXPIRED_RETRY_INTERVAL,
    LEASE_BUCKET,
    MAX_LEASE_TTL,
    LeaseCorrupt,
    Lessor,
    NotPrimary,
    decode_lease,
    encode_lease,
    min_lease_ttl,
    new_lease_id,
)
from keelson.proto.errors import LEASE_EXIST, LEASE_NOT_FOUND, LEASE_TTL_TOO_LARGE, EtcdError


class Deleted:
    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []

    def __call__(self, keys: list[bytes]) -> None:
        self.calls.append(list(keys))


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "db")


@pytest.fixture
def backend(path: str) -> Iterator[Backend]:
    b = Backend(path, buckets=[LEASE_BUCKET], map_size=32 << 20)
    yield b
    b.close()


def grant(backend: Backend, lessor: Lessor, lease_id: int, ttl: int, now: float = 0.0) -> int:
    with backend.write() as tx:
        return lessor.grant(tx, lease_id, ttl, now)


def revoke(backend: Backend, lessor: Lessor, lease_id: int) -> list[bytes]:
    with backend.write() as tx:
        return lessor.revoke(tx, lease_id)


def test_grant_and_errors(backend: Backend) -> None:
    lessor = Lessor(Deleted(), min_ttl=5)
    assert grant(backend, lessor, 7, 10) == 10
    assert grant(backend, lessor, 3, 2) == 5  # raised to min_ttl
    assert lessor.leases() == [3, 7]
    assert lessor.lease_exists(7) and not lessor.lease_exists(8)
    with pytest.raises(EtcdError) as e:
        grant(backend, lessor, 7, 10)
    assert e.value is LEASE_EXIST
    with pytest.raises(EtcdError) as e:
        grant(backend, lessor, 9, MAX_LEASE_TTL + 1)
    assert e.value is LEASE_TTL_TOO_LARGE
    assert grant(backend, lessor, 9, MAX_LEASE_TTL) == MAX_LEASE_TTL
    for bad in (0, -1, 1 << 63):
        with pytest.raises(EtcdError) as e:
            grant(backend, lessor, bad, 10)
        assert e.value is LEASE_NOT_FOUND
    # failed grants wrote nothing
    with backend.read() as rt:
        assert [k for k, _ in rt.range(LEASE_BUCKET, b"", None)] == [
            encode_lease(i, 1, 0)[0] for i in (3, 7, 9)
        ]


def test_attach_detach_revoke(backend: Backend) -> None:
    deleted = Deleted()
    lessor = Lessor(deleted)
    grant(backend, lessor, 1, 10)
    grant(backend, lessor, 2, 10)
    for k in (b"c", b"a", b"b"):
        lessor.attach(1, k)
    lessor.detach(1, b"b")
    lessor.detach(1, b"zz")  # not attached: no-op
    with pytest.raises(EtcdError) as e:
        lessor.attach(99, b"x")
    assert e.value is LEASE_NOT_FOUND
    with pytest.raises(EtcdError) as e:
        lessor.detach(99, b"x")
    assert e.value is LEASE_NOT_FOUND
    assert lessor.time_to_live(1, 0.0).keys == (b"a", b"c")
    assert revoke(backend, lessor, 1) == [b"a", b"c"]
    assert deleted.calls == [[b"a", b"c"]]
    assert revoke(backend, lessor, 2) == []
    assert deleted.calls == [[b"a", b"c"]]  # no keys: no callback
    assert lessor.leases() == []
    with pytest.raises(EtcdError) as e:
        revoke(backend, lessor, 1)
    assert e.value is LEASE_NOT_FOUND
    with backend.read() as rt:
        assert rt.count(LEASE_BUCKET) == 0


def test_revoke_callback_may_detach(backend: Backend) -> None:
    lessor: Lessor

    def delete(keys: list[bytes]) -> None:
        for k in keys:
            lessor.detach(5, k)

    lessor = Lessor(delete)
    grant(backend, lessor, 5, 10)
    lessor.attach(5, b"k")
    assert revoke(backend, lessor, 5) == [b"k"]
    assert not lessor.lease_exists(5)


def test_failed_txn_does_not_persist(backend: Backend) -> None:
    lessor = Lessor(Deleted())
    with pytest.raises(RuntimeError), backend.write() as tx:
        lessor.grant(tx, 4, 10, 0.0)
        raise RuntimeError("abort")
    with backend.read() as rt:
        assert rt.count(LEASE_BUCKET) == 0


def test_follower_rejects_leader_ops(backend: Backend) -> None:
    lessor = Lessor(Deleted())
    grant(backend, lessor, 1, 10)
    with pytest.raises(NotPrimary):
        lessor.renew(1, 0.0)
    with pytest.raises(NotPrimary):
        lessor.expired(1e9)
    assert lessor.expiry(1) == math.inf
    info = lessor.time_to_live(1, 100.0)
    assert (info.granted_ttl, info.remaining_ttl) == (10, 10)
    with pytest.raises(EtcdError) as e:
        lessor.time_to_live(2, 0.0)
    assert e.value is LEASE_NOT_FOUND


def test_expiry_renew(backend: Backend) -> None:
    lessor = Lessor(Deleted())
    lessor.promote(0.0)
    grant(backend, lessor, 1, 10, now=100.0)
    grant(backend, lessor, 2, 20, now=100.0)
    assert lessor.expired(109.9) == []
    assert lessor.time_to_live(1, 104.0).remaining_ttl == 6
    assert lessor.expired(110.0) == [1]
    assert lessor.expired(110.0) == []  # re-reported only after the retry interval
    assert lessor.expired(110.0 + EXPIRED_RETRY_INTERVAL) == [1]
    with pytest.raises(EtcdError) as e:
        lessor.renew(1, 115.0)  # expired, awaiting revoke
    assert e.value is LEASE_NOT_FOUND
    assert lessor.renew(2, 115.0) == 20
    assert lessor.expired(134.9, limit=10) == [1]
    assert lessor.expiry(2) == 135.0
    assert lessor.expired(135.0) == [2]
    with pytest.raises(EtcdError) as e:
        lessor.renew(3, 0.0)
    assert e.value is LEASE_NOT_FOUND
    assert lessor.time_to_live(2, 200.0).remaining_ttl == 0
    revoke(backend, lessor, 1)
    assert lessor.expired(1000.0) == [2]


def test_expired_limit_orders_by_deadline(backend: Backend) -> None:
    lessor = Lessor(Deleted())
    lessor.promote(0.0)
    for lid, ttl in ((5, 3), (4, 1), (6, 2), (7, 50)):
        grant(backend, lessor, lid, ttl)
    assert lessor.expired(10.0, limit=2) == [4, 6]
    assert lessor.expired(10.0, limit=2) == [5]


def test_promote_extend_and_demote(backend: Backend) -> None:
    lessor = Lessor(Deleted())
    grant(backend, lessor, 1, 10)
    grant(backend, lessor, 2, 30)
    lessor.promote(1000.0, extend=5.0)
    assert lessor.is_primary
    assert lessor.expiry(1) == 1015.0 and lessor.expiry(2) == 1035.0
    lessor.demote()
    assert not lessor.is_primary
    assert lessor.expiry(1) == math.inf
    with pytest.raises(NotPrimary):
        lessor.expired(1e12)
    grant(backend, lessor, 3, 10, now=2000.0)
    assert lessor.expiry(3) == math.inf


def test_promote_spreads_simultaneous_expiries(backend: Backend) -> None:
    lessor = Lessor(Deleted(), revoke_rate=8)  # target 6 per second
    with backend.write() as tx:
        for lid in range(1, 61):
            lessor.grant(tx, lid, 10, 0.0)
    lessor.promote(0.0)
    deadlines = sorted(lessor.expiry(i) for i in lessor.leases())
    assert deadlines[0] == 10.0
    assert all(d >= 10.0 for d in deadlines)
    # no one-second window holds many more than the target
    for start in deadlines:
        assert sum(1 for d in deadlines if start <= d < start + 1.0) <= 12
    assert deadlines[-1] <= 10.0 + 60 / 6 + 1.0
    # without crowding, nothing moves
    small = Lessor(Deleted(), revoke_rate=1000)
    with backend.write() as tx:
        for lid in range(1, 61):
            small.grant(tx, 1000 + lid, 10, 0.0)
    small.promote(0.0)
    assert {small.expiry(i) for i in small.leases()} == {10.0}


def test_persistence_across_reopen(path: str) -> None:
    b = Backend(path, buckets=[LEASE_BUCKET], map_size=32 << 20)
    lessor = Lessor(Deleted(), min_ttl=2)
    grant(b, lessor, 10, 100)
    grant(b, lessor, 11, 1)
    grant(b, lessor, 12, 50)
    revoke(b, lessor, 12)
    b.close()
    b = Backend(path, buckets=[LEASE_BUCKET], map_size=32 << 20)
    try:
        again = Lessor(Deleted())
        again.recover(b)
        assert again.leases() == [10, 11]
        assert again.time_to_live(11, 0.0).granted_ttl == 2
        again.attach(10, b"k")  # mvcc re-attaches while opening
        with b.read() as rt:
            third = Lessor(Deleted())
            third.recover(rt)
        assert third.leases() == [10, 11]
        third.promote(5.0)
        assert third.expiry(10) == 105.0
    finally:
        b.close()


def test_recover_rejects_corrupt_record(backend: Backend) -> None:
    with backend.write() as tx:
        tx.put(LEASE_BUCKET, b"\x00" * 8, b"junk")
    with pytest.raises(LeaseCorrupt):
        Lessor(Deleted()).recover(backend)
    with pytest.raises(LeaseCorrupt):
        decode_lease(*encode_lease(1, 0, 0))


def test_checkpoints(path: str) -> None:
    b = Backend(path, buckets=[LEASE_BUCKET], map_size=32 << 20)
    leader = Lessor(Deleted(), checkpoint_interval=60.0)
    follower = Lessor(Deleted(), checkpoint_interval=60.0)
    leader.promote(0.0)
    grant(b, leader, 1, 1000)
    grant(b, leader, 2, 30)  # shorter than the interval: never checkpointed
    with b.write() as tx:
        follower.grant(tx, 1, 1000, 0.0)
        follower.grant(tx, 2, 30, 0.0)
    assert follower.checkpoint_due(1e9) == []
    assert leader.checkpoint_due(59.0) == []
    due = leader.checkpoint_due(60.0)
    assert due == [(1, 940)]
    assert leader.checkpoint_due(60.0) == []
    assert leader.checkpoint_due(120.5) == [(1, 880)]
    with b.write() as tx:
        follower.apply_checkpoint(tx, 1, 880)
        follower.apply_checkpoint(tx, 99, 5)  # revoked meanwhile: ignored
    follower.promote(200.0)
    assert follower.expiry(1) == 1080.0
    assert follower.time_to_live(1, 200.0).granted_ttl == 1000
    b.close()
    b = Backend(path, buckets=[LEASE_BUCKET], map_size=32 << 20)
    try:
        reopened = Lessor(Deleted())
        reopened.recover(b)
        assert reopened.time_to_live(1, 0.0).remaining_ttl == 880
        reopened.promote(0.0)
        assert reopened.expiry(1) == 880.0
        assert reopened.renew(1, 10.0) == 1000  # renew restores the full TTL
        assert reopened.expiry(1) == 1010.0
    finally:
        b.close()


def test_checkpoints_off_by_default(backend: Backend) -> None:
    lessor = Lessor(Deleted())
    lessor.promote(0.0)
    grant(backend, lessor, 1, 10_000)
    assert lessor.checkpoint_due(1e6) == []


def test_new_lease_id_and_min_ttl() -> None:
    rng = random.Random(1)
    taken: set[int] = set()
    for _ in range(100):
        lid = new_lease_id(rng, taken.__contains__)
        assert 0 < lid < 1 << 63 and lid not in taken
        taken.add(lid)
    # etcd defaults: 10 ticks of 100 ms -> 1.5 s -> 2 s
    assert min_lease_ttl(10, 100) == 2
    assert min_lease_ttl(10, 50) == 1
    with pytest.raises(ValueError):
        min_lease_ttl(0, 100)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        Lessor(Deleted(), min_ttl=0)
    with pytest.raises(ValueError):
        Lessor(Deleted(), checkpoint_interval=0.0)
