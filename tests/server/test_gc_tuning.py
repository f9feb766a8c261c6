"""gc_tuning: the member process's collector threshold from KEELSON_GC_GEN0, and the
start-up freeze."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

from keelson.server import gc_tuning


@pytest.fixture
def restore_gc() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)
    gc.unfreeze()


@pytest.mark.parametrize(
    ("raw", "want", "warned"),
    [("", 10_000, False), ("0", 0, False), ("50000", 50_000, False),
     ("-1", 10_000, True), ("lots", 10_000, True), ("99999999", 10_000, True)],
)
def test_gen0_from_env(
    caplog: pytest.LogCaptureFixture, raw: str, want: int, warned: bool
) -> None:
    with caplog.at_level(logging.WARNING):
        assert gc_tuning.gen0_from_env({gc_tuning.GC_GEN0_ENV: raw} if raw else {}) == want
    assert ("ignoring" in caplog.text) is warned


def test_tune_sets_the_first_threshold_and_keeps_the_others(restore_gc: None) -> None:
    gc.set_threshold(700, 11, 12)
    assert gc_tuning.tune({})
    assert gc.get_threshold() == (10_000, 11, 12)
    gc.set_threshold(700, 11, 12)
    assert not gc_tuning.tune({gc_tuning.GC_GEN0_ENV: "0"})
    assert gc.get_threshold() == (700, 11, 12)


def test_freeze_startup_moves_existing_objects_out_of_collections(restore_gc: None) -> None:
    gc.unfreeze()
    kept = [[i] for i in range(1000)]  # tracked objects made "at start-up"
    gc_tuning.freeze_startup()
    assert gc.get_freeze_count() >= len(kept)
