"""/health, /version and /metrics: etcd's rules on a scripted member, then on a real one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from keelson.api.http import HttpEndpoints
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.server.disk_metrics import DurationHistogram
from keelson.testing.etcd import free_port, wait_for_port


class ScriptedMember:
    """Answers what the endpoints ask, as told by the test."""

    def __init__(self) -> None:
        self.leader_id = 1
        self.alarms: list[pb.AlarmMember] = []
        self.range_delay = 0.0
        self.range_error: Exception | None = None
        self.ranges: list[pb.RangeRequest] = []
        self.leader_changes = 3
        self.keys = 7
        self.wal_fsync_seconds = DurationHistogram()
        for seconds in (0.0004, 0.0015, 0.0015, 9.0):
            self.wal_fsync_seconds.observe(seconds)
        self.backend_commit_seconds = DurationHistogram()

    async def alarm(self, req: pb.AlarmRequest) -> pb.AlarmResponse:
        assert req.action == pb.AlarmRequest.GET
        return pb.AlarmResponse(alarms=self.alarms)

    async def range(self, req: pb.RangeRequest) -> pb.RangeResponse:
        self.ranges.append(req)
        await asyncio.sleep(self.range_delay)
        if self.range_error is not None:
            raise self.range_error
        return pb.RangeResponse(count=self.keys)

    async def status(self, req: pb.StatusRequest) -> pb.StatusResponse:
        return pb.StatusResponse(
            header=pb.ResponseHeader(member_id=0xABC),
            leader=self.leader_id,
            raftIndex=42,
            raftAppliedIndex=41,
            dbSize=8192,
            dbSizeInUse=4096,
        )

    def pending_proposals(self) -> int:
        return 2

    def key_count(self) -> int:
        return self.keys

    def quota_bytes(self) -> int:
        return 1 << 31


async def _request(port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(1 << 20), 5)
    head, _, rest = data.partition(b"\r\n\r\n")
    while b"content-length" in head.lower() and len(rest) < _length(head):
        more = await asyncio.wait_for(reader.read(1 << 20), 5)
        if not more:
            break
        rest += more
    writer.close()
    return int(head.split(b" ")[1]), rest


def _length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


def _run(member: ScriptedMember, body: Any, timeout: float = 1.0) -> Any:
    async def main() -> Any:
        http = HttpEndpoints(member, [("127.0.0.1", 0)], timeout)
        await http.start()
        try:
            return await body(http.ports[0])
        finally:
            await http.stop()

    return asyncio.run(main())


def test_health_true_needs_no_alarm_a_leader_and_a_read() -> None:
    m = ScriptedMember()

    async def body(port: int) -> list[tuple[int, bytes]]:
        out = [await _request(port, _get("/health"))]
        m.leader_id = 0
        out.append(await _request(port, _get("/health")))
        out.append(await _request(port, _get("/health?serializable=true")))
        m.leader_id = 1
        m.alarms = [pb.AlarmMember(memberID=1, alarm=pb.NOSPACE)]
        out.append(await _request(port, _get("/health")))
        out.append(await _request(port, _get("/health?exclude=NOSPACE")))
        out.append(await _request(port, _get("/health?exclude=CORRUPT")))
        m.alarms = []
        m.range_delay = 3.0
        out.append(await _request(port, _get("/health")))
        m.range_delay = 0
        m.range_error = RuntimeError("etcdserver: request timed out")
        out.append(await _request(port, _get("/health")))
        return out

    got = _run(m, body)
    ok, bad = (200, b'{"health":"true"}'), (503, b'{"health":"false"}')
    assert got == [ok, bad, ok, bad, ok, bad, bad, bad]
    # the serializable check reads serializably, the others linearizably
    assert [r.serializable for r in m.ranges][:2] == [False, True]


def test_version_metrics_and_bad_requests() -> None:
    m = ScriptedMember()

    async def body(port: int) -> dict[str, tuple[int, bytes]]:
        out = {
            "version": await _request(port, _get("/version")),
            "health": await _request(port, _get("/health")),
            "metrics": await _request(port, _get("/metrics")),
            "post": await _request(
                port, b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            ),
            "missing": await _request(port, _get("/v2/keys")),
            "garbage": await _request(port, b"\x16\x03\x01 not http at all\r\n\r\n"),
            "huge": await _request(
                port, b"GET /health HTTP/1.1\r\nX: " + b"a" * 40000 + b"\r\n\r\n"
            ),
        }
        # the endpoint still answers after all that
        out["after"] = await _request(port, _get("/health"))
        return out

    got = _run(m, body)
    assert got["version"] == (200, b'{"etcdserver":"3.4.0","etcdcluster":"3.4.0"}')
    status, text = got["metrics"]
    assert status == 200
    lines = set(text.decode().splitlines())
    for line in (
        "etcd_server_has_leader 1.0",
        "etcd_server_is_leader 0.0",
        'etcd_server_id{server_id="abc"} 1.0',
        "etcd_server_leader_changes_seen_total 3.0",
        "etcd_server_proposals_committed_total 42.0",
        "etcd_server_proposals_applied_total 41.0",
        "etcd_server_proposals_pending 2.0",
        "etcd_mvcc_db_total_size_in_bytes 8192.0",
        "etcd_mvcc_db_total_size_in_use_in_bytes 4096.0",
        "etcd_debugging_mvcc_keys_total 7.0",
        "etcd_server_health_success 1.0",
        "etcd_server_health_failures 0.0",
        "# TYPE etcd_server_health_success counter",
        "# TYPE etcd_disk_wal_fsync_duration_seconds histogram",
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 1.0',
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 3.0',
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="8.192"} 3.0',
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 4.0',
        "etcd_disk_wal_fsync_duration_seconds_sum 9.0034",
        "etcd_disk_wal_fsync_duration_seconds_count 4.0",
        'etcd_disk_backend_commit_duration_seconds_bucket{le="+Inf"} 0.0',
        "etcd_disk_backend_commit_duration_seconds_count 0.0",
    ):
        assert line in lines, line
    assert got["post"][0] == 405
    assert got["missing"] == (404, b"404 page not found\n")
    assert got["garbage"][0] == 400
    assert got["huge"][0] == 400
    assert got["after"] == (200, b'{"health":"true"}')


def test_real_member_serves_metrics_url(tmp_path: Path) -> None:
    client, peer, metrics = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "keelson.cli.main", "serve",
            "--data-dir", str(tmp_path / "m"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--listen-metrics-urls", f"http://127.0.0.1:{metrics}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "log", "wb"),  # noqa: SIM115
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for_port(metrics, 30, proc)
        base = f"http://127.0.0.1:{metrics}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as r:
                    assert json.loads(r.read()) == {"health": "true"}
                    break
            except urllib.error.HTTPError:
                assert time.monotonic() < deadline, "never healthy"
                time.sleep(0.2)

        def scrape() -> dict[str, float]:
            with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
                text = r.read().decode()
            return {
                k: float(v)
                for k, _, v in (ln.rpartition(" ") for ln in text.splitlines())
                if k and not k.startswith("#")
            }

        before = scrape()
        with grpc.insecure_channel(f"127.0.0.1:{client}") as ch:
            kv = pbg.KVStub(ch)  # type: ignore[no-untyped-call]
            for i in range(5):
                kv.Put(pb.PutRequest(key=b"k%d" % i, value=b"v"), timeout=10)
        after = scrape()
        assert before["etcd_server_has_leader"] == 1.0
        keys = "etcd_debugging_mvcc_keys_total"
        assert after[keys] == before[keys] + 5
        applied = "etcd_server_proposals_applied_total"
        assert after[applied] >= before[applied] + 5
        assert after["process_resident_memory_bytes"] > 0
        # each put's entry was fsynced in the WAL; buckets are cumulative and end at +Inf
        fsyncs = "etcd_disk_wal_fsync_duration_seconds_count"
        assert after[fsyncs] >= before[fsyncs] + 5
        assert after['etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"}'] == after[fsyncs]
        assert after["etcd_disk_wal_fsync_duration_seconds_sum"] > 0
        assert "etcd_disk_backend_commit_duration_seconds_count" in after
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
