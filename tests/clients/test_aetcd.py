"""The PyPI ``aetcd`` client (asyncio) runs its common operations against keelson: key-value
calls, compare-and-swap, transactions, leases, watches (with filters, history, compaction),
locks, members and status. Each scenario is a function in ``aetcd_script.py`` run in a
subprocess (its generated messages clash with keelson's in one descriptor pool)."""

from __future__ import annotations

import pytest

from tests.clients.conftest import Endpoint, run_client_script

SCENARIOS = ["kv", "replace", "txn", "lease", "watch", "lock", "cluster"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_aetcd_scenario(endpoint: Endpoint, scenario: str) -> None:
    run_client_script("aetcd_script.py", endpoint.addr, scenario, pure_python_protobuf=False)
