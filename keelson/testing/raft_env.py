"""An interaction environment for raft scenario files (tests/raft/testdata/*.txt).

It holds a set of RawNodes with MemoryStorage, a mailbox per node, and a set of isolated
nodes. Each scenario command manipulates it and returns deterministic text (nodes and
messages in id order). Vocabulary (ids are integers):

  add-nodes N [voters=(..)] [learners=(..)] [index=I] [prevote=bool] [checkquorum=bool]
            [max-inflight=N] [max-size=N] [forwarding=bool]
      N new nodes; with voters/learners, each starts from a snapshot at I (default 1)
      holding that membership; without, a node starts empty (to be added by conf change)
  campaign ID | propose ID DATA | propose-conf-change ID v4|l4|r2 | read-index ID CTX
  transfer-leadership from=ID to=ID | report-unreachable ID PEER | report-snapshot ID PEER
  tick-election ID | tick-heartbeat ID | tick ID n=K
  process-ready ID.. | deliver-msgs ID.. [type=APP] | drop-msgs ID..
  stabilize [ID..]   repeat process-ready + deliver-msgs for all nodes until quiet
  isolate ID | heal  messages to or from isolated nodes are dropped when sent
                     and when delivered
  compact ID INDEX   snapshot at INDEX then compact storage (application data "snap@I")
  restart ID (crash: unpersisted state is lost)
  status ID | raft-log ID | raft-state

Committed conf change entries are applied (apply_conf_change) during process-ready, and
the storage then takes a snapshot at that index holding the new membership.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from keelson.raft.config import Config
from keelson.raft.rawnode import RawNode
from keelson.raft.storage import MemoryStorage
from keelson.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    RaftError,
    Ready,
    Snapshot,
    SnapshotMetadata,
)
from keelson.testing.datadriven import TestCase


def fmt_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        try:
            cc = ConfChange.decode(e.data)
            kind = {
                ConfChangeType.ADD_NODE: "v",
                ConfChangeType.ADD_LEARNER_NODE: "l",
                ConfChangeType.REMOVE_NODE: "r",
                ConfChangeType.UPDATE_NODE: "u",
            }[cc.type]
            return f"{e.term}/{e.index} EntryConfChange {kind}{cc.node_id}"
        except ValueError:
            return f"{e.term}/{e.index} EntryConfChange <malformed>"
    return f"{e.term}/{e.index} EntryNormal {e.data.decode(errors='replace')!r}"


def fmt_msg(m: Message) -> str:
    s = f"{m.frm}->{m.to} {m.type.name} Term:{m.term} Log:{m.log_term}/{m.index}"
    if m.commit:
        s += f" Commit:{m.commit}"
    if m.reject:
        s += f" Rejected (Hint: {m.reject_hint})"
    if m.context:
        s += f" Ctx:{m.context.decode(errors='replace')}"
    if m.entries:
        s += " Entries:[" + ", ".join(fmt_entry(e) for e in m.entries) + "]"
    if m.snapshot is not None:
        md = m.snapshot.metadata
        s += (
            f" Snapshot: Index:{md.index} Term:{md.term}"
            f" Voters:{list(md.conf_state.voters)} Learners:{list(md.conf_state.learners)}"
        )
    return s


def fmt_hs(hs: HardState) -> str:
    return f"HardState Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}"


def _flag(tc: TestCase, key: str, default: bool) -> bool:
    a = tc.arg(key)
    return default if a is None else a.vals[0] == "true"


def _int(tc: TestCase, key: str, default: int) -> int:
    a = tc.arg(key)
    return default if a is None else a.int()


@dataclass
class Node:
    rn: RawNode
    storage: MemoryStorage
    applied: list[Entry] = field(default_factory=list)
    history: list[Snapshot] = field(default_factory=list)


class RaftEnv:
    def __init__(self, seed: int = 0) -> None:
        self.nodes: dict[int, Node] = {}
        self.mailbox: dict[int, list[Message]] = {}
        self.isolated: set[int] = set()
        self.seed = seed

    def handle(self, tc: TestCase) -> str:
        fn = getattr(self, "cmd_" + tc.cmd.replace("-", "_"), None)
        if fn is None:
            raise ValueError(f"{tc.pos}: unknown command {tc.cmd!r}")
        try:
            out: str = fn(tc)
        except RaftError as exc:
            out = f"error: {type(exc).__name__}: {exc}"
        return out

    def _ids(self, tc: TestCase) -> list[int]:
        ids = [int(p) for p in tc.positional() if p.isdigit()]
        return ids or sorted(self.nodes)

    # ---------------------------------------------------------------- setup
    def cmd_add_nodes(self, tc: TestCase) -> str:
        n = int(tc.positional()[0])
        va, la = tc.arg("voters"), tc.arg("learners")
        voters = tuple(sorted(int(v) for v in va.vals)) if va else ()
        learners = tuple(sorted(int(v) for v in la.vals)) if la else ()
        index = _int(tc, "index", 1)
        lines = []
        for _ in range(n):
            nid = max(self.nodes, default=0) + 1
            storage = MemoryStorage()
            applied = 0
            if voters or learners:
                storage.apply_snapshot(
                    Snapshot(SnapshotMetadata(index, 1, ConfState(voters, learners)))
                )
                storage.set_hard_state(HardState(1, 0, index))
                applied = index
            cfg = Config(
                id=nid,
                applied=applied,
                pre_vote=_flag(tc, "prevote", True),
                check_quorum=_flag(tc, "checkquorum", True),
                max_inflight_msgs=_int(tc, "max-inflight", 256),
                max_size_per_msg=_int(tc, "max-size", 1 << 20),
                disable_proposal_forwarding=not _flag(tc, "forwarding", True),
                rng=random.Random(self.seed * 1000 + nid),
            )
            self.nodes[nid] = Node(RawNode(cfg, storage), storage)
            self.mailbox[nid] = []
            lines.append(f"node {nid}: {self._state_line(nid)}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- driving
    def cmd_campaign(self, tc: TestCase) -> str:
        self.nodes[self._ids(tc)[0]].rn.campaign()
        return ""

    def cmd_propose(self, tc: TestCase) -> str:
        nid, data = tc.positional()[0], tc.positional()[1]
        self.nodes[int(nid)].rn.propose(data.encode())
        return ""

    def cmd_propose_conf_change(self, tc: TestCase) -> str:
        nid, spec = tc.positional()[0], tc.positional()[1]
        kind = {"v": ConfChangeType.ADD_NODE, "l": ConfChangeType.ADD_LEARNER_NODE,
                "r": ConfChangeType.REMOVE_NODE}[spec[0]]
        self.nodes[int(nid)].rn.propose_conf_change(ConfChange(kind, int(spec[1:])))
        return ""

    def cmd_read_index(self, tc: TestCase) -> str:
        nid, ctx = tc.positional()[0], tc.positional()[1]
        self.nodes[int(nid)].rn.read_index(ctx.encode())
        return ""

    def cmd_transfer_leadership(self, tc: TestCase) -> str:
        frm, to = _int(tc, "from", 0), _int(tc, "to", 0)
        self.nodes[frm].rn.transfer_leader(to)
        return ""

    def cmd_report_unreachable(self, tc: TestCase) -> str:
        nid, peer = (int(p) for p in tc.positional()[:2])
        self.nodes[nid].rn.report_unreachable(peer)
        return ""

    def cmd_report_snapshot(self, tc: TestCase) -> str:
        nid, peer = (int(p) for p in tc.positional()[:2])
        self.nodes[nid].rn.report_snapshot(peer, failed=_flag(tc, "failed", False))
        return ""

    def cmd_tick_election(self, tc: TestCase) -> str:
        for nid in self._ids(tc):
            rn = self.nodes[nid].rn
            for _ in range(rn.raft.config.election_tick * 2):
                rn.tick()
        return ""

    def cmd_tick_heartbeat(self, tc: TestCase) -> str:
        for nid in self._ids(tc):
            rn = self.nodes[nid].rn
            for _ in range(rn.raft.config.heartbeat_tick):
                rn.tick()
        return ""

    def cmd_tick(self, tc: TestCase) -> str:
        for nid in self._ids(tc):
            for _ in range(_int(tc, "n", 1)):
                self.nodes[nid].rn.tick()
        return ""

    def cmd_isolate(self, tc: TestCase) -> str:
        self.isolated.update(self._ids(tc))
        return ""

    def cmd_heal(self, tc: TestCase) -> str:
        self.isolated.clear()
        return ""

    def cmd_restart(self, tc: TestCase) -> str:
        """Crash and restart: unpersisted state is lost, a new RawNode reads storage."""
        for nid in self._ids(tc):
            node = self.nodes[nid]
            old = node.rn.raft.config
            cfg = dataclasses.replace(old, applied=node.rn.raft.log.applied)
            node.rn = RawNode(cfg, node.storage)
            self.mailbox[nid] = []
        return self.cmd_raft_state(tc)

    def cmd_compact(self, tc: TestCase) -> str:
        nid, index = (int(p) for p in tc.positional()[:2])
        node = self.nodes[nid]
        cs = node.rn.raft.tracker.conf_state()
        node.storage.create_snapshot(index, cs, f"snap@{index}".encode())
        node.storage.compact(index)
        return self._log(nid)

    # ---------------------------------------------------------------- ready / messages
    def _process_ready(self, nid: int) -> list[str]:
        node = self.nodes[nid]
        rn = node.rn
        if not rn.has_ready():
            return []
        rd: Ready = rn.ready()
        lines = [f"> {nid} handling Ready"]
        if rd.soft_state is not None:
            ss = rd.soft_state
            lines.append(f"  Lead:{ss.lead} State:{ss.raft_state.name}")
        if rd.hard_state is not None:
            lines.append("  " + fmt_hs(rd.hard_state))
        if rd.snapshot is not None:
            md = rd.snapshot.metadata
            lines.append(
                f"  Snapshot Index:{md.index} Term:{md.term} Voters:{list(md.conf_state.voters)}"
                f" Learners:{list(md.conf_state.learners)}"
            )
            node.storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            lines.append("  Entries:")
            lines += ["    " + fmt_entry(e) for e in rd.entries]
            node.storage.append(rd.entries)
        if rd.hard_state is not None:
            node.storage.set_hard_state(rd.hard_state)
        if rd.committed_entries:
            lines.append("  CommittedEntries:")
            lines += ["    " + fmt_entry(e) for e in rd.committed_entries]
        if rd.messages:
            lines.append("  Messages:")
            for m in rd.messages:
                if m.to in self.isolated or m.frm in self.isolated:
                    lines.append(f"    {fmt_msg(m)} [dropped]")
                else:
                    lines.append(f"    {fmt_msg(m)}")
                    self.mailbox.setdefault(m.to, []).append(m)
        for rs in rd.read_states:
            lines.append(f"  ReadState Index:{rs.index} Ctx:{rs.request_ctx.decode()}")
        for e in rd.committed_entries:
            node.applied.append(e)
            if e.type == EntryType.CONF_CHANGE:
                cs = rn.apply_conf_change(ConfChange.decode(e.data))
                # like a real application, snapshot at each membership change so a new
                # member can be caught up with a snapshot that includes it
                node.storage.create_snapshot(e.index, cs, f"snap@{e.index}".encode())
                lines.append(
                    f"  INFO {nid} applied conf change {fmt_entry(e).split()[-1]}:"
                    f" voters={list(cs.voters)} learners={list(cs.learners)}"
                )
        rn.advance(rd)
        return lines

    def _deliver(self, nid: int, type_filter: str | None = None, drop: bool = False) -> list[str]:
        box = self.mailbox.get(nid, [])
        take = [m for m in box if type_filter is None or m.type.name == type_filter]
        if not take:
            return []
        self.mailbox[nid] = [m for m in box if m not in take]
        lines = []
        for m in take:
            if drop or nid in self.isolated or m.frm in self.isolated or nid not in self.nodes:
                lines.append(f"  dropped: {fmt_msg(m)}")
                continue
            lines.append("  " + fmt_msg(m))
            try:
                self.nodes[nid].rn.step(m)
            except RaftError as exc:
                lines.append(f"  error: {type(exc).__name__}: {exc}")
        return [f"> {nid} receiving messages", *lines]

    def cmd_process_ready(self, tc: TestCase) -> str:
        out: list[str] = []
        for nid in self._ids(tc):
            out += self._process_ready(nid)
        return "\n".join(out)

    def cmd_deliver_msgs(self, tc: TestCase) -> str:
        t = tc.arg("type")
        out: list[str] = []
        for nid in self._ids(tc):
            out += self._deliver(nid, t.vals[0] if t else None)
        return "\n".join(out)

    def cmd_drop_msgs(self, tc: TestCase) -> str:
        out: list[str] = []
        for nid in self._ids(tc):
            out += self._deliver(nid, drop=True)
        return "\n".join(out)

    def cmd_stabilize(self, tc: TestCase) -> str:
        ids = self._ids(tc)
        out: list[str] = []
        for _ in range(1000):
            progressed = False
            for nid in ids:
                lines = self._process_ready(nid)
                out += lines
                progressed = progressed or bool(lines)
            for nid in ids:
                lines = self._deliver(nid)
                out += lines
                progressed = progressed or bool(lines)
            if not progressed:
                return "\n".join(out)
        raise AssertionError("stabilize did not converge")

    # ---------------------------------------------------------------- inspection
    def _state_line(self, nid: int) -> str:
        r = self.nodes[nid].rn.raft
        return (
            f"{r.state.name} term={r.term} lead={r.lead} vote={r.vote}"
            f" commit={r.log.committed} applied={r.log.applied} last={r.log.last_index()}"
        )

    def cmd_raft_state(self, tc: TestCase) -> str:
        return "\n".join(
            f"{nid}: {self._state_line(nid)}" + (" (isolated)" if nid in self.isolated else "")
            for nid in self._ids(tc)
        )

    def cmd_status(self, tc: TestCase) -> str:
        lines = []
        for nid in self._ids(tc):
            st = self.nodes[nid].rn.status()
            lines.append(f"{nid}: {self._state_line(nid)} transferee={st.lead_transferee}")
            for pid, pr in self.nodes[nid].rn.raft.tracker.sorted_items():
                lines.append(f"  {pid}: {pr!r}")
        return "\n".join(lines)

    def _log(self, nid: int) -> str:
        node = self.nodes[nid]
        log = node.rn.raft.log
        ents = log.all_entries()
        lines = [
            f"{nid}: first={log.first_index()} last={log.last_index()}"
            f" commit={log.committed} applied={log.applied}"
        ]
        lines += ["  " + fmt_entry(e) for e in ents]
        return "\n".join(lines)

    def cmd_raft_log(self, tc: TestCase) -> str:
        return "\n".join(self._log(nid) for nid in self._ids(tc))
