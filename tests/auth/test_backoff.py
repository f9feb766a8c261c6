"""Failed-authentication back-off with a virtual clock."""

from __future__ import annotations

import pytest

from keelson.auth import AuthBackoff


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, **kw: float) -> AuthBackoff:
    opts: dict[str, float] = dict(free_failures=2, base_delay=1.0, max_delay=8.0)
    opts.update(kw)
    return AuthBackoff(clock, **opts)  # type: ignore[arg-type]


def test_free_failures_then_exponential_delay_capped() -> None:
    clock = Clock()
    b = make(clock)
    delays = []
    for _ in range(8):
        wait = b.admit("alice", "10.0.0.1:5000")
        assert wait is not None
        clock.now += wait
        delays.append(wait)
        b.failure("alice", "10.0.0.1:5000")
    assert delays == [0, 0, 1, 2, 4, 8, 8, 8]  # 2 free, then 1 s doubling to 8 s
    assert b.failures(user="alice") == 8
    assert b.failures(peer="10.0.0.1:5000") == 8


def test_success_resets_user_and_peer() -> None:
    clock = Clock()
    b = make(clock)
    for _ in range(5):
        b.failure("alice", "p1")
    assert b.admit("alice", "p1") == pytest.approx(8.0)
    clock.now += 8.0
    b.success("alice", "p1")
    assert b.admit("alice", "p1") == 0.0
    assert b.failures(user="alice") == 0 and b.failures(peer="p1") == 0


def test_per_user_and_per_peer_are_separate() -> None:
    clock = Clock()
    b = make(clock)
    for _ in range(4):  # guessing alice's password from p1
        b.failure("alice", "p1")
    assert b.admit("alice", "p2") == pytest.approx(4.0)  # alice is slowed from anywhere
    assert b.admit("bob", "p1") == pytest.approx(4.0)  # p1 is slowed for any user
    assert b.admit("bob", "p2") == 0.0  # others are not
    assert b.admit("carol", None) == 0.0


def test_concurrent_attempts_are_spread_out() -> None:
    clock = Clock()
    b = make(clock)
    for _ in range(3):
        b.failure("alice", "p")
    waits = [b.admit("alice", "p") for _ in range(4)]
    assert waits == [pytest.approx(w) for w in (2.0, 4.0, 6.0, 8.0)]


def test_too_long_a_wait_is_refused() -> None:
    clock = Clock()
    b = make(clock, max_wait=5.0)
    for _ in range(6):
        b.failure("alice", "p")
    assert b.admit("alice", "p") is None  # would wait 8 s


def test_memory_is_bounded_and_counters_expire() -> None:
    clock = Clock()
    b = make(clock, max_entries=100, forget_after=60.0)
    for i in range(1000):
        b.failure(f"user{i}", f"peer{i}")
    assert len(b) == 100
    assert b.failures(user="user999") == 1
    assert b.failures(user="user0") == 0  # evicted, least recently used
    for _ in range(5):
        b.failure("mallory", "p")
    clock.now += 61.0
    assert b.admit("mallory", "p") == 0.0
    assert b.failures(user="mallory") == 0


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        AuthBackoff(base_delay=0)
    with pytest.raises(ValueError):
        AuthBackoff(max_entries=0)
