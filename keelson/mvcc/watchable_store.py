"""The watchable store: delivers the key space's changes to watchers (etcd's
watchable_store.go semantics, sans I/O).

Theory of operation. Every watcher is in one of two groups. A *synced* watcher has been sent
everything up to the newest published revision; the store's changes listener hands it the
events of each committed write txn at once (``_notify_changes``, which builds the events
only while some watcher is synced). An *unsynced* watcher starts in the
past, or fell behind because its stream's queue was full when a revision was published (it is
then moved to unsynced with ``min_rev`` at that revision, so nothing is lost). The server calls
``sync_watchers`` periodically or after writes: it reads at most ``max_revisions`` revisions of
history from the ``key`` bucket, starting at the smallest ``min_rev`` of the unsynced watchers
whose streams have room, hands each its events, and moves those that reached the published
revision to synced. An unsynced watcher whose ``min_rev`` is below the compact revision gets
a response with ``compact_revision`` set and ``canceled`` true, and is removed.

Invariants: an unsynced watcher's ``min_rev`` only grows and it has been sent every matching
event below it; a synced watcher has been sent every matching event up to the published
revision (its ``min_rev`` matters only while above it: a start revision in the future);
watchers are iterated in creation order (never hash order). A write looks only at the synced
watchers of the keys it changed and at the synced range watchers. The responses of one
write to the synced watchers that take all of its events (and no ``prev_kv``) share one
``events`` tuple, so a front end can encode those events once per write (by identity)
rather than once per watcher.
``prev_kv`` is read from history at ``mod_revision - 1`` and omitted if that was compacted.

Threading: like KVStore, one thread calls everything; ``sync_watchers`` does bounded work, so
writes interleave with catch-up. Watchers live in memory only: a restart forgets them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from operator import itemgetter

from keelson.mvcc.errors import CompactedError
from keelson.mvcc.keyvalue import Change, Event, EventType, KeyValue, decode_kv
from keelson.mvcc.kvstore import KVStore, changes_to_events
from keelson.mvcc.revision import KEY_BUCKET, bytes_to_rev, is_tombstone, main_rev_start
from keelson.mvcc.txn import TxnRead
from keelson.mvcc.watcher import (
    DEFAULT_MAX_PENDING,
    Watcher,
    WatchFilter,
    WatchResponse,
    WatchStream,
)

DEFAULT_SYNC_REVISIONS = 1000
"""Revisions of history one ``sync_watchers`` call reads at most (etcd's watchBatchMaxRevs)."""

DEFAULT_SYNC_RESPONSE_BYTES = 3584 * 1024
"""Most key and value bytes (prev values counted when asked for) one catch-up response
holds, unless a single revision alone is larger: a revision whose events would take the
response past this starts the next response. etcd bounds catch-up responses by revisions
only (1000), so 1000 revisions of large values make one response of many megabytes, which
a gRPC client refuses at its default limit (grpcio: 4 MiB): such a watcher fails on every
reconnect and never catches up. 3.5 MiB leaves room for the per-event framing under 4 MiB,
and a backlog that fits is still sent in one response, as etcd does."""


class WatchableStore:
    """See the module docstring."""

    def __init__(self, store: KVStore) -> None:
        self._store = store
        self._published = store.current_revision
        self._synced: dict[int, Watcher] = {}
        # Synced single-key watchers by key, and synced range watchers: a write looks at
        # the watchers of the keys it changed plus the range watchers, not at every watcher.
        self._synced_keys: dict[bytes, dict[int, Watcher]] = {}
        self._synced_ranges: dict[int, Watcher] = {}
        # Those groups in creation order, built on first use after a membership change
        # (``_candidates`` would otherwise sort them for every write).
        self._range_order: list[Watcher] | None = None
        self._key_order: dict[bytes, list[Watcher]] = {}
        self._unsynced: dict[int, Watcher] = {}
        self._seq = 0
        store.add_changes_listener(self._notify_changes)

    @property
    def store(self) -> KVStore:
        return self._store

    @property
    def revision(self) -> int:
        """The newest revision whose events were handed to synced watchers."""
        return self._published

    def new_stream(
        self,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        on_ready: Callable[[], None] | None = None,
    ) -> WatchStream:
        return WatchStream(self, max_pending, on_ready)

    def pending_sync(self) -> bool:
        """True when some watcher waits for ``sync_watchers``."""
        return bool(self._unsynced)

    def counts(self) -> tuple[int, int]:
        """(synced, unsynced) watchers, for metrics and tests."""
        return len(self._synced), len(self._unsynced)

    # -- watcher membership (called by WatchStream) ----------------------------------------

    def _add_watcher(
        self,
        stream: WatchStream,
        watch_id: int,
        key: bytes,
        range_end: bytes,
        start_rev: int,
        prev_kv: bool,
        filters: frozenset[WatchFilter],
    ) -> Watcher:
        self._seq += 1
        current = self._published
        synced = start_rev == 0 or start_rev > current
        # A negative start revision reads from the first revision (or is compacted).
        min_rev = max(current + 1, start_rev) if synced else max(1, start_rev)
        w = Watcher(stream, watch_id, self._seq, key, range_end, prev_kv, filters, min_rev)
        if synced:
            self._add_synced(w)
        else:
            self._unsynced[w.seq] = w
        return w

    def _remove_watcher(self, w: Watcher) -> None:
        if w.synced:
            self._remove_synced(w)
        self._unsynced.pop(w.seq, None)

    def _add_synced(self, w: Watcher) -> None:
        w.synced = True
        self._synced[w.seq] = w
        if w.range_end == b"":
            self._synced_keys.setdefault(w.key, {})[w.seq] = w
            self._key_order.pop(w.key, None)
        else:
            self._synced_ranges[w.seq] = w
            self._range_order = None

    def _remove_synced(self, w: Watcher) -> None:
        w.synced = False
        self._synced.pop(w.seq, None)
        if w.range_end == b"":
            group = self._synced_keys.get(w.key)
            if group is not None:
                group.pop(w.seq, None)
                if not group:
                    del self._synced_keys[w.key]
            self._key_order.pop(w.key, None)
        else:
            self._synced_ranges.pop(w.seq, None)
            self._range_order = None

    def _candidates(self, events: Sequence[Event]) -> list[Watcher]:
        """Synced watchers that may match ``events``, in creation order. The returned list
        is never changed afterwards (membership changes replace the cached orders)."""
        keys = self._synced_keys
        hit: dict[bytes, None] = {}
        if keys:
            for ev in events:
                if ev.kv.key in keys:
                    hit[ev.kv.key] = None
        if not hit:
            order = self._range_order
            if order is None:
                ranges = self._synced_ranges
                order = self._range_order = [ranges[seq] for seq in sorted(ranges)]
            return order
        if len(hit) == 1 and not self._synced_ranges:
            (key,) = hit
            order = self._key_order.get(key)
            if order is None:
                group = keys[key]
                order = self._key_order[key] = [group[seq] for seq in sorted(group)]
            return order
        found: dict[int, Watcher] = dict(self._synced_ranges)
        for key in hit:
            found.update(keys[key])
        return [found[seq] for seq in sorted(found)]

    # -- delivery --------------------------------------------------------------------------

    def _notify_changes(self, pending: Sequence[tuple[int, Sequence[Change]]]) -> None:
        """KVStore changes listener: the write txns of one backend commit. Their events
        are built only when some watcher is synced (none: only the revision moves)."""
        if not self._synced:
            self._published = pending[-1][0]
            return
        for rev, changes in pending:
            self._notify(rev, changes_to_events(rev, changes))

    def _notify(self, rev: int, events: Sequence[Event]) -> None:
        """The events of revision ``rev`` are committed: hand them to synced watchers."""
        self._published = rev
        if not self._synced:
            return
        view: TxnRead | None = None
        every = tuple(events)  # shared by every watcher that takes all of them
        # One event (a put or a single-key delete): no per-watcher list to build, and a
        # single-key candidate watches that very key (``_candidates``).
        only = every[0] if len(every) == 1 else None
        only_key = only.kv.key if only is not None else b""
        try:
            for w in self._candidates(every):
                if w.min_rev > rev:
                    continue
                mine: Sequence[Event]
                if only is not None:
                    took = (w.range_end == b"" or w.matches(only_key)) and (
                        not w.filters or w.wants(only)
                    )
                    mine = every if took else ()
                else:
                    mine = [ev for ev in every if w.matches(ev.kv.key) and w.wants(ev)]
                    if len(mine) == len(every):
                        mine = every
                if not mine:
                    w.min_rev = rev + 1
                    continue
                if w.stream._full():
                    # Slow consumer: catch up from history from this revision on.
                    self._remove_synced(w)
                    w.min_rev = rev
                    self._unsynced[w.seq] = w
                    continue
                if w.prev_kv:
                    if view is None:
                        view = self._store.read()
                    mine = [_with_prev(view, ev) for ev in mine]
                w.stream._push(WatchResponse(w.watch_id, tuple(mine), rev))
                w.min_rev = rev + 1
        finally:
            if view is not None:
                view.end()

    def sync_watchers(
        self,
        max_revisions: int = DEFAULT_SYNC_REVISIONS,
        max_bytes: int = DEFAULT_SYNC_RESPONSE_BYTES,
    ) -> bool:
        """Catch unsynced watchers up by at most ``max_revisions`` revisions of history,
        each watcher by one response of whole revisions holding at most ``max_bytes`` of
        keys and values, or one revision when that alone is larger
        (``DEFAULT_SYNC_RESPONSE_BYTES``). Returns True when no watcher is left unsynced."""
        if max_revisions < 1:
            raise ValueError("max_revisions must be positive")
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        if not self._unsynced:
            return True
        compact = self._store.compact_revision
        current = self._published
        ready: list[Watcher] = []
        for seq, w in list(self._unsynced.items()):
            if w.stream._full():
                continue
            if w.min_rev < compact:
                del self._unsynced[seq]
                w.stream._drop(w)
                w.stream._push(
                    WatchResponse(w.watch_id, revision=current, compact_revision=compact,
                                  canceled=True)
                )
                continue
            ready.append(w)
        if not ready:
            return not self._unsynced
        lo = max(1, min(w.min_rev for w in ready))
        hi = min(current + 1, lo + max_revisions)  # exclusive
        history = self._read_history(lo, hi) if lo < hi else []
        view: TxnRead | None = None
        try:
            for w in ready:
                mine: list[Event] = []
                upto = hi  # the first revision this response leaves out
                size = 0
                values = 2 if w.prev_kv else 1
                wanted = ((rev, ev) for rev, ev in history
                          if rev >= w.min_rev and w.matches(ev.kv.key) and w.wants(ev))
                for rev, group in itertools.groupby(wanted, key=itemgetter(0)):
                    events = [ev for _, ev in group]
                    grown = size + sum(len(ev.kv.key) + values * len(ev.kv.value)
                                       for ev in events)
                    if mine and grown > max_bytes:
                        upto = rev
                        break
                    mine += events
                    size = grown
                if mine:
                    if w.prev_kv:
                        if view is None:
                            view = self._store.read()
                        mine = [_with_prev(view, ev) for ev in mine]
                    w.stream._push(WatchResponse(w.watch_id, tuple(mine), current))
                w.min_rev = max(w.min_rev, upto)
                if w.min_rev > current:
                    del self._unsynced[w.seq]
                    self._add_synced(w)
        finally:
            if view is not None:
                view.end()
        return not self._unsynced

    def _read_history(self, lo: int, hi: int) -> list[tuple[int, Event]]:
        """Events of main revisions [lo, hi) from the key bucket, in revision order."""
        out: list[tuple[int, Event]] = []
        with self._store.backend.read() as tx:
            for k, v in tx.range(KEY_BUCKET, main_rev_start(lo), main_rev_start(hi)):
                rev = bytes_to_rev(k).main
                kv = decode_kv(v)
                if is_tombstone(k):
                    out.append((rev, Event(EventType.DELETE, KeyValue(kv.key, mod_revision=rev))))
                else:
                    out.append((rev, Event(EventType.PUT, kv)))
        return out


def _with_prev(view: TxnRead, ev: Event) -> Event:
    """``ev`` with the key's value just before it (None if absent or compacted)."""
    before = ev.kv.mod_revision - 1
    if before < 1:
        return ev
    try:
        got = view.range_keys(ev.kv.key, None, rev=before).kvs
    except CompactedError:
        return ev
    return Event(ev.type, ev.kv, got[0]) if got else ev
