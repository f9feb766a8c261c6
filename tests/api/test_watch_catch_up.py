"""A watcher catching up over history of large values, through a grpcio client with its
default 4 MiB receive limit: every event arrives. (Catch-up responses used to hold up to
1000 revisions whatever their size, which such a client refuses, on every reconnect.)"""

from __future__ import annotations

import threading
from pathlib import Path

import grpc

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.testing.local_cluster import LocalCluster

VALUE = b"v" * 40_000
PUTS = 150  # 6 MB of values: more than one 4 MiB message


def test_grpcio_watcher_catches_up_over_megabytes_of_history(tmp_path: Path) -> None:
    cluster = LocalCluster("keelson", 1, tmp_path).start()
    try:
        with grpc.insecure_channel(cluster.endpoints) as ch:
            kv = pbg.KVStub(ch)  # type: ignore[no-untyped-call]
            first = 0
            for i in range(PUTS):
                r = kv.Put(pb.PutRequest(key=b"w/%03d" % i, value=VALUE), timeout=10)
                first = first or r.header.revision
            done = threading.Event()

            def requests():  # type: ignore[no-untyped-def]
                yield pb.WatchRequest(create_request=pb.WatchCreateRequest(
                    key=b"w/", range_end=b"w0", start_revision=first))
                done.wait(30)

            call = pbg.WatchStub(ch).Watch(requests(), timeout=30)  # type: ignore[no-untyped-call]
            seen: list[int] = []
            try:
                for resp in call:
                    assert not resp.canceled, resp.cancel_reason
                    seen += [ev.kv.mod_revision for ev in resp.events]
                    if len(seen) >= PUTS:
                        break
            finally:
                done.set()
                call.cancel()
            assert seen == list(range(first, first + PUTS))
    finally:
        cluster.stop()
