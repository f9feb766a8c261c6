"""Client workloads of a torture run: registers, appends, watchers and leases, as threads.

Theory of operation: every workload client is a thread with its own seeded
``random.Random`` that talks to one member (an *endpoint slot*, see ``Endpoints``) through
keelson's generated gRPC stubs, one operation at a time, each with a deadline. Every
operation is recorded once, when it completes or is given up on, in the format of
:mod:`.history` (registers, appends) or :mod:`.leasecheck` (leases), with invocation and
completion times from ``time.monotonic_ns()``.

Classification of errors (``classify``): a read that errs is ``fail`` (it had no effect); a
write refused before it could reach the member (connection refused) or with a definite
client error (invalid argument, not found, failed precondition...) is ``fail``; anything
else (deadline exceeded, connection lost, ``Unavailable``/``Unknown``/``Internal``) is
``info``: it may take effect at any later time.

All keys live under ``PREFIX`` so the watchers (one prefix watch each, from revision 1,
resumed on another member from their last revision + 1 after any error) see every write:
registers under ``t/r/``, append lists under ``t/a/``, lease keys under ``t/l/``. Register
keys rotate (each key takes at most ``REGISTER_OPS_PER_KEY`` ops) so the per-key
linearizability search stays small; lease keys are written once, with their lease, and
never otherwise touched (the lease checker's assumption).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from tests.torture.history import Op, Status, WatchEvent
from tests.torture.leasecheck import (
    DEFAULT_GRACE_NS,
    KeyObservation,
    LeaseAttach,
    LeaseGrant,
    LeaseHistory,
    LeaseKeepAlive,
    LeaseRevoke,
)

PREFIX = b"t/"
PREFIX_END = b"t0"
REGISTER_KEYS = 8
REGISTER_OPS_PER_KEY = 120
APPEND_KEYS = 5
OP_TIMEOUT = 2.0
READ_CODES_DEFINITE = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


def kv_stub(ch: grpc.Channel) -> pbg.KVStub:
    return pbg.KVStub(ch)  # type: ignore[no-untyped-call]


def lease_stub(ch: grpc.Channel) -> pbg.LeaseStub:
    return pbg.LeaseStub(ch)  # type: ignore[no-untyped-call]


def watch_stub(ch: grpc.Channel) -> pbg.WatchStub:
    return pbg.WatchStub(ch)  # type: ignore[no-untyped-call]


def now() -> int:
    return time.monotonic_ns()


def classify(exc: grpc.RpcError, *, is_write: bool) -> Status:
    """``fail`` when the error proves the op had no effect, else ``info``."""
    if not is_write:
        return "fail"
    code = exc.code() if isinstance(exc, grpc.Call) else None
    if code in READ_CODES_DEFINITE:
        return "fail"
    details = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
    if code == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details or "Connection refused" in details
    ):
        return "fail"
    return "info"


class Endpoints:
    """Which member each client slot talks to; a removed member's slot moves to a newcomer."""

    def __init__(self, channel_of: Callable[[str], grpc.Channel], names: list[str]) -> None:
        self._lock = threading.Lock()
        self._channel_of = channel_of
        self._names = list(names)

    def name(self, slot: int) -> str:
        with self._lock:
            return self._names[slot % len(self._names)]

    def channel(self, slot: int) -> grpc.Channel:
        return self._channel_of(self.name(slot))

    def replace(self, old: str, new: str) -> None:
        with self._lock:
            self._names = [new if n == old else n for n in self._names]

    def __len__(self) -> int:
        with self._lock:
            return len(self._names)


@dataclass
class Recorder:
    """The run's shared records; list appends are atomic under the GIL, counters locked."""

    ops: list[Op]
    watches: dict[str, list[WatchEvent]]
    leases: LeaseHistory

    def __init__(self) -> None:
        self.ops = []
        self.watches = {}
        self.leases = LeaseHistory()
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()

    def error(self, what: str, exc: grpc.RpcError) -> None:
        """Count an error by operation and gRPC code/message (for the run's stats line)."""
        if isinstance(exc, grpc.Call):
            text = f"{what}: {exc.code().name} {(exc.details() or '')[:60]}"
        else:
            text = f"{what}: {exc!r}"[:80]
        with self._lock:
            self.errors[text] += 1

    def op(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)


class Worker(threading.Thread):
    """A client thread: runs ``step`` until ``stop`` is set; never raises out of the thread."""

    def __init__(self, name: str, stop: threading.Event, rng: random.Random) -> None:
        super().__init__(name=name, daemon=True)
        self.stop = stop
        self.rng = rng
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
        except BaseException as exc:  # reported by the runner as a harness error
            self.error = exc

    def step(self) -> None:
        raise NotImplementedError

    def backoff(self) -> None:
        self.stop.wait(self.rng.uniform(0.05, 0.2))


# --- registers ---------------------------------------------------------------------------


class RegisterKeys:
    """The window of active register keys; a key retires after REGISTER_OPS_PER_KEY ops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = itertools.count()
        self._active = [self._fresh() for _ in range(REGISTER_KEYS)]
        self._used: dict[str, int] = {}

    def _fresh(self) -> str:
        return f"t/r/{next(self._next):05d}"

    def pick(self, rng: random.Random) -> str:
        with self._lock:
            i = rng.randrange(len(self._active))
            key = self._active[i]
            self._used[key] = self._used.get(key, 0) + 1
            if self._used[key] >= REGISTER_OPS_PER_KEY:
                self._active[i] = self._fresh()
            return key


class RegisterClient(Worker):
    """read / write / cas (Txn compare on value) on the rotating register keys."""

    def __init__(
        self,
        cid: int,
        stop: threading.Event,
        rng: random.Random,
        endpoints: Endpoints,
        keys: RegisterKeys,
        rec: Recorder,
        *,
        serializable_reads: bool = False,
    ) -> None:
        super().__init__(f"register-{cid}", stop, rng)
        self.serializable_reads = serializable_reads  # self-test only: stale reads allowed
        self.cid = cid
        self.endpoints = endpoints
        self.keys = keys
        self.rec = rec
        self.seq = itertools.count()
        self.seen: dict[str, str | None] = {}

    def step(self) -> None:
        key = self.keys.pick(self.rng)
        kv = kv_stub(self.endpoints.channel(self.cid))
        r = self.rng.random()
        known = self.seen.get(key)
        if r < 0.4:
            self.read(kv, key)
        elif r < 0.7 or known is None:
            self.write(kv, key)
        else:
            self.cas(kv, key, known)

    def _done(self, f: str, key: str, value: Any, t0: int, status: Status, result: Any) -> None:
        complete = now() if status != "info" else None
        self.rec.op(Op(self.cid, f, key, value, t0, complete, status, result))
        if status != "ok":
            self.backoff()

    def read(self, kv: pbg.KVStub, key: str) -> None:
        t0 = now()
        try:
            resp = kv.Range(
                pb.RangeRequest(key=key.encode(), serializable=self.serializable_reads),
                timeout=OP_TIMEOUT,
            )
        except grpc.RpcError as exc:
            self._done("read", key, None, t0, classify(exc, is_write=False), None)
            return
        value = resp.kvs[0].value.decode() if resp.kvs else None
        self.seen[key] = value
        self._done("read", key, None, t0, "ok", value)

    def write(self, kv: pbg.KVStub, key: str) -> None:
        value = f"{self.cid}.{next(self.seq)}"
        t0 = now()
        try:
            kv.Put(pb.PutRequest(key=key.encode(), value=value.encode()), timeout=OP_TIMEOUT)
        except grpc.RpcError as exc:
            self.rec.error("put", exc)
            self._done("write", key, value, t0, classify(exc, is_write=True), None)
            return
        self.seen[key] = value
        self._done("write", key, value, t0, "ok", None)

    def cas(self, kv: pbg.KVStub, key: str, expected: str) -> None:
        new = f"{self.cid}.{next(self.seq)}"
        req = pb.TxnRequest(
            compare=[
                pb.Compare(
                    result=pb.Compare.EQUAL,
                    target=pb.Compare.VALUE,
                    key=key.encode(),
                    value=expected.encode(),
                )
            ],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=key.encode(), value=new.encode()))],
        )
        t0 = now()
        try:
            resp = kv.Txn(req, timeout=OP_TIMEOUT)
        except grpc.RpcError as exc:
            self._done("cas", key, (expected, new), t0, classify(exc, is_write=True), None)
            return
        if resp.succeeded:
            self.seen[key] = new
            self._done("cas", key, (expected, new), t0, "ok", True)
        else:
            self.seen.pop(key, None)
            self._done("cas", key, (expected, new), t0, "fail", False)


# --- appends -------------------------------------------------------------------------------


def append_key(i: int) -> str:
    return f"t/a/{i}"


def decode_list(raw: bytes) -> list[int]:
    return [int(p) for p in raw.decode().split(",") if p]


def encode_list(values: list[int]) -> bytes:
    return ",".join(str(v) for v in values).encode()


class AppendValues:
    """Unique append values for the whole run (so unique per key)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = itertools.count(1)

    def take(self) -> int:
        with self._lock:
            return next(self._next)


def read_lists(kv: pbg.KVStub, keys: list[str]) -> dict[str, tuple[list[int], int]]:
    """Read ``keys`` in one (linearizable) read-only txn: key -> (list, mod_revision)."""
    resp = kv.Txn(
        pb.TxnRequest(
            success=[pb.RequestOp(request_range=pb.RangeRequest(key=k.encode())) for k in keys]
        ),
        timeout=OP_TIMEOUT,
    )
    out: dict[str, tuple[list[int], int]] = {}
    for k, r in zip(keys, resp.responses, strict=True):
        kvs = r.response_range.kvs
        out[k] = (decode_list(kvs[0].value), kvs[0].mod_revision) if kvs else ([], 0)
    return out


def run_micro_ops(
    mops: tuple[tuple[str, str, Any], ...], lists: dict[str, list[int]]
) -> tuple[tuple[tuple[str, str, Any], ...], dict[str, list[int]]]:
    """Apply micro-ops to copies of ``lists``: (micro-ops with reads filled in, new lists)."""
    state = {k: list(v) for k, v in lists.items()}
    result = []
    for f, k, v in mops:
        if f == "append":
            state[k].append(v)
            result.append((f, k, v))
        else:
            result.append((f, k, tuple(state[k])))
    return tuple(result), state


class AppendClient(Worker):
    """Txns of appends and reads over a few list keys: read, then compare-mod_revision txn."""

    def __init__(
        self,
        cid: int,
        stop: threading.Event,
        rng: random.Random,
        endpoints: Endpoints,
        values: AppendValues,
        rec: Recorder,
    ) -> None:
        super().__init__(f"append-{cid}", stop, rng)
        self.cid = cid
        self.endpoints = endpoints
        self.values = values
        self.rec = rec

    def step(self) -> None:
        keys = sorted(self.rng.sample(range(APPEND_KEYS), self.rng.randint(1, 2)))
        mops: list[tuple[str, str, Any]] = []
        for _ in range(self.rng.randint(1, 3)):
            k = append_key(self.rng.choice(keys))
            if self.rng.random() < 0.5:
                mops.append(("append", k, self.values.take()))
            else:
                mops.append(("r", k, None))
        self.txn(kv_stub(self.endpoints.channel(self.cid)), tuple(mops))

    def _done(self, value: Any, t0: int, status: Status, result: Any) -> None:
        complete = now() if status != "info" else None
        self.rec.op(Op(self.cid, "txn", "", value, t0, complete, status, result))
        if status != "ok":
            self.backoff()

    def txn(self, kv: pbg.KVStub, mops: tuple[tuple[str, str, Any], ...]) -> None:
        keys = sorted({k for _, k, _ in mops})
        written = sorted({k for f, k, _ in mops if f == "append"})
        t0 = now()
        try:
            read = read_lists(kv, keys)
        except grpc.RpcError:
            self._done(mops, t0, "fail", None)  # nothing was written yet
            return
        result, state = run_micro_ops(mops, {k: v for k, (v, _) in read.items()})
        if not written:
            self._done(mops, t0, "ok", result)
            return
        req = pb.TxnRequest(
            compare=[
                pb.Compare(
                    result=pb.Compare.EQUAL,
                    target=pb.Compare.MOD,
                    key=k.encode(),
                    mod_revision=read[k][1],
                )
                for k in keys
            ],
            success=[
                pb.RequestOp(request_put=pb.PutRequest(key=k.encode(), value=encode_list(state[k])))
                for k in written
            ],
        )
        try:
            resp = kv.Txn(req, timeout=OP_TIMEOUT)
        except grpc.RpcError as exc:
            self._done(mops, t0, classify(exc, is_write=True), None)
            return
        self._done(mops, t0, "ok" if resp.succeeded else "fail", result if resp.succeeded else None)


# --- watchers ------------------------------------------------------------------------------


class Watcher(Worker):
    """A prefix watch from revision 1; after any error, resumes on the next member."""

    def __init__(
        self,
        wid: int,
        stop: threading.Event,
        rng: random.Random,
        endpoints: Endpoints,
        rec: Recorder,
    ) -> None:
        super().__init__(f"watcher-{wid}", stop, rng)
        self.wid = wid
        self.slot = wid
        self.endpoints = endpoints
        self.events: list[WatchEvent] = []
        rec.watches[self.name] = self.events
        self.next_revision = 1
        self.reconnects = 0
        self.last_progress = time.monotonic()
        self._call: Any = None
        self._call_lock = threading.Lock()

    @property
    def last_revision(self) -> int:
        return self.next_revision - 1

    def kick(self) -> None:
        """Drop the current stream (the watcher resumes on another member)."""
        with self._call_lock:
            if self._call is not None:
                self._call.cancel()

    def stop_now(self) -> None:
        self.stop.set()
        self.kick()

    def step(self) -> None:
        done = threading.Event()
        create = pb.WatchRequest(
            create_request=pb.WatchCreateRequest(
                key=PREFIX, range_end=PREFIX_END, start_revision=self.next_revision
            )
        )

        def requests() -> Iterator[pb.WatchRequest]:
            yield create
            while not done.is_set() and not self.stop.is_set():
                done.wait(0.5)

        stub = watch_stub(self.endpoints.channel(self.slot))
        try:
            call = stub.Watch(requests())
            with self._call_lock:
                self._call = call
            if self.stop.is_set():
                call.cancel()
            for resp in call:
                if resp.canceled or resp.compact_revision:
                    break
                for ev in resp.events:
                    kv = ev.kv
                    rev = kv.mod_revision
                    if ev.type == ev.PUT:
                        self.events.append(
                            WatchEvent(rev, kv.key.decode(), "put", kv.value.decode(), rev)
                        )
                    else:
                        self.events.append(WatchEvent(rev, kv.key.decode(), "delete", None, rev))
                    self.next_revision = max(self.next_revision, rev + 1)
                    self.last_progress = time.monotonic()
        except grpc.RpcError:
            pass
        finally:
            done.set()
            with self._call_lock:
                self._call = None
        if not self.stop.is_set():
            self.reconnects += 1
            self.slot += 1
            self.stop.wait(0.2)


# --- leases --------------------------------------------------------------------------------


class LeaseClient(Worker):
    """Grant a lease (client-chosen id), attach keys, keep it alive a while, observe the keys,
    then revoke it or let it expire while still observing."""

    def __init__(
        self,
        cid: int,
        stop: threading.Event,
        rng: random.Random,
        endpoints: Endpoints,
        rec: Recorder,
    ) -> None:
        super().__init__(f"lease-{cid}", stop, rng)
        self.cid = cid
        self.endpoints = endpoints
        self.h = rec.leases
        self.rec = rec
        self.seq = itertools.count(1)
        self.granted: list[int] = []

    def _lease(self) -> pbg.LeaseStub:
        return lease_stub(self.endpoints.channel(self.cid))

    def _kv(self) -> pbg.KVStub:
        return kv_stub(self.endpoints.channel(self.cid))

    def step(self) -> None:
        lease_id = ((self.cid + 1) << 32) | next(self.seq)
        ttl = self.rng.randint(2, 4)
        t0 = now()
        try:
            resp = self._lease().LeaseGrant(
                pb.LeaseGrantRequest(ID=lease_id, TTL=ttl), timeout=OP_TIMEOUT
            )
        except grpc.RpcError as exc:
            st: Status = classify(exc, is_write=True)
            self.rec.error("lease grant", exc)
            self.h.grants.append(LeaseGrant(lease_id, ttl, t0, None if st == "info" else now(), st))
            if st == "info":
                self.granted.append(lease_id)
            self.stop.wait(0.5)  # a member down stays down for seconds: don't spin
            return
        self.h.grants.append(LeaseGrant(lease_id, int(resp.TTL), t0, now(), "ok"))
        self.granted.append(lease_id)
        ttl = int(resp.TTL)
        keys = [f"t/l/{lease_id:x}/{i}" for i in range(self.rng.randint(1, 2))]
        for key in keys:
            t0 = now()
            try:
                self._kv().Put(
                    pb.PutRequest(key=key.encode(), value=b"x", lease=lease_id), timeout=OP_TIMEOUT
                )
                st = "ok"
            except grpc.RpcError as exc:
                st = classify(exc, is_write=True)
            self.h.attaches.append(
                LeaseAttach(key, lease_id, t0, None if st == "info" else now(), st)
            )
        alive_until = time.monotonic() + self.rng.uniform(0.5, 3 * ttl)
        while time.monotonic() < alive_until and not self.stop.is_set():
            if not self.keepalive(lease_id):
                break
            self.observe(keys)
            self.stop.wait(min(ttl / 3, 1.0))
        if self.stop.is_set():
            return
        if self.rng.random() < 0.5:
            self.revoke(lease_id)
        # Observe past the latest moment the lease may still live (the checker's bound:
        # last refresh + TTL + grace), so a lease that outlives it is seen: late-expiry.
        grace = DEFAULT_GRACE_NS / 1e9
        end = time.monotonic() + ttl + grace + self.rng.uniform(0.5, 2.0)
        while time.monotonic() < end and not self.stop.is_set():
            self.observe(keys)
            self.stop.wait(0.3)

    def keepalive(self, lease_id: int) -> bool:
        """One keep-alive round trip on its own stream; False once the lease is gone."""
        t0 = now()
        try:
            call = self._lease().LeaseKeepAlive(
                iter([pb.LeaseKeepAliveRequest(ID=lease_id)]), timeout=OP_TIMEOUT
            )
            resp = next(iter(call))
            call.cancel()
        except (grpc.RpcError, StopIteration) as exc:
            st = classify(exc, is_write=True) if isinstance(exc, grpc.RpcError) else "info"
            self.h.keepalives.append(
                LeaseKeepAlive(lease_id, t0, None if st == "info" else now(), st)
            )
            return True
        ttl = int(resp.TTL)
        self.h.keepalives.append(LeaseKeepAlive(lease_id, t0, now(), "ok", ttl))
        return ttl > 0

    def revoke(self, lease_id: int, timeout: float = OP_TIMEOUT) -> Status:
        t0 = now()
        try:
            self._lease().LeaseRevoke(pb.LeaseRevokeRequest(ID=lease_id), timeout=timeout)
            st: Status = "ok"
        except grpc.RpcError as exc:
            st = classify(exc, is_write=True)
        self.h.revokes.append(LeaseRevoke(lease_id, t0, None if st == "info" else now(), st))
        return st

    def observe(self, keys: list[str]) -> None:
        for key in keys:
            t0 = now()
            try:
                resp = self._kv().Range(pb.RangeRequest(key=key.encode()), timeout=OP_TIMEOUT)
            except grpc.RpcError:
                self.h.observations.append(KeyObservation(key, t0, now(), "fail", False))
                continue
            self.h.observations.append(KeyObservation(key, t0, now(), "ok", bool(resp.kvs)))
