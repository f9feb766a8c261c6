"""Runs every tests/http2/testdata/*.txt conversation through ``scenario_env.H2Env``.

The files are the readable specification of the connection's behaviour: a new case is a new
block of text. Rewrite expected outputs with
``KEELSON_REWRITE=1 pytest tests/http2/test_scenarios.py`` — then review the diff line by
line against RFC 9113 before keeping it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keelson.testing.datadriven import run_file
from tests.http2.scenario_env import H2Env

DATA = Path(__file__).parent / "testdata"
FILES = sorted(DATA.glob("*.txt"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario(path: Path) -> None:
    run_file(path, H2Env().handle)
