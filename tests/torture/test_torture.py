"""The short torture schedule ``make torture`` runs: a few fixed seeds, about 3.5 minutes.

Each seed starts a 3-member cluster behind the proxy, runs every workload under the default
fault schedule, and fails on any anomaly, printing the checker's report (with the seed and
the replay command) and keeping the run's directory. A last run is the pipeline's self-test:
register reads made serializable (answered from a member's own, possibly stale, state) under
partitions and pauses must be caught as non-linearizable, so a green run means something.
"""

from __future__ import annotations

import shutil

import pytest

from tests.torture.runner import Config, run

SEEDS = (11, 23, 37)
SECONDS = 35.0


@pytest.mark.torture
@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", SEEDS)
def test_torture_schedule(seed: int) -> None:
    result = run(Config(seed=seed, seconds=SECONDS, quiet_seconds=5.0))
    print("\n".join(result.fault_log))
    assert result.faults > 0, result.report()
    assert result.operations > 100, result.report()
    assert not result.anomalies, result.report()


@pytest.mark.torture
@pytest.mark.timeout(240)
def test_stale_serializable_reads_are_caught() -> None:
    config = Config(
        seed=5,
        seconds=40.0,
        quiet_seconds=3.0,
        kinds=("isolate-leader", "partition-majority", "pause-leader"),
        serializable_reads=True,
    )
    result = run(config)
    try:
        kinds = {(a.checker, a.kind) for a in result.anomalies}
        assert ("linearizable", "not-linearizable") in kinds, result.report()
    finally:
        shutil.rmtree(result.directory, ignore_errors=True)
