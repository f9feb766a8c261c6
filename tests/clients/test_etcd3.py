"""The PyPI ``etcd3`` client (0.12.0) runs its common operations against keelson: key-value
calls, compare-and-swap, transactions, leases, watches, locks, members and status. Each
scenario is a function in ``etcd3_script.py`` run in a subprocess with the pure-Python
protobuf implementation (etcd3's generated code is too old for protobuf 7's C one)."""

from __future__ import annotations

import pytest

from tests.clients.conftest import Endpoint, run_client_script

SCENARIOS = ["kv", "replace", "txn", "lease", "watch", "lock", "cluster"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_etcd3_scenario(endpoint: Endpoint, scenario: str) -> None:
    run_client_script("etcd3_script.py", endpoint.addr, scenario, pure_python_protobuf=True)
