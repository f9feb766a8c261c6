"""Micro benchmark: CPU of the raft core per replicated write, three RawNodes in memory.

    python -m bench.raft_core                  # 20,000 puts, µs of CPU per put
    python -m bench.raft_core -n 5000 --profile  # cProfile of the same loop, top functions
    python -m bench.raft_core --digest         # also hash every Ready (behaviour check)

Three ``RawNode``s over ``MemoryStorage`` are wired together in one process, the way
``keelson/server`` drives its node but with no WAL, no sockets and no state machine: for
every Ready, persist the snapshot, entries and hard state to the node's ``MemoryStorage``,
hand the messages to the peers' inboxes, "apply" the committed entries (record the index)
and ``advance``. One put is: propose one 256-byte entry on the leader, then pump Readies
and deliver messages until that entry is applied on all three members. The clock is
``time.process_time()`` around the whole loop (so it includes this driver's own
bookkeeping); the leader/followers/driver split sums ``perf_counter`` intervals around each
node's own work (propose, step, Ready, persist, advance) and scales them by the loop's
CPU/wall ratio, so a busy machine does not inflate them.

The figure is the ceiling the raft core puts on a member's writes at one request in
flight, not a server's throughput. ``--digest`` hashes the ``repr`` of every Ready, so two
versions of the core can be checked to behave identically on this run (it costs time: do
not compare the µs figures of a ``--digest`` run).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import random
import time
from collections import deque

from keelson.raft import Config, MemoryStorage, Message, RawNode, StateType

IDS = (1, 2, 3)
PAYLOAD = bytes(range(256))


class Member:
    """One node, its storage, its inbox and the CPU seconds spent on its behalf."""

    def __init__(self, node_id: int) -> None:
        self.id = node_id
        self.storage = MemoryStorage()
        self.node = RawNode(Config(id=node_id, rng=random.Random(node_id)), self.storage)
        self.node.bootstrap(list(IDS))
        self.inbox: deque[Message] = deque()
        self.applied = 0
        self.seconds = 0.0


class Cluster:
    def __init__(self, digest: bool) -> None:
        self.members = {i: Member(i) for i in IDS}
        self._hash = hashlib.sha256() if digest else None

    def pump(self) -> bool:
        """Deliver every queued message and handle every Ready once; True if anything
        happened (so the caller pumps again until quiet)."""
        busy = False
        clock = time.perf_counter
        for mem in self.members.values():
            t0 = clock()
            node = mem.node
            inbox = mem.inbox
            while inbox:
                node.step(inbox.popleft())
                busy = True
            out: list[Message] = []
            while node.has_ready():
                busy = True
                rd = node.ready()
                if self._hash is not None:
                    self._hash.update(repr((mem.id, rd)).encode())
                st = mem.storage
                if rd.snapshot is not None and not rd.snapshot.is_empty():
                    st.apply_snapshot(rd.snapshot)
                if rd.entries:
                    st.append(rd.entries)
                if rd.hard_state is not None:
                    st.set_hard_state(rd.hard_state)
                out.extend(rd.messages)
                if rd.committed_entries:
                    mem.applied = rd.committed_entries[-1].index
                node.advance(rd)
            mem.seconds += clock() - t0
            for m in out:
                self.members[m.to].inbox.append(m)
        return busy

    def settle(self) -> None:
        while self.pump():
            pass

    def leader(self) -> Member:
        for mem in self.members.values():
            if mem.node.raft.state == StateType.LEADER:
                return mem
        raise RuntimeError("no leader")

    def digest(self) -> str:
        return self._hash.hexdigest() if self._hash is not None else "-"


def run(n: int, digest: bool, profile: bool) -> None:
    c = Cluster(digest)
    c.settle()
    c.members[1].node.campaign()
    c.settle()
    lead = c.leader()
    for mem in c.members.values():
        mem.seconds = 0.0
    prof = cProfile.Profile() if profile else None
    if prof is not None:
        prof.enable()
    clock = time.perf_counter
    t0, w0 = time.process_time(), clock()
    for _ in range(n):
        t1 = clock()
        lead.node.propose(PAYLOAD)
        lead.seconds += clock() - t1
        target = lead.node.raft.log.last_index()
        while True:
            c.pump()
            if all(m.applied >= target for m in c.members.values()):
                break
    cpu, wall = time.process_time() - t0, clock() - w0
    if prof is not None:
        prof.disable()
    c.settle()
    last = lead.node.raft.log.last_index()
    if any(m.applied != last for m in c.members.values()):
        raise RuntimeError("members did not converge")
    # The machine may be shared: scale each side's wall time to the CPU time of the loop.
    per_put = cpu / wall / n * 1e6
    followers = sum(m.seconds for m in c.members.values() if m is not lead)
    print(
        f"raft_core: {n} puts, {cpu / n * 1e6:.1f} µs CPU per put "
        f"(leader {lead.seconds * per_put:.1f}, two followers {followers * per_put:.1f}, "
        f"driver {(wall - lead.seconds - followers) * per_put:.1f}), "
        f"last index {last}, digest {c.digest()[:16]}"
    )
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=20000, help="number of puts (default 20000)")
    ap.add_argument("--digest", action="store_true", help="hash every Ready (slower)")
    ap.add_argument("--profile", action="store_true", help="cProfile the put loop")
    args = ap.parse_args()
    run(args.n, args.digest, args.profile)


if __name__ == "__main__":
    main()
