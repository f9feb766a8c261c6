"""Periodic progress notifications and fragmented watch responses over gRPC, on a keelson
member process and on a real etcd 3.4 started with the same flag
(``--experimental-watch-progress-notify-interval 200ms``): the same observations on both.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.testing.cluster import ProcessCluster
from keelson.testing.etcd import EtcdProcess

FLAGS = ("--experimental-watch-progress-notify-interval", "200ms")
VALUE_BYTES = 600 * 1024  # five of these exceed max-request-bytes (1.5 MiB) + 512 KiB
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]


@dataclass
class Stream:
    """A Watch stream fed from a queue, read by a thread into ``responses``."""

    call: grpc.Future  # type: ignore[type-arg]
    requests: queue.Queue[pb.WatchRequest | None]
    responses: queue.Queue[pb.WatchResponse]

    def send(self, req: pb.WatchRequest) -> None:
        self.requests.put(req)

    def next(self, timeout: float = 10.0) -> pb.WatchResponse:
        return self.responses.get(timeout=timeout)

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()


def _open_stream(ch: grpc.Channel) -> Stream:
    reqs: queue.Queue[pb.WatchRequest | None] = queue.Queue()
    out: queue.Queue[pb.WatchResponse] = queue.Queue()

    def gen() -> Iterator[pb.WatchRequest]:
        while (r := reqs.get()) is not None:
            yield r

    call = pbg.WatchStub(ch).Watch(gen())

    def pump() -> None:
        try:
            for resp in call:
                out.put(resp)
        except grpc.RpcError:
            pass

    threading.Thread(target=pump, daemon=True).start()
    return Stream(call, reqs, out)


def _create(key: bytes, end: bytes = b"", **kw: object) -> pb.WatchRequest:
    return pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key, range_end=end, **kw))  # type: ignore[arg-type]


def observe_progress(addr: str) -> dict[str, object]:
    """Two watchers, one with progress_notify; 1.5 s of silence on their keys."""
    with grpc.insecure_channel(addr, options=CHANNEL_OPTIONS) as ch:
        rev = pbg.KVStub(ch).Put(pb.PutRequest(key=b"other", value=b"1"), timeout=10)
        rev_now = rev.header.revision
        st = _open_stream(ch)
        try:
            st.send(_create(b"prog", progress_notify=True))
            st.send(_create(b"quiet"))
            created = [st.next(), st.next()]
            assert all(c.created for c in created)
            ids = [c.watch_id for c in created]
            got: list[pb.WatchResponse] = []
            deadline = time.monotonic() + 1.5
            while (left := deadline - time.monotonic()) > 0:
                try:
                    got.append(st.next(timeout=left))
                except queue.Empty:
                    break
        finally:
            st.close()
    return {
        "progress_ids": sorted({r.watch_id for r in got}),
        "watcher_ids": ids,
        "count": len(got),
        "all_empty_at_current_revision": all(
            not r.events and not r.created and not r.canceled and r.header.revision == rev_now
            for r in got
        ),
    }


def observe_fragments(addr: str) -> dict[str, object]:
    """Five 600 KiB values, then a prefix watch from revision 1 with and without fragment."""
    with grpc.insecure_channel(addr, options=CHANNEL_OPTIONS) as ch:
        kv = pbg.KVStub(ch)
        revs = [kv.Put(pb.PutRequest(key=b"big/%d" % i, value=bytes([65 + i]) * VALUE_BYTES),
                       timeout=30).header.revision for i in range(5)]
        layouts: dict[str, object] = {}
        for fragment in (True, False):
            st = _open_stream(ch)
            try:
                st.send(_create(b"big/", b"big0", start_revision=revs[0], fragment=fragment))
                assert st.next().created
                parts = [st.next(30)]
                while parts[-1].fragment:
                    parts.append(st.next(30))
            finally:
                st.close()
            events = [e.kv.mod_revision for p in parts for e in p.events]
            assert events == revs, (events, revs)
            layouts["fragment" if fragment else "whole"] = [
                (len(p.events), p.fragment, p.header.revision == revs[-1]) for p in parts
            ]
    return layouts


@pytest.fixture(scope="module", params=["keelson", "etcd"])
def endpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[str]:
    if request.param == "etcd":
        if shutil.which("etcd") is None:
            pytest.skip("etcd is not installed (Debian package etcd-server)")
        ref = EtcdProcess(str(tmp_path_factory.mktemp("etcd") / "data"), extra_args=FLAGS)
        ref.start()
        try:
            yield ref.endpoint
        finally:
            ref.stop()
        return
    c = ProcessCluster(Path(tmp_path_factory.mktemp("keelson")), 1, extra_args=FLAGS)
    c.start_all()
    try:
        c.wait_ready(timeout=60)
        yield c.members[0].client_addr
    finally:
        c.stop_all()


@pytest.mark.timeout(60)
def test_periodic_progress_only_to_progress_watchers(endpoint: str) -> None:
    seen = observe_progress(endpoint)
    ids = seen["watcher_ids"]
    assert isinstance(ids, list)
    assert seen["progress_ids"] == [ids[0]]  # the watcher without progress_notify: nothing
    assert seen["all_empty_at_current_revision"] is True
    # 1.5 s at 200 ms + up to 10 % jitter; generous both ways for a loaded machine
    assert 3 <= seen["count"] <= 8, seen  # type: ignore[operator]


@pytest.mark.timeout(120)
def test_large_catch_up_is_fragmented_as_etcd_does(endpoint: str) -> None:
    layouts = observe_fragments(endpoint)
    # limit 1.5 MiB + 512 KiB = 2 MiB: three 600 KiB events fit, a fourth does not
    assert layouts == {
        "fragment": [(3, True, True), (2, False, True)],
        "whole": [(5, False, True)],
    }, layouts
