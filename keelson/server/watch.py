"""Watch streams over the key space (one per gRPC Watch call).

Theory of operation. ``WatchHub`` listens to the store's committed writes (``KVStore``
listener: revision and events, in revision order, only after the backend commit) and fans
them out to every open ``WatchStream``. A stream holds watchers (key range, filters,
prev_kv, and ``next_rev``: the first revision it has not yet been sent). Creating a watcher
queues its ``created`` response, then the history from ``start_revision`` read from the key
bucket, so a client sees: created, then every event from start_revision on, in order, with
no gaps and no duplicates. A start revision below the compact revision is answered with a
canceled response carrying ``compact_revision``, as etcd does. Queues are unbounded; the
hub runs on the event loop's thread (listeners are called by the apply loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from keelson import mvcc
from keelson.mvcc.keyvalue import decode_kv
from keelson.mvcc.revision import KEY_BUCKET, Revision, bytes_to_rev, is_tombstone, rev_to_bytes
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.mvccpb import kv_pb2
from keelson.server import convert

_NOPUT = 0
_NODELETE = 1


@dataclass
class _Watcher:
    watch_id: int
    key: bytes
    range_end: bytes
    prev_kv: bool
    no_put: bool
    no_delete: bool
    next_rev: int

    def matches(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        if self.range_end == b"\0":
            return key >= self.key
        return self.key <= key < self.range_end


class WatchHub:
    def __init__(self, kv: mvcc.KVStore, header: object) -> None:
        self._kv = kv
        self._header = header  # callable returning a ResponseHeader
        self._streams: set[WatchStream] = set()
        kv.add_listener(self._on_commit)

    def rebind(self, kv: mvcc.KVStore) -> None:
        """The store was replaced (snapshot installed): follow the new one."""
        self._kv = kv
        kv.add_listener(self._on_commit)

    def new_stream(self) -> WatchStream:
        s = WatchStream(self)
        self._streams.add(s)
        return s

    def header(self) -> pb.ResponseHeader:
        return self._header()  # type: ignore[operator,no-any-return]

    def _on_commit(self, rev: int, events: Sequence[mvcc.Event]) -> None:
        if not self._streams:
            return
        for s in list(self._streams):
            s.deliver(rev, events)

    def event_to_pb(self, ev: mvcc.Event, prev_kv: bool) -> kv_pb2.Event:
        out = kv_pb2.Event(
            type=kv_pb2.Event.PUT if ev.type == mvcc.EventType.PUT else kv_pb2.Event.DELETE,
            kv=convert.kv_to_pb(ev.kv),
        )
        if prev_kv:
            rev = ev.kv.mod_revision - 1
            if rev > self._kv.compact_revision and rev > 0:
                try:
                    r = self._kv.range(mvcc.RangeRequest(key=ev.kv.key, revision=rev))
                    if r.kvs:
                        out.prev_kv.CopyFrom(convert.kv_to_pb(r.kvs[0]))
                except mvcc.MvccError:
                    pass
        return out

    def history(self, start: int) -> list[tuple[int, mvcc.Event]]:
        """Every event with revision >= start, in revision order, from the key bucket."""
        out: list[tuple[int, mvcc.Event]] = []
        with self._kv.backend.read() as tx:
            for k, v in tx.range(KEY_BUCKET, rev_to_bytes(Revision(start, 0)), None):
                rev = bytes_to_rev(k)
                kv = decode_kv(v)
                if is_tombstone(k):
                    ev = mvcc.Event(
                        mvcc.EventType.DELETE, mvcc.KeyValue(kv.key, mod_revision=rev.main)
                    )
                else:
                    ev = mvcc.Event(mvcc.EventType.PUT, kv)
                out.append((rev.main, ev))
        return out


class WatchStream:
    """The per-gRPC-stream object keelson.api drives: create/cancel/request_progress/next/close."""

    def __init__(self, hub: WatchHub) -> None:
        self._hub = hub
        self._watchers: dict[int, _Watcher] = {}
        self._queue: asyncio.Queue[pb.WatchResponse | None] = asyncio.Queue()
        self._next_id = 0
        self._closed = False

    def create(self, req: pb.WatchCreateRequest) -> pb.WatchResponse | None:
        kv = self._hub._kv
        if req.watch_id:
            if req.watch_id in self._watchers:
                return pb.WatchResponse(
                    header=self._hub.header(), watch_id=req.watch_id, created=True,
                    canceled=True, cancel_reason="etcdserver: duplicate watch ID",
                )
            wid = req.watch_id
        else:
            while self._next_id in self._watchers:
                self._next_id += 1
            wid = self._next_id
            self._next_id += 1
        current = kv.current_revision
        start = req.start_revision if req.start_revision > 0 else current + 1
        if req.start_revision and start < kv.compact_revision:
            self._queue.put_nowait(
                pb.WatchResponse(
                    header=self._hub.header(), watch_id=wid, created=True, canceled=True,
                    compact_revision=kv.compact_revision,
                )
            )
            return None
        w = _Watcher(
            wid, req.key, req.range_end, req.prev_kv,
            _NOPUT in req.filters, _NODELETE in req.filters, start,
        )
        self._watchers[wid] = w
        created = pb.WatchResponse(header=self._hub.header(), watch_id=wid, created=True)
        self._queue.put_nowait(created)
        if start <= current:
            by_rev: dict[int, list[mvcc.Event]] = {}
            for rev, ev in self._hub.history(start):
                by_rev.setdefault(rev, []).append(ev)
            for rev in sorted(by_rev):
                self._send(w, rev, by_rev[rev])
            w.next_rev = current + 1
        return None

    def cancel(self, watch_id: int) -> pb.WatchResponse | None:
        if self._watchers.pop(watch_id, None) is None:
            return None
        return pb.WatchResponse(header=self._hub.header(), watch_id=watch_id, canceled=True)

    def request_progress(self) -> pb.WatchResponse | None:
        return pb.WatchResponse(header=self._hub.header(), watch_id=-1)

    async def next(self) -> pb.WatchResponse | None:
        return await self._queue.get()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._hub._streams.discard(self)
            self._queue.put_nowait(None)

    def deliver(self, rev: int, events: Sequence[mvcc.Event]) -> None:
        for w in list(self._watchers.values()):
            if rev >= w.next_rev:
                self._send(w, rev, events)
                w.next_rev = rev + 1

    def _send(self, w: _Watcher, rev: int, events: Sequence[mvcc.Event]) -> None:
        picked = [
            self._hub.event_to_pb(ev, w.prev_kv)
            for ev in events
            if w.matches(ev.kv.key)
            and not (w.no_put and ev.type == mvcc.EventType.PUT)
            and not (w.no_delete and ev.type == mvcc.EventType.DELETE)
        ]
        if picked:
            header = self._hub.header()
            header.revision = rev
            resp = pb.WatchResponse(header=header, watch_id=w.watch_id, events=picked)
            self._queue.put_nowait(resp)
