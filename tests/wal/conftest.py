"""Shared fixtures of the WAL tests: a seeded random source whose seed is printed on failure.

Replay a failure with ``KEELSON_TEST_SEED=<seed> .venv/bin/python -m pytest tests/wal``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Generator, Iterator

import pytest

SEED = int(os.environ.get("KEELSON_TEST_SEED", "20261123"))


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> Iterator[random.Random]:
    yield random.Random(SEED)
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"replay with: KEELSON_TEST_SEED={SEED} pytest {request.node.nodeid!r}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep
