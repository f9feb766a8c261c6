"""Stateful property test: KVStore against the in-memory model of etcd's semantics.

Random puts, deletes, txns, ranges at random revisions with random options, compactions
(with unfinished physical compaction) and restarts drive both; every response and every
error must agree. A watcher on the whole key space (with a tiny queue, so it keeps falling
behind and catching up) must see exactly the model's changes, revision by revision.
Derandomized, so a failure replays by re-running the test; hypothesis prints the failing
step sequence.
"""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from keelson.backend import Backend
from keelson.mvcc import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    Event,
    KVStore,
    MvccError,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
    WatchableStore,
    prefix_end,
)
from tests.mvcc.model import Model

KEYS = [b"a", b"ab", b"b", b"c", b"c\xff"]
keys = st.sampled_from(KEYS)
values = st.sampled_from([b"", b"x", b"y", b"zz"])


@st.composite
def key_ranges(draw: st.DrawFn) -> tuple[bytes, bytes]:
    kind = draw(st.sampled_from(["single", "range", "prefix", "from", "all"]))
    k = draw(keys)
    if kind == "single":
        return k, b""
    if kind == "range":
        return k, draw(st.sampled_from([*KEYS, b"d"]))
    if kind == "prefix":
        return k, prefix_end(k)
    if kind == "from":
        return k, b"\0"
    return b"\0", b"\0"


def range_requests(max_rev: int) -> st.SearchStrategy[RangeRequest]:
    revs = st.integers(0, max_rev + 1)
    return st.builds(
        lambda kr, **kw: RangeRequest(kr[0], kr[1], **kw),
        key_ranges(),
        limit=st.sampled_from([0, 0, 1, 2]),
        revision=st.one_of(st.just(0), revs),
        sort_order=st.sampled_from(list(SortOrder)),
        sort_target=st.sampled_from(list(SortTarget)),
        keys_only=st.booleans(),
        count_only=st.sampled_from([False, False, False, True]),
        min_mod_revision=st.one_of(st.just(0), revs),
        max_mod_revision=st.one_of(st.just(0), revs),
        min_create_revision=st.one_of(st.just(0), revs),
        max_create_revision=st.one_of(st.just(0), revs),
    )


puts = st.builds(PutRequest, keys, values, prev_kv=st.booleans())
deletes = st.builds(
    lambda kr, p: DeleteRangeRequest(kr[0], kr[1], prev_kv=p), key_ranges(), st.booleans()
)


def compares(max_rev: int) -> st.SearchStrategy[Compare]:
    return st.builds(
        Compare,
        keys,
        st.sampled_from([CompareTarget.VALUE, CompareTarget.VERSION, CompareTarget.CREATE,
                         CompareTarget.MOD]),
        st.sampled_from(list(CompareResult)),
        value=values,
        number=st.integers(0, max_rev + 1),
    )


class KVStoreVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="keelson-mvcc-model-")
        self.backend = Backend(self.dir, buckets=KVStore.BUCKETS, map_size=64 << 20)
        self.store = KVStore(self.backend, compaction_batch_limit=2)
        self.model = Model()
        self._open_watch()

    def _open_watch(self) -> None:
        self.ws = WatchableStore(self.store)
        self.stream = self.ws.new_stream(max_pending=2)
        self._rewatch(max(1, self.model.compact_rev))

    def _rewatch(self, start: int) -> None:
        self.watch_from = start
        self.seen: list[tuple[int, list[Event]]] = []
        self.watch_id = self.stream.watch(b"\0", b"\0", start_rev=start)

    def _collect(self) -> None:
        for r in self.stream.poll():
            assert r.watch_id == self.watch_id
            if r.compact_revision:
                assert r.canceled and r.compact_revision == self.model.compact_rev
                self._rewatch(r.compact_revision)
                continue
            for ev in r.events:
                rev = ev.kv.mod_revision
                if self.seen and self.seen[-1][0] == rev:
                    self.seen[-1][1].append(ev)
                else:
                    assert not self.seen or self.seen[-1][0] < rev
                    self.seen.append((rev, [ev]))

    def _check_watch(self, complete: bool) -> None:
        revs = [r for r in range(self.watch_from, self.model.current + 1)
                if self.model.events[r]]
        got = [r for r, _ in self.seen]
        if complete:
            assert got == revs
        else:
            assert got == revs[: len(got)]
        for rev, evs in self.seen:
            assert evs == self.model.events[rev]

    def teardown(self) -> None:
        self.backend.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _both(self, write: bool, store_call: object, model_call: object) -> None:
        got: object
        want: object
        try:
            if write:
                with self.store.batch() as btx:
                    got = store_call(btx)  # type: ignore[operator]
            else:
                got = store_call()  # type: ignore[operator]
        except MvccError as e:
            got = type(e)
        try:
            want = model_call()  # type: ignore[operator]
        except MvccError as e:
            want = type(e)
        assert got == want

    @rule(req=puts)
    def put(self, req: PutRequest) -> None:
        self._both(True, lambda btx: self.store.put(btx, req), lambda: self.model.put(req))

    @rule(req=deletes)
    def delete(self, req: DeleteRangeRequest) -> None:
        self._both(
            True,
            lambda btx: self.store.delete_range(btx, req),
            lambda: self.model.delete_range(req),
        )

    @rule(data=st.data())
    def txn(self, data: st.DataObject) -> None:
        cur = self.model.current
        ops = st.lists(st.one_of(puts, deletes, range_requests(cur)), max_size=3).map(tuple)
        req = TxnRequest(
            compare=tuple(data.draw(st.lists(compares(cur), max_size=2))),
            success=data.draw(ops),
            failure=data.draw(ops),
        )
        self._both(True, lambda btx: self.store.txn(btx, req), lambda: self.model.txn(req))

    @rule(data=st.data())
    def range(self, data: st.DataObject) -> None:
        req = data.draw(range_requests(self.model.current))
        self._both(False, lambda: self.store.range(req), lambda: self.model.range(req))

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        rev = data.draw(st.integers(0, self.model.current + 1))
        self._both(
            True, lambda btx: self.store.compact(btx, rev), lambda: self.model.compact(rev)
        )

    @precondition(lambda self: self.store.compaction_pending())
    @rule()
    def compaction_step(self) -> None:
        self.store.compaction_step()

    @rule(n=st.integers(1, 4))
    def sync_watchers(self, n: int) -> None:
        self.ws.sync_watchers(max_revisions=n)
        self._collect()

    @rule()
    def restart(self) -> None:
        while not self.ws.sync_watchers(max_revisions=3) or self.stream.has_pending:
            self._collect()
        self._check_watch(complete=True)
        before = self.store.hash_kv(0)
        self.backend.close()
        self.backend = Backend(self.dir, buckets=KVStore.BUCKETS, map_size=64 << 20)
        self.store = KVStore(self.backend, compaction_batch_limit=2)
        assert self.store.hash_kv(0) == before
        self._open_watch()

    @invariant()
    def revisions_agree(self) -> None:
        assert self.store.current_revision == self.model.current
        assert self.store.compact_revision == self.model.compact_rev
        assert self.store.key_count() == len(self.model.snapshots[-1])
        self.store.check()
        self._collect()
        self._check_watch(complete=False)


KVStoreVsModel.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_kvstore_matches_model = KVStoreVsModel.TestCase
