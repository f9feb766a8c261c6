"""The backend commit is off the write path: a put is answered once it is applied to the
pending backend transaction, which the server commits every ``--backend-batch-interval``,
every ``--backend-batch-limit`` writes, on a snapshot and on stop (keelson.backend)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from keelson.backend import Backend
from keelson.mvcc import KVStore
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server.etcdserver import EtcdServer, MemberConfig
from tests.server.support import single_member_config


def _cfg(tmp: Path, **kw: Any) -> MemberConfig:
    return single_member_config(tmp, **kw)


def _flushed_get(backend: Backend, key: bytes) -> bool:
    """Whether another thread (seeing only committed state) finds a revision of ``key``."""
    found: list[bool] = []

    def look() -> None:
        with backend.read() as tx:
            found.append(any(key in v for _, v in tx.range(KVStore.BUCKETS[0], b"", None)))

    t = threading.Thread(target=look)
    t.start()
    t.join(10)
    return found[0]


def test_a_put_is_answered_before_the_backend_commit_and_readable_at_once(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        s = EtcdServer(_cfg(tmp_path, backend_batch_interval_s=3600.0))
        await s.start()
        try:
            await s.put(pb.PutRequest(key=b"deferred-key", value=b"v"))
            assert s.backend.pending_writes > 0
            assert not _flushed_get(s.backend, b"deferred-key")
            got = await s.range(pb.RangeRequest(key=b"deferred-key"))
            assert [kv.value for kv in got.kvs] == [b"v"]
            h1 = await s.hash_kv(pb.HashKVRequest())
            assert h1.header.revision == got.header.revision
        finally:
            await s.stop()
        b = Backend(str(tmp_path / "member" / "snap" / "db"), buckets=KVStore.BUCKETS)
        try:  # stop() committed it
            assert _flushed_get(b, b"deferred-key")
        finally:
            b.close()

    asyncio.run(main())


def test_the_interval_and_the_limit_commit_the_backend(tmp_path: Path) -> None:
    async def main() -> None:
        s = EtcdServer(_cfg(tmp_path / "a", backend_batch_interval_s=0.05))
        await s.start()
        try:
            await s.put(pb.PutRequest(key=b"timer-key", value=b"v"))
            for _ in range(100):
                if s.backend.pending_writes == 0:
                    break
                await asyncio.sleep(0.05)
            assert _flushed_get(s.backend, b"timer-key")
        finally:
            await s.stop()
        s = EtcdServer(_cfg(tmp_path / "b", backend_batch_interval_s=3600.0,
                            backend_batch_limit=1))
        await s.start()
        try:
            await s.put(pb.PutRequest(key=b"limit-key", value=b"v"))
            assert s.backend.pending_writes == 0
            assert _flushed_get(s.backend, b"limit-key")
        finally:
            await s.stop()

    asyncio.run(main())
