"""The seeded cluster simulator: seed sweeps with zero violations, determinism, and the
command line. A failing seed prints the report and the command that replays it."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest

from keelson.raft.sim import INVARIANTS, RunResult, run_seed
from keelson.raft.sim.__main__ import main
from keelson.raft.sim.checker import PROGRESS
from keelson.raft.sim.run import report

SWEEP_STEPS = 1200
CHUNK = 50
SWEEP = [(3, s) for s in range(0, 250, CHUNK)] + [(5, s) for s in range(0, 250, CHUNK)]
"""250 seeds of 3 voters and 250 of 5 (500 in all), each with faults throughout and a
final healed phase that must make progress."""


@functools.cache
def _sweep(nodes: int, start: int) -> tuple[RunResult, ...]:
    return tuple(run_seed(seed, nodes, SWEEP_STEPS) for seed in range(start, start + CHUNK))


def _failures(results: tuple[RunResult, ...], rules: set[str]) -> list[str]:
    return [report(r, SWEEP_STEPS) for r in results if rules & set(r.first)]


@pytest.mark.parametrize(("nodes", "start"), SWEEP)
def test_seed_sweep_is_safe(nodes: int, start: int) -> None:
    """Rules 1-6 (and no exception out of the core) on every seed."""
    failures = _failures(_sweep(nodes, start), set(INVARIANTS) - {PROGRESS})
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize(("nodes", "start"), SWEEP)
def test_seed_sweep_makes_progress(nodes: int, start: int) -> None:
    """Rule 7 on every seed: once faults heal, a write commits in bounded time."""
    failures = _failures(_sweep(nodes, start), {PROGRESS})
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize(("seed", "nodes"), [(3, 3), (8, 5)])
def test_same_seed_same_trace(seed: int, nodes: int) -> None:
    a = run_seed(seed, nodes, 600, full_trace=True)
    b = run_seed(seed, nodes, 600, full_trace=True)
    assert a.trace == b.trace
    assert a.stats == b.stats
    assert len(a.trace) > 500
    c = run_seed(seed + 1, nodes, 600, full_trace=True)
    assert c.trace != a.trace


def test_runs_exercise_the_faults() -> None:
    """A sweep is only worth something if the schedule really injects what it claims."""
    total: dict[str, int] = {}
    for seed in range(20):
        for k, v in run_seed(seed, 3, SWEEP_STEPS).stats.items():
            total[k] = total.get(k, 0) + v
    for k in (
        "acks",
        "served",
        "crashes",
        "conf_changes",
        "snapshots_installed",
        "transfers",
        "partitions",
        "elections",
    ):
        assert total[k] > 0, f"no {k} in 20 seeds: {total}"


def test_cli_summary_and_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "3", "--start", "5", "--steps", "300"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "3 seeds, 0 violations"


def test_cli_trace_prints_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "4", "--nodes", "5", "--steps", "200", "--trace"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "1 seeds, 0 violations"
    steps = [int(line.split()[0]) for line in lines[:-2]]
    assert steps == sorted(steps)
    assert any(" tick" in line for line in lines)
    assert steps[-1] >= 200


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "0"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["--nodes", "4"])
    assert exc.value.code == 2
    capsys.readouterr()


def test_same_seed_same_output_across_processes() -> None:
    """Hash randomisation must not reach the run: two interpreters with different
    PYTHONHASHSEED print the same trace."""
    outs = []
    for hashseed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        proc = subprocess.run(
            [sys.executable, "-m", "keelson.raft.sim", "--seed", "11", "--steps", "300", "--trace"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        outs.append(proc.stdout)
    assert outs[0] == outs[1]
