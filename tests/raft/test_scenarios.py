"""Runs every tests/raft/testdata/*.txt scenario through the raft interaction environment.

Rewrite expected outputs with ``KEELSON_REWRITE=1 pytest tests/raft/test_scenarios.py``
(then review the diff: the files are the specification).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keelson.testing.datadriven import run_file
from keelson.testing.raft_env import RaftEnv

DATA = Path(__file__).parent / "testdata"
FILES = sorted(DATA.glob("*.txt"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario(path: Path) -> None:
    env = RaftEnv(seed=0)
    run_file(path, env.handle)
