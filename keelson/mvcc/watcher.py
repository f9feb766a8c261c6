"""Watchers, watch responses and watch streams (etcd's mvcc watcher.go / watch_stream).

Theory of operation. A ``WatchStream`` is one client's multiplexed watch connection as the
store sees it: it creates and cancels watchers (each with a watch id unique on the stream)
and queues the ``WatchResponse`` values the ``WatchableStore`` produces for them, in the
order they were produced; the server drains them with ``poll`` and learns that something is
queued through the ``on_ready`` callback (called when the queue goes from empty to non-empty)
or ``has_pending``. Nothing here does I/O or blocks.

Guarantees for one watcher: events come in revision order with no gap and no duplicate;
the events of one revision are never split between responses; a response's ``revision``
never decreases. A watcher whose start revision was compacted gets one response with
``compact_revision`` set and ``canceled`` true, and is gone. ``cancel`` drops the watcher's
queued responses and queues one ``canceled`` response in their place.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keelson.mvcc.errors import WatcherDuplicateIdError, WatcherEmptyRangeError
from keelson.mvcc.keyvalue import Event, EventType

if TYPE_CHECKING:
    from keelson.mvcc.watchable_store import WatchableStore

AUTO_WATCH_ID = -1
"""Pass as ``watch_id`` to let the stream pick the next free id (etcd's AutoWatchID)."""

PROGRESS_WATCH_ID = -1
"""``watch_id`` of a stream-wide progress response (etcd's InvalidWatchID)."""

DEFAULT_MAX_PENDING = 128
"""Responses a stream queues before its synced watchers are moved to catch-up (etcd's
chanBufLen)."""


class WatchFilter(enum.IntEnum):
    """etcd's WatchCreateRequest.FilterType numbering."""

    NOPUT = 0
    NODELETE = 1


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """Events for one watcher (or a progress notification when ``events`` is empty).
    ``revision`` is the store revision when the response was made."""

    watch_id: int
    events: tuple[Event, ...] = ()
    revision: int = 0
    compact_revision: int = 0
    canceled: bool = False


class Watcher:
    """One watch on ``[key, range_end)`` (etcd's range_end convention: b"" a single key,
    b"\\0" every key from ``key``). Owned by the WatchableStore's groups; ``min_rev`` is the
    next revision it has not been sent."""

    __slots__ = ("stream", "watch_id", "seq", "key", "range_end", "prev_kv", "filters",
                 "min_rev", "synced")

    def __init__(
        self,
        stream: WatchStream,
        watch_id: int,
        seq: int,
        key: bytes,
        range_end: bytes,
        prev_kv: bool,
        filters: frozenset[WatchFilter],
        min_rev: int,
    ) -> None:
        self.stream = stream
        self.watch_id = watch_id
        self.seq = seq  # creation order across the store: deterministic iteration
        self.key = key
        self.range_end = range_end
        self.prev_kv = prev_kv
        self.filters = filters
        self.min_rev = min_rev
        self.synced = False

    def matches(self, key: bytes) -> bool:
        end = self.range_end
        if end == b"":
            return key == self.key
        if end == b"\0":
            return key >= self.key
        return self.key <= key < end

    def wants(self, ev: Event) -> bool:
        if ev.type == EventType.PUT:
            return WatchFilter.NOPUT not in self.filters
        return WatchFilter.NODELETE not in self.filters


class WatchStream:
    """See the module docstring. Created by ``WatchableStore.new_stream``."""

    def __init__(
        self,
        store: WatchableStore,
        max_pending: int = DEFAULT_MAX_PENDING,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be positive")
        self._store = store
        self.max_pending = max_pending
        self.on_ready = on_ready
        self._watchers: dict[int, Watcher] = {}
        self._next_id = 0
        self._queue: deque[WatchResponse] = deque()
        self._closed = False

    # -- what the server calls -----------------------------------------------------------

    def watch(
        self,
        key: bytes,
        range_end: bytes = b"",
        start_rev: int = 0,
        *,
        prev_kv: bool = False,
        filters: tuple[WatchFilter, ...] | frozenset[WatchFilter] = (),
        watch_id: int = AUTO_WATCH_ID,
    ) -> int:
        """Watch ``[key, range_end)`` from ``start_rev`` (0: the next revision); returns
        the watch id. Raises WatcherDuplicateIdError for an id in use on this stream and
        WatcherEmptyRangeError when ``key >= range_end`` for a real range end."""
        if self._closed:
            raise ValueError("watch stream is closed")
        if range_end not in (b"", b"\0") and key >= range_end:
            raise WatcherEmptyRangeError()
        if watch_id == AUTO_WATCH_ID:
            while self._next_id in self._watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id < 0:
            raise ValueError(f"watch id must be >= 0 or AUTO_WATCH_ID, not {watch_id}")
        elif watch_id in self._watchers:
            raise WatcherDuplicateIdError()
        w = self._store._add_watcher(
            self, watch_id, key, range_end, start_rev, prev_kv, frozenset(filters)
        )
        self._watchers[watch_id] = w
        return watch_id

    def cancel(self, watch_id: int) -> bool:
        """Stop ``watch_id``: its queued responses are dropped and one response with
        ``canceled`` set is queued. False if there is no such watcher."""
        w = self._watchers.pop(watch_id, None)
        if w is None:
            return False
        self._store._remove_watcher(w)
        self._queue = deque(r for r in self._queue if r.watch_id != watch_id)
        self._push(WatchResponse(watch_id, revision=self._store.revision, canceled=True))
        return True

    def request_progress(self, watch_id: int | None = None) -> bool:
        """Queue a progress response (no events, the current revision). With a watch id:
        for that watcher, only if it is synced (etcd's RequestProgress). Without: one
        response with ``PROGRESS_WATCH_ID``, only if every watcher of the stream is synced
        (etcd 3.5's RequestProgressAll). Returns whether a response was queued."""
        if watch_id is not None:
            w = self._watchers.get(watch_id)
            if w is None or not w.synced:
                return False
            self._push(WatchResponse(watch_id, revision=self._store.revision))
            return True
        if any(not w.synced for w in self._watchers.values()):
            return False
        self._push(WatchResponse(PROGRESS_WATCH_ID, revision=self._store.revision))
        return True

    def poll(self) -> list[WatchResponse]:
        """Drain and return the queued responses, oldest first."""
        out = list(self._queue)
        self._queue.clear()
        return out

    @property
    def has_pending(self) -> bool:
        return bool(self._queue)

    def watch_ids(self) -> list[int]:
        return sorted(self._watchers)

    def close(self) -> None:
        """Remove every watcher of the stream and drop what is queued."""
        for watch_id in sorted(self._watchers):
            self._store._remove_watcher(self._watchers[watch_id])
        self._watchers.clear()
        self._queue.clear()
        self._closed = True

    # -- what the WatchableStore calls ---------------------------------------------------

    def _full(self) -> bool:
        return len(self._queue) >= self.max_pending

    def _push(self, resp: WatchResponse) -> None:
        was_empty = not self._queue
        self._queue.append(resp)
        if was_empty and self.on_ready is not None:
            self.on_ready()

    def _drop(self, w: Watcher) -> None:
        """The store removed ``w`` (compacted): forget its id."""
        if self._watchers.get(w.watch_id) is w:
            del self._watchers[w.watch_id]
