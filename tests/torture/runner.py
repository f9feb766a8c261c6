"""One torture run: cluster up, workloads on, faults on a seeded schedule, heal, check.

Theory of operation: ``run(config)`` starts ``config.nodes`` members behind the proxy,
starts the workload threads, then for ``config.seconds`` minus the quiet period alternates
calm / inject / hold / heal (one fault at a time, chosen by ``random.Random(seed)``), waiting
after each heal until the cluster has a leader again. Then it heals everything, keeps the
workloads running through a quiet period so the cluster converges, stops the clients,
revokes every lease it granted, reads the final state (one read-only txn over the append
keys, recorded as an op, and one range over the whole workload prefix), waits until every
watcher reached the final revision, stops the members and runs the checkers
(:func:`.check.check_all`). Members that exited on their own, a cluster that does not
recover, and client threads that died are reported as anomalies of checker ``harness``.

Everything a run records (ops, watch streams, lease history, fault log, member logs and
data dirs) lives in ``Result.directory``; it is deleted after a clean run unless
``keep`` is set. Invariant: every process the run started is stopped before ``run``
returns (``TortureCluster.stop_all`` in a ``finally``).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from tests.torture.check import check_all
from tests.torture.faults import BASE_KINDS, MEMBERSHIP_KINDS, Faults
from tests.torture.history import Anomaly, Op
from tests.torture.nodes import TortureCluster
from tests.torture.workloads import (
    APPEND_KEYS,
    PREFIX,
    PREFIX_END,
    AppendClient,
    AppendValues,
    Endpoints,
    LeaseClient,
    Recorder,
    RegisterClient,
    RegisterKeys,
    Watcher,
    Worker,
    append_key,
    decode_list,
    kv_stub,
    lease_stub,
    now,
)

HARNESS = "harness"
# Membership changes (a learner joining over the network after MemberAdd, promote, remove)
# are in the default schedule; --no-membership takes them out.
MEMBERSHIP_BY_DEFAULT = True


@dataclass
class Config:
    """What one run does; ``seed`` alone decides every choice the run makes."""

    seed: int
    seconds: float = 60.0
    nodes: int = 3
    membership: bool = MEMBERSHIP_BY_DEFAULT
    kinds: tuple[str, ...] = ()
    quiet_seconds: float = 5.0
    keep: bool = False
    directory: Path | None = None
    register_clients: int = 4
    append_clients: int = 2
    watchers: int = 3
    lease_clients: int = 1
    # Self-test of the whole pipeline: serializable (local, possibly stale) register reads,
    # which partitions and pauses must expose as non-linearizable.
    serializable_reads: bool = False

    def fault_kinds(self) -> tuple[str, ...]:
        if self.kinds:
            return self.kinds
        return BASE_KINDS + (MEMBERSHIP_KINDS if self.membership else ())

    def replay_command(self) -> str:
        extra = ""
        if self.membership != MEMBERSHIP_BY_DEFAULT:
            extra = " --membership" if self.membership else " --no-membership"
        if self.kinds:
            extra += " --faults " + ",".join(self.kinds)
        if self.serializable_reads:
            extra += " --serializable-reads"
        return (
            f"python -m tests.torture --seed {self.seed} --time {self.seconds:g} "
            f"--nodes {self.nodes}{extra}"
        )


@dataclass
class Result:
    config: Config
    operations: int
    faults: int
    anomalies: list[Anomaly]
    directory: Path
    kept: bool
    fault_log: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The last line of a run's output."""
        return (
            f"{self.operations} operations, {self.faults} faults, {len(self.anomalies)} anomalies"
        )

    def report(self) -> str:
        """Every anomaly (with the seed and replay command), then the summary line."""
        lines = []
        for a in self.anomalies:
            lines.append(f"anomaly (seed {self.config.seed}): {a}")
        if self.anomalies:
            lines.append(f"reproduce: {self.config.replay_command()}")
        if self.kept:
            lines.append(f"data dirs, logs and histories kept in {self.directory}")
        lines.append(self.summary())
        return "\n".join(lines)


class _Log:
    """Timestamped lines to the fault log (and stderr when verbose)."""

    def __init__(self, verbose: bool) -> None:
        self.t0 = time.monotonic()
        self.lines: list[str] = []
        self.verbose = verbose

    def __call__(self, line: str) -> None:
        text = f"[{time.monotonic() - self.t0:7.2f}s] {line}"
        self.lines.append(text)
        if self.verbose:
            print(text, file=sys.stderr, flush=True)


T = TypeVar("T")


def _retry(what: str, fn: Callable[[], T], log: _Log, seconds: float = 60.0) -> T:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except grpc.RpcError as exc:
            if time.monotonic() > deadline:
                raise
            log(f"{what}: {exc.code() if isinstance(exc, grpc.Call) else exc}; retrying")
            time.sleep(0.3)


def run(config: Config, *, verbose: bool = False) -> Result:
    """Run one torture schedule and check it; never leaves a process behind."""
    base = config.directory or Path(tempfile.mkdtemp(prefix=f"keelson-torture-{config.seed}-"))
    base.mkdir(parents=True, exist_ok=True)
    log = _Log(verbose)
    rng = random.Random(config.seed)
    rec = Recorder()
    anomalies: list[Anomaly] = []
    fault_count = 0
    cluster = TortureCluster(base, config.nodes)
    stop_clients = threading.Event()
    stop_watchers = threading.Event()
    workers: list[Worker] = []
    watchers: list[Watcher] = []
    log(f"seed {config.seed}, {config.nodes} members, {config.seconds:g}s, data in {base}")
    try:
        cluster.start_all()
        cluster.wait_ready(90)
        endpoints = Endpoints(
            lambda name: cluster.channel(cluster.node(name)), [n.name for n in cluster.members]
        )

        def sub_rng() -> random.Random:
            return random.Random(rng.getrandbits(64))

        keys = RegisterKeys()
        values = AppendValues()
        for i in range(config.register_clients):
            workers.append(
                RegisterClient(
                    i,
                    stop_clients,
                    sub_rng(),
                    endpoints,
                    keys,
                    rec,
                    serializable_reads=config.serializable_reads,
                )
            )
        for i in range(config.append_clients):
            cid = 100 + i
            workers.append(AppendClient(cid, stop_clients, sub_rng(), endpoints, values, rec))
        for i in range(config.lease_clients):
            workers.append(LeaseClient(200 + i, stop_clients, sub_rng(), endpoints, rec))
        for i in range(config.watchers):
            watchers.append(Watcher(i, stop_watchers, sub_rng(), endpoints, rec))
        for w in [*watchers, *workers]:
            w.start()
        monitor = TermMonitor(cluster, rec, stop_watchers)
        monitor.start()

        faults = Faults(cluster, endpoints, random.Random(rng.getrandbits(64)), log)
        kinds = config.fault_kinds()
        fault_end = time.monotonic() + max(0.0, config.seconds - config.quiet_seconds)
        while True:
            time.sleep(rng.uniform(1.0, 3.0))
            if time.monotonic() >= fault_end:
                break
            kind = rng.choice(kinds)
            start = now()
            heal = faults.inject(kind)
            fault_count += 1
            time.sleep(faults.hold_time())
            heal()
            if not _recover(cluster, log):
                anomalies.append(
                    Anomaly(HARNESS, "no-recovery", f"no leader 60 s after healing {kind}")
                )
                break
            rec.leases.unstable.append((start, now() + 2 * cluster.election_ms * 1_000_000))

        # Heal everything, converge under load, then stop the clients.
        cluster.proxy.heal()
        for n in cluster.live():
            cluster.resume(n)
            if not n.running():
                cluster.start(n, state=n.start_state)
        if not _recover(cluster, log):
            anomalies.append(Anomaly(HARNESS, "no-recovery", "no leader 60 s after the last heal"))
        log(f"quiet period {config.quiet_seconds:g}s")
        time.sleep(config.quiet_seconds)
        stop_clients.set()
        for w in workers:
            w.join(30)
            if w.is_alive():
                anomalies.append(Anomaly(HARNESS, "client-hang", f"{w.name} did not stop in 30 s"))
            if w.error is not None:
                anomalies.append(Anomaly(HARNESS, "client-error", f"{w.name}: {w.error!r}"))

        _revoke_all(cluster, rec, log)
        final_kv, final_revision = _final_state(cluster, rec, log)
        log(f"final revision {final_revision}, {len(final_kv)} keys, {monitor.elections} elections")
        _await_watchers(watchers, final_revision, log)
        anomalies.extend(_crashes(cluster))
    except Exception as exc:
        anomalies.append(Anomaly(HARNESS, "harness-error", repr(exc)))
        final_kv, final_revision = {}, 0
    finally:
        stop_clients.set()
        stop_watchers.set()
        for w in watchers:
            w.stop_now()
        cluster.stop_all()
        for w in [*watchers, *workers]:
            w.join(10)

    ops = [
        Op(o.client, o.f, o.key, o.value, o.invoke, o.complete, o.status, o.result, index=i)
        for i, o in enumerate(rec.ops)
    ]
    if final_revision:
        t = time.monotonic()
        anomalies.extend(
            check_all(
                ops,
                rec.watches,
                final_kv,
                final_revision,
                rec.leases,
                require_complete_watches=True,
            )
        )
        log(f"checked in {time.monotonic() - t:.1f}s")
    log(_stats(ops, rec))
    h = rec.leases
    lease_ops = len(h.grants) + len(h.keepalives) + len(h.revokes) + len(h.attaches)
    lease_ops += len(h.observations)
    _write_records(base, ops, rec, log, anomalies)
    kept = bool(anomalies) or config.keep
    if not kept:
        shutil.rmtree(base, ignore_errors=True)
    return Result(config, len(ops) + lease_ops, fault_count, anomalies, base, kept, log.lines)


class TermMonitor(threading.Thread):
    """Polls the members' raft terms; every rise adds an ``unstable`` window for the lease
    checker (an election the schedule did not cause, e.g. on a loaded machine, restarts
    every lease's TTL at the new leader just like one it did)."""

    def __init__(self, cluster: TortureCluster, rec: Recorder, stop: threading.Event) -> None:
        super().__init__(name="term-monitor", daemon=True)
        self.cluster = cluster
        self.rec = rec
        self.stop = stop
        self.elections = 0

    def run(self) -> None:
        margin = 2 * self.cluster.election_ms * 1_000_000
        term = 0
        since = now()
        while not self.stop.wait(0.5):
            try:
                terms = [
                    s.raftTerm
                    for n in list(self.cluster.live())
                    if (s := self.cluster.status(n, timeout=0.5)) is not None
                ]
            except Exception:  # a member list changing under us: try again next round
                continue
            t = now()
            if terms and max(terms) > term:
                if term:
                    self.elections += 1
                    self.rec.leases.unstable.append((since, t + margin))
                term = max(terms)
            since = t


def _stats(ops: list[Op], rec: Recorder) -> str:
    """One line of counts: ops by function and status, watch events, lease records."""
    counts: dict[str, dict[str, int]] = {}
    for op in ops:
        by = counts.setdefault(op.f, {})
        by[op.status] = by.get(op.status, 0) + 1
    parts = [
        f"{f} " + "/".join(f"{by.get(st, 0)} {st}" for st in ("ok", "fail", "info"))
        for f, by in sorted(counts.items())
    ]
    parts.append(f"watch events {sum(len(v) for v in rec.watches.values())}")
    h = rec.leases
    parts.append(
        f"leases {len(h.grants)} grants, {len(h.keepalives)} keep-alives, "
        f"{len(h.revokes)} revokes, {len(h.attaches)} attaches, {len(h.observations)} reads"
    )
    common = ", ".join(f"{n}x {text}" for text, n in rec.errors.most_common(4))
    if common:
        parts.append(f"most common errors: {common}")
    return "; ".join(parts)


def _recover(cluster: TortureCluster, log: _Log) -> bool:
    try:
        lead = cluster.wait_ready(60)
    except TimeoutError:
        log("cluster did not recover a leader in 60 s")
        return False
    log(f"leader {lead.name}")
    return True


def _any_kv(cluster: TortureCluster) -> pbg.KVStub:
    lead = cluster.leader() or next(n for n in cluster.live() if n.running())
    return kv_stub(cluster.channel(lead))


def _revoke_all(cluster: TortureCluster, rec: Recorder, log: _Log) -> None:
    """Revoke every lease granted (or maybe granted), so nothing expires after the final read."""
    ids = sorted({g.lease_id for g in rec.leases.grants if g.status != "fail"})
    for lease_id in ids:

        def revoke(lease_id: int = lease_id) -> None:
            lead = cluster.leader() or next(n for n in cluster.live() if n.running())
            try:
                lease_stub(cluster.channel(lead)).LeaseRevoke(
                    pb.LeaseRevokeRequest(ID=lease_id), timeout=5.0
                )
            except grpc.RpcError as exc:
                if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND:
                    return
                raise

        _retry(f"revoke {lease_id:x}", revoke, log)


def _final_state(
    cluster: TortureCluster, rec: Recorder, log: _Log
) -> tuple[dict[str, tuple[str, int]], int]:
    """Record the final read-only append txn, then read the whole prefix: (kv, revision)."""
    keys = [append_key(i) for i in range(APPEND_KEYS)]
    mops = tuple(("r", k, None) for k in keys)

    def read_appends() -> None:
        t0 = now()
        resp = _any_kv(cluster).Txn(
            pb.TxnRequest(
                success=[pb.RequestOp(request_range=pb.RangeRequest(key=k.encode())) for k in keys]
            ),
            timeout=5.0,
        )
        lists = [
            tuple(decode_list(r.response_range.kvs[0].value)) if r.response_range.kvs else ()
            for r in resp.responses
        ]
        result = tuple(("r", k, v) for k, v in zip(keys, lists, strict=True))
        rec.op(Op(-1, "txn", "", mops, t0, now(), "ok", result))

    _retry("final append read", read_appends, log)

    def read_all() -> tuple[dict[str, tuple[str, int]], int]:
        resp = _any_kv(cluster).Range(
            pb.RangeRequest(key=PREFIX, range_end=PREFIX_END), timeout=10.0
        )
        kv = {k.key.decode(): (k.value.decode(), k.mod_revision) for k in resp.kvs}
        return kv, int(resp.header.revision)

    return _retry("final read", read_all, log)


def _await_watchers(watchers: list[Watcher], revision: int, log: _Log) -> None:
    """Wait (60 s at most) until every watcher saw ``revision``; kick a stalled stream."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        behind = [w for w in watchers if w.last_revision < revision]
        if not behind:
            return
        for w in behind:
            if time.monotonic() - w.last_progress > 10:
                log(f"{w.name} stalled at {w.last_revision}; reconnecting")
                w.last_progress = time.monotonic()
                w.kick()
        time.sleep(0.2)
    log("watchers behind: " + ", ".join(f"{w.name}@{w.last_revision}" for w in watchers))


def _crashes(cluster: TortureCluster) -> list[Anomaly]:
    out = []
    for name, rc in cluster.crashed():
        tail = ""
        path = cluster.base / f"{name}.log"
        if path.exists():
            tail = "\n".join(path.read_text(errors="replace").splitlines()[-15:])
        out.append(Anomaly(HARNESS, "member-exited", f"{name} exited with {rc}:\n{tail}"))
    return out


def _write_records(
    base: Path, ops: list[Op], rec: Recorder, log: _Log, anomalies: list[Anomaly]
) -> None:
    with open(base / "history.jsonl", "w") as f:
        for op in ops:
            f.write(op.to_json() + "\n")
    with open(base / "watches.json", "w") as f:
        json.dump({k: [asdict(e) for e in v] for k, v in rec.watches.items()}, f)
    with open(base / "leases.json", "w") as f:
        json.dump(asdict(rec.leases), f)
    (base / "faults.log").write_text("\n".join(log.lines) + "\n")
    (base / "anomalies.txt").write_text("\n\n".join(str(a) for a in anomalies) + "\n")
