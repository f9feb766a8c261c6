"""Runs one scenario of the PyPI ``aetcd`` client (asyncio) against an endpoint.

Usage: ``python aetcd_script.py HOST:PORT SCENARIO``. Exit status 0 and a last line ``ok
SCENARIO`` when every check held; a traceback and a non-zero status otherwise.

Why a separate process: aetcd's generated messages use the same protobuf package names as
keelson's (``etcdserverpb``, ``mvccpb``, ``authpb``), and one process's descriptor pool cannot
hold both ("duplicate symbol 'authpb.UserAddOptions'"). Each scenario uses keys under its own
prefix, so scenarios may run in any order against one member.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import aetcd  # type: ignore[import-untyped]
import aetcd.exceptions  # type: ignore[import-untyped]
import aetcd.rtypes  # type: ignore[import-untyped]


async def kv(c: aetcd.Client) -> None:
    await c.put(b"kv/a", b"1")
    await c.put(b"kv/b", b"2")
    await c.put(b"kv/c", b"3")
    got = await c.get(b"kv/a")
    assert got is not None and got.value == b"1" and got.version == 1, got
    assert await c.get(b"kv/missing") is None
    put = await c.put(b"kv/a", b"1b", prev_kv=True)
    assert put.prev_kv is not None and put.prev_kv.value == b"1"
    got = await c.get(b"kv/a")
    assert got.version == 2 and got.mod_revision > got.create_revision
    rng = await c.get_prefix(b"kv/")
    assert [(x.key, x.value) for x in rng] == [(b"kv/a", b"1b"), (b"kv/b", b"2"),
                                               (b"kv/c", b"3")], rng
    assert len(rng) == 3 and rng.count == 3
    keys_only = await c.get_prefix(b"kv/", keys_only=True, sort_order="descend")
    assert [(x.key, x.value) for x in keys_only] == [(b"kv/c", b""), (b"kv/b", b""),
                                                     (b"kv/a", b"")], keys_only
    part = await c.get_range(b"kv/a", b"kv/c")
    assert [x.key for x in part] == [b"kv/a", b"kv/b"]
    deleted = await c.delete(b"kv/a", prev_kv=True)
    assert deleted is not None and deleted.deleted == 1 and deleted.prev_kv.value == b"1b"
    assert await c.delete(b"kv/a") is None
    gone = await c.delete_prefix(b"kv/", prev_kv=True)
    assert gone.deleted == 2 and sorted(x.key for x in gone) == [b"kv/b", b"kv/c"]
    assert len(await c.get_prefix(b"kv/")) == 0


async def replace(c: aetcd.Client) -> None:
    await c.put(b"cas/k", b"old")
    assert await c.replace(b"cas/k", b"wrong", b"new") is False
    assert (await c.get(b"cas/k")).value == b"old"
    assert await c.replace(b"cas/k", b"old", b"new") is True
    assert (await c.get(b"cas/k")).value == b"new"


async def txn(c: aetcd.Client) -> None:
    await c.put(b"txn/k", b"v1")
    cur = await c.get(b"txn/k")
    t = c.transactions
    ok, responses = await c.transaction(
        compare=[
            t.value(b"txn/k") == b"v1",
            t.version(b"txn/k") > 0,
            t.create(b"txn/k") == cur.create_revision,
            t.mod(b"txn/k") < cur.mod_revision + 1,
        ],
        success=[t.put(b"txn/k", b"v2"), t.get(b"txn/k"), t.put(b"txn/other", b"o")],
        failure=[t.put(b"txn/k", b"failed")],
    )
    assert ok is True and len(responses) == 3
    assert [v for v, _ in responses[1]] == [b"v2"], responses[1]
    ok, responses = await c.transaction(
        compare=[t.value(b"txn/k") != b"v2"],
        success=[t.put(b"txn/k", b"bad")],
        failure=[t.delete(b"txn/other"), t.get(b"txn/k")],
    )
    assert ok is False
    assert responses[0].response_delete_range.deleted == 1
    assert await c.get(b"txn/other") is None


async def lease(c: aetcd.Client) -> None:
    ls = await c.lease(30)
    assert ls.id > 0 and ls.ttl == 30
    await c.put(b"lease/k1", b"a", lease=ls)
    await c.put(b"lease/k2", b"b", lease=ls.id)
    assert 0 < await ls.remaining_ttl() <= 30
    assert await ls.granted_ttl() == 30
    assert sorted(await ls.keys()) == [b"lease/k1", b"lease/k2"]
    reply = await ls.refresh()
    assert reply.ID == ls.id and reply.TTL == 30, reply
    assert (await c.get(b"lease/k1")).lease == ls.id
    await ls.revoke()
    assert len(await c.get_prefix(b"lease/")) == 0
    assert (await c.get_lease_info(ls.id)).TTL == -1
    try:
        await c.lease(30, lease_id=ls.id + 1)
        await c.lease(30, lease_id=ls.id + 1)
        raise AssertionError("granting an existing lease id succeeded")
    except aetcd.exceptions.DuplicateLeaseError:
        pass
    short = await c.lease(2)
    await c.put(b"lease/short", b"s", lease=short)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while await c.get(b"lease/short") is not None:
        assert loop.time() < deadline, "a 2 s lease did not expire in 20 s"
        await asyncio.sleep(0.2)
    reply = await c.refresh_lease(short.id)
    assert reply.TTL <= 0, reply  # etcd answers a keep-alive of a gone lease with TTL 0


async def _collect(w: aetcd.rtypes.Watch, n: int, out: list[aetcd.rtypes.Event]) -> None:
    async for ev in w:
        out.append(ev)
        if len(out) == n:
            return


async def watch(c: aetcd.Client) -> None:
    w = await c.watch(b"watch/k", prev_kv=True)
    got: list[aetcd.rtypes.Event] = []
    task = asyncio.create_task(_collect(w, 3, got))
    await c.put(b"watch/k", b"1")
    await c.put(b"watch/other", b"x")
    await c.put(b"watch/k", b"2")
    await c.delete(b"watch/k")
    await asyncio.wait_for(task, 10)
    assert [(e.kind, e.kv.key) for e in got] == [
        ("PUT", b"watch/k"), ("PUT", b"watch/k"), ("DELETE", b"watch/k")], got
    assert got[1].prev_kv is not None and got[1].prev_kv.value == b"1"
    await w.cancel()

    pw = await c.watch_prefix(b"watch/p/", kind=aetcd.rtypes.EventKind.PUT)
    seen: list[aetcd.rtypes.Event] = []
    task = asyncio.create_task(_collect(pw, 5, seen))
    for i in range(5):
        await c.put(f"watch/p/{i}".encode(), str(i).encode())
        await c.delete(f"watch/p/{i}".encode())  # filtered out (PUT only)
    await asyncio.wait_for(task, 10)
    assert [e.kv.key for e in seen] == [f"watch/p/{i}".encode() for i in range(5)], seen
    assert {e.kind for e in seen} == {"PUT"}
    await pw.cancel()

    # from a past revision: history first, in order
    first = seen[0].kv.mod_revision
    hist = await c.watch_prefix(b"watch/p/", start_revision=first)
    past: list[aetcd.rtypes.Event] = []
    await asyncio.wait_for(_collect(hist, 10, past), 10)
    assert [e.kv.mod_revision for e in past] == list(range(first, first + 10)), past
    await hist.cancel()

    task = asyncio.create_task(c.watch_once(b"watch/once", timeout=10))
    await asyncio.sleep(0.5)
    await c.put(b"watch/once", b"1")
    ev = await task
    assert ev.kv.value == b"1"
    try:
        await c.watch_once(b"watch/never", timeout=0.5)
        raise AssertionError("watch_once returned without an event")
    except aetcd.exceptions.WatchTimeoutError:
        pass

    # a compacted start revision is reported as such
    await c.put(b"watch/c", b"1")
    rev = (await c.put(b"watch/c", b"2")).header.revision
    await c.compact(rev)
    try:
        cw = await c.watch(b"watch/c", start_revision=rev - 1)
        async for ev in cw:
            raise AssertionError(f"event {ev} from a compacted revision")
        raise AssertionError("watch from a compacted revision ended without an error")
    except aetcd.exceptions.RevisionCompactedError as exc:
        assert exc.compacted_revision == rev, exc.compacted_revision


async def lock(c: aetcd.Client) -> None:
    lk = c.lock(b"/locks/l1", ttl=10)
    assert await lk.acquire(timeout=5) is True
    assert await lk.is_acquired() is True
    other = c.lock(b"/locks/l1", ttl=10)
    assert await other.acquire(timeout=1) is False
    waiter = asyncio.create_task(other.acquire(timeout=10))
    await asyncio.sleep(0.5)
    assert (await lk.refresh()).TTL == 10
    assert await lk.release() is True
    assert await asyncio.wait_for(waiter, 15) is True
    assert await other.is_acquired() and not await lk.is_acquired()
    assert await other.release() is True
    async with c.lock(b"/locks/l2", ttl=5) as held:
        assert await held.is_acquired()
    assert await c.get(b"/locks/l2") is None


async def cluster(c: aetcd.Client) -> None:
    members = [m async for m in c.members()]
    assert len(members) == 1, members
    m = members[0]
    assert m.id != 0 and m.name and m.peer_urls and m.client_urls
    st = await c.status()
    assert st.version.startswith("3.4"), st.version
    assert st.leader is not None and st.leader.id == m.id
    assert st.db_size > 0 and st.raft_index > 0 and st.raft_term > 0
    assert await c.hash() != 0
    assert [a async for a in c.list_alarms()] == []
    await c.defragment()


SCENARIOS: dict[str, Callable[[aetcd.Client], Awaitable[None]]] = {
    f.__name__: f for f in (kv, replace, txn, lease, watch, lock, cluster)
}


async def run(endpoint: str, name: str) -> None:
    host, port = endpoint.rsplit(":", 1)
    async with aetcd.Client(host=host, port=int(port), timeout=10) as client:
        await SCENARIOS[name](client)


def main() -> None:
    asyncio.run(run(sys.argv[1], sys.argv[2]))
    print(f"ok {sys.argv[2]}")


if __name__ == "__main__":
    main()
