"""Fixtures for the etcd client tests: one keelson member process per test module, and a
runner for the client scripts (each client runs in its own interpreter; see the scripts'
docstrings for why)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keelson.testing.cluster import ProcessCluster
from keelson.testing.etcd import EtcdProcess

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Endpoint:
    """A server a client script talks to: ``kind`` is "keelson" or "etcd" (the reference)."""

    kind: str
    addr: str


@pytest.fixture(scope="module", params=["keelson", "etcd"])
def endpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Endpoint]:
    """A started 1-member keelson, or a real etcd 3.4 running the same scenarios (so a
    scenario that fails only on keelson is keelson's bug, not the test's). Stopped by PID at
    the end of the module."""
    if request.param == "etcd":
        if shutil.which("etcd") is None:
            pytest.skip("etcd is not installed (Debian package etcd-server)")
        ref = EtcdProcess(str(tmp_path_factory.mktemp("etcd") / "data"))
        ref.start()
        try:
            yield Endpoint("etcd", ref.endpoint)
        finally:
            ref.stop()
        return
    c = ProcessCluster(tmp_path_factory.mktemp("keelson"), 1)
    c.start_all()
    try:
        c.wait_ready(timeout=60)
        yield Endpoint("keelson", c.members[0].client_addr)
    finally:
        c.stop_all()


def run_client_script(
    script: str, endpoint: str, scenario: str, *, pure_python_protobuf: bool, timeout: float = 90
) -> str:
    """Run ``tests/clients/<script>`` for one scenario; fail the test with its output if the
    scenario failed. Returns its stdout."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pure_python_protobuf:
        env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    proc = subprocess.run(
        [sys.executable, str(HERE / script), endpoint, scenario],
        capture_output=True, timeout=timeout, env=env, cwd=str(HERE),
    )
    out, err = proc.stdout.decode(), proc.stderr.decode()
    if proc.returncode != 0 or not out.strip().endswith(f"ok {scenario}"):
        pytest.fail(f"{script} {scenario} failed (rc {proc.returncode}):\n{out}\n{err}")
    return out
