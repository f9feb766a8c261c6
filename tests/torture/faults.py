"""Faults of a torture run, each chosen and shaped by one seeded ``random.Random``.

Theory of operation: ``Faults.inject(kind)`` applies one fault to the cluster and returns a
``heal`` callable that undoes it completely (restarts what it killed, resumes what it
paused, lets every link pass, finishes a membership change). The schedule in
:mod:`.runner` alternates inject / hold / heal, so at most one fault is active at a time
and every fault is healed before the final quiet period. Every decision (which fault,
which member, how long, which bytes of a WAL to tear) comes from the run's seed; the wall
clock only decides *when* the cluster is in which state.

Kinds (``ALL_KINDS``): SIGKILL of the leader, a follower, a majority, all members (each
restarted from its data dir on heal); ``torn-wal`` (SIGKILL one member, then leave a torn,
never-acknowledged record after the last complete one in its newest WAL segment, garbage,
or a truncated file, before the restart); SIGSTOP of the
leader or a random member for longer than the election timeout; partitions through the
proxy: majority/minority, isolated leader, bridge (one member sees both sides), one-way
cuts (the leader's outbound links, or one member's inbound links), slow links (delay);
and ``membership`` (add a learner under load, promote it, remove another member), which
is only in the default schedule when joining over the network works.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from keelson.wal._record import HEADER, TRAILER, RecordType
from tests.torture.nodes import Node, TortureCluster
from tests.torture.workloads import Endpoints

Heal = Callable[[], None]

BASE_KINDS = (
    "kill-leader",
    "kill-follower",
    "kill-majority",
    "kill-all",
    "torn-wal",
    "pause-leader",
    "pause-member",
    "partition-majority",
    "isolate-leader",
    "bridge",
    "one-way-leader-out",
    "one-way-member-in",
    "slow-links",
)
MEMBERSHIP_KINDS = ("membership",)
ALL_KINDS = BASE_KINDS + MEMBERSHIP_KINDS


def newest_wal_segment(data_dir: Path) -> Path | None:
    segs = sorted((data_dir / "member" / "wal").glob("*.wal"))
    return segs[-1] if segs else None


def _records_end(data: bytes) -> int:
    """Offset just past the last complete frame of a segment (frames: u32 length, u8 type,
    payload, u32 crc); the preallocated zero tail starts there. A frame whose length runs
    past the file ends the walk before it (a write cut short by the kill)."""
    off = 0
    while off + HEADER.size <= len(data):
        length, rtype = HEADER.unpack_from(data, off)
        if rtype == 0 and length == 0:
            break
        end = off + HEADER.size + length + TRAILER.size
        if end > len(data):
            break
        off = end
    return off


def tear_wal_tail(data_dir: Path, rng: random.Random) -> str:
    """Leave the newest WAL segment as a crash in the middle of an append would; describe it.

    Only bytes past the last complete record change: a record whose write was cut short
    was never fsynced, so never acknowledged, and losing it is what a real crash does.
    (Damaging bytes of complete records would model a disk that loses fsynced data,
    which Raft does not tolerate: a member forgetting an acknowledged entry can elect a
    leader without it.) Three shapes, chosen by ``rng``:

    - ``partial``: the header of an entry record and part of its payload (a torn write);
    - ``garbage``: 1-48 random bytes (a sector holding junk after the crash);
    - ``truncate``: a partial record, then the file cut a few bytes after it (the
      preallocated tail lost too, as on a file system that did not keep the size).
    """
    seg = newest_wal_segment(data_dir)
    if seg is None:
        return "no WAL segment"
    data = bytearray(seg.read_bytes())
    end = _records_end(bytes(data))
    room = len(data) - end
    if end == 0 or room < 16:
        return f"{seg.name}: no room after the last record (end {end})"
    shape = rng.choice(("partial", "garbage", "truncate"))
    if shape == "garbage":
        junk = bytes([rng.randrange(1, 256)]) + rng.randbytes(rng.randint(0, 47))
    else:
        length = rng.randint(16, 512)
        body = rng.randbytes(rng.randint(0, min(length + 3, room - HEADER.size)))
        junk = HEADER.pack(length, RecordType.ENTRY) + body
    junk = junk[:room]
    data[end : end + len(junk)] = junk
    if shape == "truncate":
        size = min(len(data), end + len(junk) + rng.randint(0, 8))
        del data[size:]
        how = f"truncate: {len(junk)} bytes of a partial record after {end}, file cut at {size}"
    else:
        how = f"{shape}: {len(junk)} bytes after the last record at {end}"
    seg.write_bytes(bytes(data))
    return f"{seg.name}: {how}"


class Faults:
    """Injects one fault at a time into ``cluster``; ``log`` receives one line per action."""

    def __init__(
        self,
        cluster: TortureCluster,
        endpoints: Endpoints,
        rng: random.Random,
        log: Callable[[str], None],
    ) -> None:
        self.c = cluster
        self.endpoints = endpoints
        self.rng = rng
        self.log = log
        self.election_s = cluster.election_ms / 1000

    # --- helpers -----------------------------------------------------------------------------

    def _leader_or_any(self) -> Node:
        lead = self.c.leader()
        if lead is not None:
            return lead
        return self.rng.choice(self.c.voters())

    def _restart(self, nodes: list[Node]) -> None:
        for n in nodes:
            if not n.running() and not n.removed:
                self.c.start(n, state=n.start_state)

    def _names(self, nodes: list[Node]) -> str:
        return ",".join(n.name for n in nodes)

    def hold_time(self) -> float:
        return self.rng.uniform(2 * self.election_s, 8 * self.election_s)

    # --- faults --------------------------------------------------------------------------------

    def inject(self, kind: str) -> Heal:
        return getattr(self, "_" + kind.replace("-", "_"))()  # type: ignore[no-any-return]

    def _kill(self, nodes: list[Node], what: str) -> Heal:
        for n in nodes:
            self.c.kill(n)
        self.log(f"{what}: SIGKILL {self._names(nodes)}")

        def heal() -> None:
            self._restart(nodes)
            self.log(f"heal {what}: restarted {self._names(nodes)}")

        return heal

    def _kill_leader(self) -> Heal:
        return self._kill([self._leader_or_any()], "kill-leader")

    def _kill_follower(self) -> Heal:
        lead = self.c.leader()
        others = [n for n in self.c.voters() if n is not lead] or self.c.voters()
        return self._kill([self.rng.choice(others)], "kill-follower")

    def _kill_majority(self) -> Heal:
        voters = self.c.voters()
        return self._kill(self.rng.sample(voters, len(voters) // 2 + 1), "kill-majority")

    def _kill_all(self) -> Heal:
        return self._kill(self.c.live(), "kill-all")

    def _torn_wal(self) -> Heal:
        node = self.rng.choice(self.c.voters())
        self.c.kill(node)
        how = tear_wal_tail(node.data_dir, self.rng)
        self.log(f"torn-wal: SIGKILL {node.name}, {how}")

        def heal() -> None:
            self._restart([node])
            self.log(f"heal torn-wal: restarted {node.name}")

        return heal

    def _pause(self, node: Node, what: str) -> Heal:
        self.c.pause(node)
        self.log(f"{what}: SIGSTOP {node.name}")

        def heal() -> None:
            self.c.resume(node)
            self.log(f"heal {what}: SIGCONT {node.name}")

        return heal

    def _pause_leader(self) -> Heal:
        return self._pause(self._leader_or_any(), "pause-leader")

    def _pause_member(self) -> Heal:
        return self._pause(self.rng.choice(self.c.live()), "pause-member")

    def _net(self, what: str, apply: Callable[[], None]) -> Heal:
        apply()
        self.log(f"{what}: {self.c.proxy.describe()}")

        def heal() -> None:
            self.c.proxy.heal()
            self.log(f"heal {what}: all links pass")

        return heal

    def _shuffled(self) -> list[str]:
        names = [n.name for n in self.c.live()]
        self.rng.shuffle(names)
        return names

    def _partition_majority(self) -> Heal:
        names = self._shuffled()
        k = len(names) // 2
        return self._net(
            "partition-majority", lambda: self.c.proxy.partition([names[:k], names[k:]])
        )

    def _isolate_leader(self) -> Heal:
        lead = self._leader_or_any().name
        rest = [n.name for n in self.c.live() if n.name != lead]
        return self._net("isolate-leader", lambda: self.c.proxy.partition([[lead], rest]))

    def _bridge(self) -> Heal:
        names = self._shuffled()
        k = (len(names) - 1) // 2
        left, bridge, right = names[:k], names[k], names[k + 1 :]
        del bridge  # sees both sides: no rule involves it

        def apply() -> None:
            for a in left:
                for b in right:
                    self.c.proxy.cut_both(a, b)

        return self._net("bridge", apply)

    def _one_way_leader_out(self) -> Heal:
        lead = self._leader_or_any().name
        rest = [n.name for n in self.c.live() if n.name != lead]

        def apply() -> None:
            for b in rest:
                self.c.proxy.cut(lead, b)

        return self._net("one-way-leader-out", apply)

    def _one_way_member_in(self) -> Heal:
        names = self._shuffled()
        victim, rest = names[0], names[1:]

        def apply() -> None:
            for a in rest:
                self.c.proxy.cut(a, victim)

        return self._net("one-way-member-in", apply)

    def _slow_links(self) -> Heal:
        names = self._shuffled()
        ms = self.rng.randint(20, 300)

        def apply() -> None:
            for a in names:
                for b in names:
                    if a != b and self.rng.random() < 0.6:
                        self.c.proxy.delay(a, b, ms)

        return self._net("slow-links", apply)

    def _membership(self) -> Heal:
        """Add a learner, wait for it to catch up, promote it, remove another member."""
        via = self._leader_or_any()
        try:
            node = self.c.add_learner(via)
        except grpc.RpcError as exc:
            self.log(f"membership: MemberAdd via {via.name} failed: {exc.code()}")
            return lambda: None
        self.log(f"membership: added learner {node.name} ({node.member_id:x}) via {via.name}")
        deadline = time.monotonic() + 30
        promoted = False
        while time.monotonic() < deadline and not promoted:
            time.sleep(0.5)
            lead = self._leader_or_any()
            try:
                self.c.promote(lead, node)
                promoted = True
            except grpc.RpcError as exc:
                self.log(f"membership: promote {node.name} via {lead.name}: {exc.details()}")
        if not promoted:
            self.log(f"membership: {node.name} never promoted; removing it")
            victim = node
        else:
            self.log(f"membership: promoted {node.name}")
            victim = self.rng.choice([n for n in self.c.voters() if n is not node])
        for _ in range(20):
            lead = self._leader_or_any()
            try:
                self.c.remove(lead, victim)
                break
            except grpc.RpcError as exc:
                self.log(f"membership: remove {victim.name} via {lead.name}: {exc.details()}")
                time.sleep(0.5)
        if victim.removed:
            self.log(f"membership: removed {victim.name}")
            if victim is not node:
                self.endpoints.replace(victim.name, node.name)

        def heal() -> None:
            if victim.removed:
                time.sleep(1.0)  # let the removed member learn of its removal, then stop it
                self.c.kill(victim)
                self.log(f"heal membership: stopped removed member {victim.name}")

        return heal
