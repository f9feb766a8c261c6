"""The ``torture`` marker: the torture schedule runs only when asked for.

``make torture`` (``pytest -m torture tests/torture``) or ``KEELSON_TORTURE=1`` runs tests
marked ``torture``; any other selection skips them, so a plain ``pytest tests`` stays fast
(whether ``make test`` includes the torture run is the lead's call).
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "torture: the fault torture schedule (minutes); run with make torture"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "torture" in (config.getoption("markexpr") or "") or os.environ.get("KEELSON_TORTURE"):
        return
    skip = pytest.mark.skip(reason="torture schedule: run with `make torture`")
    for item in items:
        if item.get_closest_marker("torture") is not None:
            item.add_marker(skip)
