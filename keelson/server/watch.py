"""Watch streams over the key space (one per gRPC Watch call), on mvcc's WatchableStore.

Theory of operation. ``WatchHub`` owns the member's ``mvcc.WatchableStore``; the store's
commit listener hands synced watchers their events as each write txn commits, and
``sync`` (called by the server after applying entries and on a ~100 ms timer) lets
watchers that start in the past or fell behind catch up from history in bounded steps.
A ``WatchStream`` is the thin adapter keelson.api drives (``create``/``cancel``/
``request_progress``/``next``/``close``): it turns etcd's protobuf requests into calls on an
mvcc ``WatchStream`` and mvcc's ``WatchResponse`` values into protobuf responses stamped
with the member's header. The ``created`` response of a watcher is queued by the adapter
before the watcher can produce anything, and ``next`` sends the adapter's queue before
polling mvcc, so a client sees created, then the events, in order. mvcc's stream signals
"something queued" through ``on_ready``, which wakes ``next``; responses stay in mvcc's
bounded queue until ``next`` polls them, which is what slows a stream that reads slowly.

When a snapshot replaces the key space (``rebind``) a new WatchableStore is made on the new
store and each stream re-creates its watchers there from the first revision it has not yet
delivered (one past the newest event it polled, or its start), so nothing is lost or sent
twice. Everything runs on the event loop's thread, like the apply loop.

Progress notifications (etcd 3.4's ``progress_notify``): each stream has a ticker, period
``progress_interval`` plus a random jitter of up to a tenth of it, fixed when the stream is
made (``--experimental-watch-progress-notify-interval``, default 10 minutes, at least
100 ms). A watcher created with ``progress_notify`` is marked at creation and on every tick;
a tick asks mvcc for a progress response (no events, watch id, the current revision) for each
watcher still marked from the previous tick, i.e. one that was sent no events in between, and
mvcc answers only for synced watchers. Fragments (``fragment``): a response of such a watcher
whose encoded size reaches ``max_response_bytes`` (max request bytes + 512 KiB, etcd's
``grpcOverheadBytes``) and which has at least two events is split into several, in order,
each under the limit unless one event alone exceeds it, all with ``fragment`` set but the last.

Encoding once per write. A write watched by many watchers (256 streams on one key is etcd's
``benchmark watch-latency``) produces one response per watcher, identical but for the
watch id. mvcc hands those watchers one shared ``events`` tuple, and the hub keeps the
protobuf events and their encoding for the last tuple it saw (by identity, holding the
tuple so the identity cannot be reused): each response then costs a header and a watch id,
not a conversion of every event. ``next_encoded`` returns a response already serialized
(the native front end writes those bytes as they are; the bytes equal the serialization
of what ``next`` would have returned); ``next`` returns protobuf messages (grpcio).
Responses stay mvcc values in the stream's queue until one of them takes them, so neither
path builds what it does not send.

Pushing (``push_to``, the native front end). Waking one task per stream for every write
costs more than encoding the response; a front end that can queue a message without
waiting gives the stream a *sink* instead. While the stream's reader (the task awaiting
``next_encoded``) is parked with nothing left to read, a new response does not wake it:
the stream asks the hub to push, and one loop callback (``_push_all``) encodes and hands
to their sinks the responses of every stream that has some, so a write watched on many
streams is written out in one loop turn. A sink returns False when the stream should take
no more now (its peer's window is full, or the stream is gone): pushing then stops and
the reader is woken, and responses go through the awaiting path (which waits for the
window, or fails) until the reader parks again *after* its writer took a response, i.e.
with the backlog below the writer's limit; only then does pushing resume, so a client that
does not read still closes the stream's window on the server. Order is kept because only
one of the two takes responses at a time: pushing happens only while the reader is parked.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from keelson import mvcc
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.mvccpb import kv_pb2
from keelson.server import convert

MAX_PENDING = 128
"""Responses an mvcc stream queues before its watchers are moved to catch-up."""

DEFAULT_PROGRESS_INTERVAL = 600.0
"""etcd 3.4's watch progress notification period, seconds (10 minutes)."""

MIN_PROGRESS_INTERVAL = 0.1
"""etcd raises a shorter ``--experimental-watch-progress-notify-interval`` to this."""

WATCH_RESPONSE_OVERHEAD_BYTES = 512 * 1024
"""Added to max request bytes to get the size above which a response is fragmented (etcd's
grpcOverheadBytes)."""

_log = logging.getLogger("keelson.server.watch")


def progress_notify_interval(configured: float) -> float:
    """The period etcd 3.4 uses for a configured interval (seconds): not positive means the
    default; below the minimum is raised to it, with a warning."""
    if configured <= 0:
        return DEFAULT_PROGRESS_INTERVAL
    if configured < MIN_PROGRESS_INTERVAL:
        _log.warning(
            "adjusting watch progress notify interval to minimum period %.0fms",
            MIN_PROGRESS_INTERVAL * 1000,
        )
        return MIN_PROGRESS_INTERVAL
    return configured


@dataclass
class _Spec:
    """What is needed to re-create a watcher on a new store, and where it got to."""

    key: bytes
    range_end: bytes
    prev_kv: bool
    filters: tuple[mvcc.WatchFilter, ...]
    next_rev: int


class WatchHub:
    def __init__(
        self,
        kv: mvcc.KVStore,
        header: Callable[[], pb.ResponseHeader],
        *,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        max_response_bytes: int = 1572864 + WATCH_RESPONSE_OVERHEAD_BYTES,
        rng: random.Random | None = None,
    ) -> None:
        if progress_interval <= 0:
            raise ValueError("progress_interval must be positive")
        self._header = header
        self.progress_interval = progress_interval
        self.max_response_bytes = max_response_bytes
        self.rng = rng or random.Random()
        self.store = mvcc.WatchableStore(kv)
        self._streams: dict[int, WatchStream] = {}
        self._seq = 0
        # (events tuple, its protobuf events, their encoding as WatchResponse.events or
        # None until asked): see "Encoding once per write" in the module docstring.
        self._events: tuple[tuple[mvcc.Event, ...], list[kv_pb2.Event], bytes | None] | None
        self._events = None
        self._to_push: list[WatchStream] = []  # streams to push in the scheduled callback
        self._push_scheduled = False

    def rebind(self, kv: mvcc.KVStore) -> None:
        """The key space was replaced (snapshot installed): move every watcher to it."""
        old = self.store
        self.store = mvcc.WatchableStore(kv)
        for seq in sorted(self._streams):
            self._streams[seq].rebind(old, self.store)
        self.sync()

    def new_stream(self) -> WatchStream:
        self._seq += 1
        s = WatchStream(self, self._seq)
        self._streams[self._seq] = s
        return s

    def header(self, revision: int = 0) -> pb.ResponseHeader:
        h = self._header()
        if revision:
            h.revision = revision
        return h

    def events_pb(self, events: tuple[mvcc.Event, ...]) -> list[kv_pb2.Event]:
        """``events`` as protobuf events, converted once for the same tuple object (callers
        copy them into a response; nobody may change them)."""
        cached = self._events
        if cached is not None and cached[0] is events:
            return cached[1]
        pbs = [_event_to_pb(ev) for ev in events]
        self._events = (events, pbs, None)
        return pbs

    def events_encoded(self, events: tuple[mvcc.Event, ...]) -> bytes:
        """``events`` encoded as the ``events`` field of a WatchResponse (field 11, the
        highest it uses), made once for the same tuple object."""
        cached = self._events
        if cached is not None and cached[0] is events and cached[2] is not None:
            return cached[2]
        pbs = self.events_pb(events)
        data = pb.WatchResponse(events=pbs).SerializeToString()
        self._events = (events, pbs, data)
        return data

    def _schedule_push(self, stream: WatchStream) -> None:
        self._to_push.append(stream)
        if not self._push_scheduled:
            self._push_scheduled = True
            asyncio.get_running_loop().call_soon(self._push_all)

    def _push_all(self) -> None:
        """Push every stream that asked since the last call (see the module docstring)."""
        self._push_scheduled = False
        streams, self._to_push = self._to_push, []
        for st in streams:
            try:
                st._push_out()
            except Exception:  # the reader meets it again and ends its call; others go on
                _log.exception("pushing watch responses failed")
                st._ready.set()

    def sync(self) -> None:
        """Let lagging watchers catch up by one bounded step (cheap when none lag)."""
        if self.store.pending_sync():
            self.store.sync_watchers()

    def discard(self, seq: int) -> None:
        self._streams.pop(seq, None)


class WatchStream:
    """The per-gRPC-stream object keelson.api drives: create/cancel/request_progress/next/close."""

    def __init__(self, hub: WatchHub, seq: int) -> None:
        self._hub = hub
        self._seq = seq
        self._ready = asyncio.Event()
        self._inner = hub.store.new_stream(max_pending=MAX_PENDING, on_ready=self._wake)
        # Pushing (module docstring): the sink, whether the reader is parked in
        # ``_next_item`` with nothing to read, and whether a sink refusal stopped pushing
        # until the reader parks again.
        self._sink: Callable[[bytes], bool] | None = None
        self._parked = False
        self._push_paused = False
        self._reader_took = False  # the reader returned a response since it last parked
        # What goes out next, in order: protobuf responses made here (created, canceled at
        # creation, fragments) and mvcc responses already accounted for (``_account``) but
        # not yet converted (``next``) or encoded (``next_encoded``).
        self._out: deque[pb.WatchResponse | mvcc.WatchResponse] = deque()
        self._specs: dict[int, _Spec] = {}
        self._closed = False
        # progress_notify watchers -> True while no events were sent since the last tick
        self._progress: dict[int, bool] = {}
        self._fragment: set[int] = set()  # watchers created with fragment=true
        self._ticker: asyncio.TimerHandle | None = None
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # made outside the loop (tests): no periodic progress
            loop = None
        if loop is not None:
            base = hub.progress_interval
            period = base + hub.rng.uniform(0, base / 10)
            self._ticker = loop.call_later(period, self._on_timer, loop, period)

    def _on_timer(self, loop: asyncio.AbstractEventLoop, period: float) -> None:
        if self._closed:
            return
        self._ticker = loop.call_later(period, self._on_timer, loop, period)
        self.tick_progress()

    def tick_progress(self) -> None:
        """One progress tick (the stream's timer calls it; tests may call it directly):
        watchers sent no events since the previous tick get a progress response if mvcc has
        them synced; every progress_notify watcher is marked again."""
        for wid in sorted(self._progress):
            if self._progress[wid]:
                self._inner.request_progress(wid)
            self._progress[wid] = True

    def create(self, req: pb.WatchCreateRequest) -> pb.WatchResponse | None:
        filters = tuple(sorted({mvcc.WatchFilter(f) for f in req.filters if f in (0, 1)}))
        wanted = req.watch_id if req.watch_id else mvcc.AUTO_WATCH_ID
        start = req.start_revision if req.start_revision > 0 else 0
        try:
            wid = self._inner.watch(
                req.key, req.range_end, start, prev_kv=req.prev_kv, filters=filters,
                watch_id=wanted,
            )
        except mvcc.WatcherDuplicateIdError:
            return pb.WatchResponse(
                header=self._hub.header(), watch_id=req.watch_id, created=True,
                canceled=True, cancel_reason="etcdserver: duplicate watch ID",
            )
        except (mvcc.WatcherEmptyRangeError, ValueError) as exc:
            return pb.WatchResponse(
                header=self._hub.header(), watch_id=req.watch_id, created=True,
                canceled=True, cancel_reason=str(exc),
            )
        next_rev = start if start else self._hub.store.revision + 1
        self._specs[wid] = _Spec(req.key, req.range_end, req.prev_kv, filters, next_rev)
        if req.progress_notify:
            self._progress[wid] = True
        if req.fragment:
            self._fragment.add(wid)
        self._out.append(pb.WatchResponse(header=self._hub.header(), watch_id=wid, created=True))
        self._wake()
        self._hub.sync()
        return None

    def cancel(self, watch_id: int) -> pb.WatchResponse | None:
        # mvcc drops the watcher's queued responses and queues the canceled one.
        self._specs.pop(watch_id, None)
        self._progress.pop(watch_id, None)
        self._inner.cancel(watch_id)
        return None

    def request_progress(self) -> pb.WatchResponse | None:
        # Queued (watch_id -1, the current revision) only when every watcher is synced.
        self._inner.request_progress()
        return None

    async def next(self) -> pb.WatchResponse | None:
        """The next response, or None once the stream is closed."""
        item = await self._next_item()
        if item is None or isinstance(item, pb.WatchResponse):
            return item
        return self._to_pb(item)

    async def next_encoded(self) -> bytes | None:
        """``next``, serialized (the same bytes), or None once the stream is closed; the
        events of a write shared by many watchers are encoded once (module docstring)."""
        item = await self._next_item()
        if item is None:
            return None
        if isinstance(item, pb.WatchResponse):
            return item.SerializeToString()
        return self._encode(item)

    def push_to(self, sink: Callable[[bytes], bool]) -> None:
        """Hand responses, encoded, to ``sink`` while the reader is parked (module
        docstring). ``sink`` queues the message it is given (unless the stream is gone) and
        returns False when it wants no more for now. The reader (a task looping on
        ``next_encoded`` and awaiting its writer before it calls again) must keep running:
        it takes over whenever pushing stops."""
        self._sink = sink

    def _wake(self) -> None:
        """Something was queued: push it if the reader is parked, else wake the reader."""
        if self._sink is not None and self._parked and not self._push_paused:
            self._hub._schedule_push(self)
        else:
            self._ready.set()

    def _push_out(self) -> None:
        sink = self._sink
        if sink is None or self._closed:
            return
        if not self._parked or self._push_paused:
            self._ready.set()  # the reader is (about to be) busy: it takes what is queued
            return
        while True:
            item = self._take()
            if item is None:
                return
            if isinstance(item, pb.WatchResponse):
                data = item.SerializeToString()
            else:
                data = self._encode(item)
            if not sink(data):
                self._push_paused = True
                self._ready.set()
                return

    def _take(self) -> pb.WatchResponse | mvcc.WatchResponse | None:
        """The next response queued here or in mvcc, or None when there is none."""
        while True:
            if self._out:
                return self._out.popleft()
            if self._closed:
                return None
            polled = self._inner.poll()
            if not polled:
                return None
            for r in polled:
                self._account(r)
                if r.watch_id in self._fragment:
                    resp = self._to_pb(r)
                    self._out.extend(split_fragments(resp, self._hub.max_response_bytes))
                else:
                    self._out.append(r)
                if r.canceled:
                    self._fragment.discard(r.watch_id)
            self._hub.sync()  # room again: watchers that fell behind may catch up

    async def _next_item(self) -> pb.WatchResponse | mvcc.WatchResponse | None:
        while True:
            item = self._take()
            if item is not None:
                self._reader_took = True
                return item
            if self._closed:
                return None
            self._ready.clear()
            if self._reader_took:
                # The reader calls again only once its writer took the last response, so
                # the backlog is below the writer's limit: pushing may resume.
                self._reader_took = False
                self._push_paused = False
            self._parked = True
            try:
                await self._ready.wait()
            finally:
                self._parked = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._ticker is not None:
                self._ticker.cancel()
                self._ticker = None
            self._inner.close()
            self._out.clear()
            self._hub.discard(self._seq)
            self._ready.set()

    def rebind(self, old: mvcc.WatchableStore, new: mvcc.WatchableStore) -> None:
        """Move this stream's watchers from ``old`` to ``new`` (see the module docstring)."""
        if self._closed:
            return
        for r in self._inner.poll():
            self._account(r)
            self._out.append(r)
        self._inner.close()
        self._inner = new.new_stream(max_pending=MAX_PENDING, on_ready=self._wake)
        for wid in sorted(self._specs):
            s = self._specs[wid]
            self._inner.watch(
                s.key, s.range_end, s.next_rev, prev_kv=s.prev_kv, filters=s.filters,
                watch_id=wid,
            )
        self._ready.set()

    def _account(self, r: mvcc.WatchResponse) -> None:
        """What taking ``r`` from mvcc means for this stream: where its watcher got to (for
        ``rebind``), that it was sent events (progress), or that it is gone."""
        spec = self._specs.get(r.watch_id)
        if r.canceled:
            self._specs.pop(r.watch_id, None)
            self._progress.pop(r.watch_id, None)
        elif spec is not None and r.events:
            spec.next_rev = max(spec.next_rev, r.events[-1].kv.mod_revision + 1)
        if r.events and r.watch_id in self._progress:
            self._progress[r.watch_id] = False  # events went out: skip the next progress

    def _to_pb(self, r: mvcc.WatchResponse) -> pb.WatchResponse:
        return pb.WatchResponse(
            header=self._hub.header(r.revision),
            watch_id=r.watch_id,
            canceled=r.canceled,
            compact_revision=r.compact_revision,
            events=self._hub.events_pb(r.events),
        )

    def _encode(self, r: mvcc.WatchResponse) -> bytes:
        """``_to_pb(r).SerializeToString()`` without a WatchResponse message per watcher:
        protobuf writes the fields set in number order, so the fields written here by hand
        (header 1, watch_id 2, canceled 4, compact_revision 5; proto3 leaves zero values
        out) followed by the shared encoding of the events (field 11) is the same string."""
        header = self._hub.header(r.revision).SerializeToString()
        out = b"\x0a" + _varint(len(header)) + header
        if r.watch_id:
            out += b"\x10" + _varint(r.watch_id)
        if r.canceled:
            out += b"\x20\x01"
        if r.compact_revision:
            out += b"\x28" + _varint(r.compact_revision)
        if r.events:
            out += self._hub.events_encoded(r.events)
        return out


def split_fragments(resp: pb.WatchResponse, limit: int) -> list[pb.WatchResponse]:
    """``resp`` as etcd 3.4 sends it to a watcher created with ``fragment``: unchanged if its
    encoded size is below ``limit`` or it has fewer than two events; otherwise consecutive
    pieces, each holding as many events as keep it below ``limit`` (at least one), with
    ``fragment`` set on all but the last. Sizes are summed per event, not re-encoded."""
    events = list(resp.events)
    if len(events) < 2 or resp.ByteSize() < limit:
        return [resp]
    shell = pb.WatchResponse()
    shell.CopyFrom(resp)
    del shell.events[:]
    shell.fragment = True
    base = shell.ByteSize()
    out: list[pb.WatchResponse] = []
    i = 0
    while i < len(events):
        piece = pb.WatchResponse()
        piece.CopyFrom(shell)
        size = base
        taken = 0
        while i < len(events):
            grown = size + _embedded_size(events[i].ByteSize())
            if taken >= 1 and grown >= limit:
                break
            piece.events.append(events[i])
            size = grown
            taken += 1
            i += 1
        if i == len(events):
            piece.fragment = False
        out.append(piece)
    return out


def _varint(n: int) -> bytes:
    """``n`` as a protobuf varint; a negative int64 as its 64-bit two's complement (ten
    bytes), as protobuf writes it."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _embedded_size(n: int) -> int:
    """Bytes a length-delimited field of ``n`` bytes takes (field numbers below 16)."""
    varint, rest = 1, n
    while rest >= 0x80:
        rest >>= 7
        varint += 1
    return 1 + varint + n


def _event_to_pb(ev: mvcc.Event) -> kv_pb2.Event:
    out = kv_pb2.Event(
        type=kv_pb2.Event.PUT if ev.type == mvcc.EventType.PUT else kv_pb2.Event.DELETE,
        kv=convert.kv_to_pb(ev.kv),
    )
    if ev.prev_kv is not None:
        out.prev_kv.CopyFrom(convert.kv_to_pb(ev.prev_kv))
    return out
