"""The simulation of one seeded run: a cluster of RawNodes, a network, a client and faults.

``Simulation(seed, options).run()`` is a pure function of its arguments. One
``random.Random(seed)`` feeds everything (the nodes' election jitter included), events
run in virtual-time order from an ``Agenda``, and every step is checked by a ``Checker``.

A run has two phases. During the first ``options.steps`` steps the fault schedule acts
every few ticks (partitions of every shape, crashes and restarts, membership changes one
at a time, leadership transfers, network quality changes, forced compaction) while the
client proposes writes and ReadIndex reads at random members. Then faults stop: the
network heals and becomes reliable, every member is restarted, and a write proposed from
then on must be acknowledged within ``options.progress_ticks`` ticks (rule 7).

Each member handles Ready as etcd's server does (persist snapshot, entries, hard state;
send; apply; advance), one Ready after another until none is left, within the step that
produced it. A write is acknowledged to the client when the member it was proposed to
applies it; a read is served when its member has applied the ReadIndex answer's index.
Members removed from the cluster are shut down when the removal is first applied, as etcd
does, and messages to or from them are dropped.

With ``SimOptions.parallel_append`` a leader sends the messages ``split_early`` allows
before persisting its Ready (keelson's experimental parallel append), and a member with
something to persist crashes between that early send and the persistence with probability
``mid_save_crash``; the messages already sent are still delivered.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from keelson.raft.log import RaftLog
from keelson.raft.parallel_append import split_early
from keelson.raft.rawnode import RawNode, StepPeerNotFoundError
from keelson.raft.sim.checker import MAX_RECORDED, Checker, TermAt, Violation, write_id
from keelson.raft.sim.clock import TICK, Agenda, Event, EventKind
from keelson.raft.sim.faults import inject_fault
from keelson.raft.sim.network import RELIABLE, Network
from keelson.raft.sim.node import SimNode, decode_writes, encode_writes
from keelson.raft.sim.trace import TAIL, Trace, fmt_conf_change, fmt_message
from keelson.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDropped,
    RaftError,
    Ready,
    StateType,
)

DEFAULT_STEPS = 2500


@dataclass(frozen=True, slots=True)
class SimOptions:
    nodes: int = 3
    steps: int = DEFAULT_STEPS
    progress_ticks: int = 150
    parallel_append: bool = False
    """Leaders send ``split_early``'s messages before persisting the Ready, as keelson's
    server does with its experimental switch, and members sometimes crash in between."""
    mid_save_crash: float = 0.03
    """With ``parallel_append``: chance that a member with something to persist crashes
    after the early send and before persisting (while faults are on)."""


@dataclass
class RunResult:
    seed: int
    nodes: int
    steps: int
    violations: list[Violation]
    first: dict[str, Violation]
    trace: list[str]  # every line (full trace), else the last lines up to the first violation
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.first


class Simulation:
    def __init__(self, seed: int, options: SimOptions, trace: Trace | None = None) -> None:
        if options.nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {options.nodes}")
        self.seed = seed
        self.options = options
        self.rng = random.Random(seed)
        self.agenda = Agenda()
        self.net = Network(self.rng, self.agenda)
        self.checker = Checker()
        self.trace = trace if trace is not None else Trace()
        self.nodes: dict[int, SimNode] = {}
        self.step = 0
        self.final = False
        self.final_start = 0
        self.progress_ok = False
        self.deadline_passed = False
        self.leaders: dict[int, int] = {}  # node -> term, nodes last seen leading
        # membership as of the highest applied conf change anywhere
        self.conf_index = 0
        self.view = ConfState(tuple(range(1, options.nodes + 1)), ())
        self.conf_inflight: tuple[int, ConfChange] | None = None
        self.next_id = options.nodes + 1
        self.pending_writes: dict[int, tuple[int, int, int]] = {}  # w -> node, inc, time
        self.reads: dict[bytes, tuple[int, int]] = {}  # ctx -> node, incarnation
        self.next_write = 1
        self.next_read = 1
        self.compact_every = self.rng.randint(4, 30)
        self.compact_keep = self.rng.randint(0, 6)
        # small messages split the log into many appends (one or two entries each)
        self.max_msg_size = self.rng.choice((1, 64, 16384))
        self.max_inflight = self.rng.choice((1, 4, 16))
        self.stats = {
            "writes": 0,
            "acks": 0,
            "reads": 0,
            "served": 0,
            "crashes": 0,
            "conf_changes": 0,
            "snapshots_installed": 0,
            "transfers": 0,
            "partitions": 0,
            "elections": 0,
            "early_messages": 0,
            "mid_save_crashes": 0,
            "leader_mid_save_crashes": 0,
        }

    # ================================================================== the loop
    def run(self) -> RunResult:
        voters = list(range(1, self.options.nodes + 1))
        for nid in voters:
            node = SimNode(nid, self.rng, self.max_msg_size, self.max_inflight)
            self.nodes[nid] = node
            self.start_member(node, voters)
        self.agenda.after(self.rng.randint(1, 2 * TICK), Event(EventKind.CLIENT))
        self.agenda.after(self.rng.randint(3 * TICK, 15 * TICK), Event(EventKind.FAULT))
        seen = 0
        first_tail: list[str] = []
        while True:
            ev = self.agenda.pop()
            if ev is None:
                break
            self.step += 1
            self.checker.step = self.trace.step = self.step
            self.checker.time = self.trace.time = self.agenda.now
            self._handle(ev)
            if len(self.checker.violations) > seen:
                for v in self.checker.violations[seen:]:
                    self.trace.add(f"VIOLATION {v}")
                if not seen:
                    first_tail = self.trace.lines()[-TAIL:]
                seen = len(self.checker.violations)
                if seen >= MAX_RECORDED:
                    break  # a broken core repeats itself; the first violations say it all
            if self.final:
                if self.progress_ok or self.deadline_passed:
                    break
            elif self.step >= self.options.steps:
                self._enter_final()
        return RunResult(
            self.seed,
            self.options.nodes,
            self.step,
            self.checker.violations,
            self.checker.first,
            self.trace.lines() if self.trace.full or not first_tail else first_tail,
            self.stats,
        )

    def _handle(self, ev: Event) -> None:
        k = ev.kind
        if k == EventKind.TICK:
            self._tick(ev.node, ev.arg)
        elif k == EventKind.DELIVER:
            assert ev.msg is not None
            self._deliver(ev.msg, ev.arg)
        elif k in (EventKind.SNAP_SENT, EventKind.SNAP_FAILED, EventKind.UNREACHABLE):
            assert ev.msg is not None
            self._transport_report(ev)
        elif k == EventKind.CLIENT:
            self._client()
        elif k == EventKind.FAULT:
            if not self.final:
                inject_fault(self)
                self.agenda.after(self.rng.randint(TICK, 10 * TICK), Event(EventKind.FAULT))
        elif k == EventKind.HEAL:
            if ev.arg == self.net.generation and not self.final:
                self.net.heal()
                self.trace.add("heal partition")
        elif k == EventKind.RESTART:
            node = self.nodes[ev.node]
            if not node.up and not node.retired:
                self.start_member(node, None)
        elif k == EventKind.DEADLINE:
            if not self.progress_ok:
                self.deadline_passed = True
                self.checker.progress_failed(
                    f"no write committed within {self.options.progress_ticks} ticks after "
                    f"faults healed: {self._describe_nodes()}"
                )

    # ================================================================== members
    def start_member(self, node: SimNode, voters: list[int] | None) -> None:
        try:
            rn = node.start(voters)
        except Exception as exc:  # a core that cannot restart is a finding
            node.crash()
            node.retired = True
            self.checker.core_error(f"node {node.id} failed to start: {exc!r}")
            return
        r = rn.raft
        self.trace.add(
            f"n{node.id} start #{node.incarnation} term={r.term} commit={r.log.committed} "
            f"applied={r.log.applied} last={r.log.last_index()} conf={list(node.conf.voters)}"
            f"+{list(node.conf.learners)}"
        )
        if node.incarnation > 1:
            self.checker.observe_restart(node.id, r.log.committed)
        self._schedule_tick(node, first=True)
        self.process(node)

    def _schedule_tick(self, node: SimNode, first: bool = False) -> None:
        delay = self.rng.randint(1, node.tick_interval) if first else node.tick_interval
        self.agenda.after(delay, Event(EventKind.TICK, node.id, node.incarnation))

    def crash(self, node: SimNode, why: str) -> None:
        if not node.up:
            return
        node.crash()
        self.leaders.pop(node.id, None)
        self.stats["crashes"] += 1
        self.trace.add(f"n{node.id} CRASH ({why})")

    def _retire(self, nid: int) -> None:
        node = self.nodes.get(nid)
        if node is None or node.retired:
            return
        self.crash(node, "removed from the cluster, shutting down")
        node.retired = True

    def live(self) -> list[SimNode]:
        return [self.nodes[i] for i in sorted(self.nodes) if self.nodes[i].up]

    def leader(self) -> SimNode | None:
        best: SimNode | None = None
        for nid in sorted(self.leaders):
            node = self.nodes[nid]
            if node.rn is None or node.rn.raft.state != StateType.LEADER:
                continue
            if best is None or best.rn is None or node.rn.raft.term > best.rn.raft.term:
                best = node
        return best

    # ================================================================== events
    def _tick(self, nid: int, incarnation: int) -> None:
        node = self.nodes[nid]
        if node.rn is None or node.incarnation != incarnation:
            return
        self._schedule_tick(node)
        if self.trace.full:
            self.trace.add(f"n{nid} tick")
        try:
            node.rn.tick()
        except Exception as exc:
            self.core_failure(node, "tick", exc)
            return
        self.process(node)

    def _deliver(self, msg: Message, sender_incarnation: int) -> None:
        node = self.nodes.get(msg.to)
        sender = self.nodes.get(msg.frm)
        why = ""
        if node is None or node.rn is None:
            why = "down"
        elif node.retired or (sender is not None and sender.retired):
            why = "removed"
        elif not self.net.connected(msg.frm, msg.to):
            why = "cut"
        if why:
            self.trace.add(f"drop({why}) ", msg)
            self._report_drop(msg, sender_incarnation)
            return
        assert node is not None and node.rn is not None
        self.trace.add("recv ", msg)
        if msg.type == MessageType.SNAP:
            self.agenda.after(1, Event(EventKind.SNAP_SENT, msg.frm, sender_incarnation, msg))
        try:
            node.rn.step(msg)
        except StepPeerNotFoundError:
            self.trace.add(f"n{node.id} ignores a response from unknown peer {msg.frm}")
        except ProposalDropped:
            pass
        except RaftError as exc:
            self.trace.add(f"n{node.id} step error: {exc}")
        except Exception as exc:
            self.core_failure(node, f"step {fmt_message(msg)}", exc)
            return
        self.process(node)

    def _report_drop(self, msg: Message, sender_incarnation: int) -> None:
        if msg.type == MessageType.SNAP:
            self.agenda.after(
                TICK // 2, Event(EventKind.SNAP_FAILED, msg.frm, sender_incarnation, msg)
            )
        elif msg.type in (MessageType.APP, MessageType.HEARTBEAT) and self.rng.random() < 0.3:
            self.agenda.after(
                TICK // 2, Event(EventKind.UNREACHABLE, msg.frm, sender_incarnation, msg)
            )

    def _transport_report(self, ev: Event) -> None:
        node = self.nodes.get(ev.node)
        assert ev.msg is not None
        if node is None or node.rn is None or node.incarnation != ev.arg:
            return
        peer = ev.msg.to
        try:
            if ev.kind == EventKind.UNREACHABLE:
                self.trace.add(f"n{node.id} told {peer} is unreachable")
                node.rn.report_unreachable(peer)
            else:
                failed = ev.kind == EventKind.SNAP_FAILED
                outcome = "FAILED" if failed else "sent"
                self.trace.add(f"n{node.id} told snapshot to {peer} {outcome}")
                node.rn.report_snapshot(peer, failed)
        except RaftError as exc:
            self.trace.add(f"n{node.id} report error: {exc}")
        except Exception as exc:
            self.core_failure(node, "transport report", exc)
            return
        self.process(node)

    def core_failure(self, node: SimNode, what: str, exc: Exception) -> None:
        self.checker.core_error(f"node {node.id} raised during {what}: {exc!r}")
        self.crash(node, f"core raised {type(exc).__name__}")
        if not node.retired:
            self.agenda.after(self.rng.randint(TICK, 10 * TICK), Event(EventKind.RESTART, node.id))

    # ================================================================== Ready
    def process(self, node: SimNode) -> None:
        rn = node.rn
        while rn is not None and node.rn is rn and rn.has_ready():
            try:
                rd = rn.ready()
                self._handle_ready(node, rn, rd)
                if node.rn is rn:
                    rn.advance(rd)
            except Exception as exc:
                self.core_failure(node, "ready", exc)
                return
        if node.rn is rn and rn is not None:
            self._check(node, rn)

    def _handle_ready(self, node: SimNode, rn: RawNode, rd: Ready) -> None:
        st = node.storage
        if rd.soft_state is not None:
            ss = rd.soft_state
            self.trace.add(
                f"n{node.id} is {ss.raft_state.name} (term {rn.raft.term}, leader {ss.lead})"
            )
            if ss.raft_state == StateType.LEADER:
                self.stats["elections"] += 1
        if rd.snapshot is not None:
            snap = rd.snapshot
            meta = snap.metadata
            st.apply_snapshot(snap)
            writes = decode_writes(snap.data)
            self.checker.observe_state(node.id, meta.index, writes, "installed snapshot")
            node.sm, node.applied, node.conf = writes, meta.index, meta.conf_state
            self.stats["snapshots_installed"] += 1
            self.trace.add(f"n{node.id} installs snapshot {meta.index}/{meta.term}")
        late = rd.messages
        if self.options.parallel_append:
            early, late = split_early(
                rd,
                is_leader=rn.raft.state == StateType.LEADER,
                durable_term=st.hard_state.term,
                durable_last_index=st.last_index(),
            )
            self._send(node, early)
            self.stats["early_messages"] += len(early)
            # (not before the member's first save: a member that never persisted its
            # bootstrap is not a member that crashed, it never started)
            if (rd.must_sync or rd.entries) and st.last_index() > 0 and not self.final:
                if self.rng.random() < self.options.mid_save_crash:
                    self.stats["mid_save_crashes"] += 1
                    if early and rd.entries:
                        self.stats["leader_mid_save_crashes"] += 1
                    self.crash(node, "after the early send, before persisting")
                    self.agenda.after(
                        self.rng.randint(TICK, 10 * TICK), Event(EventKind.RESTART, node.id)
                    )
                    return
        if rd.entries:
            first = rd.entries[0].index
            prev: int | None = 0
            if first > 1:
                prev = rn.raft.log.zero_term_on_err(first - 1) or None
            self.checker.observe_entries(node.id, rd.entries, prev)
            st.append(rd.entries)
        if rd.hard_state is not None:
            self.checker.observe_persisted_commit(node.id, rd.hard_state.commit)
            st.set_hard_state(rd.hard_state)
        self._send(node, late)
        for e in rd.committed_entries:
            self._apply(node, rn, e)
            if node.rn is not rn:
                return  # this member applied its own removal and shut down
        for rs in rd.read_states:
            owner = self.reads.get(rs.request_ctx)
            if owner == (node.id, node.incarnation):
                node.waiting_reads.append((rs.request_ctx, rs.index))
        if node.waiting_reads:
            self._serve_reads(node)
        if self.rng.random() < 0.3:
            node.commit_state_machine()
        snap_meta = st.snapshot().metadata
        if node.applied - snap_meta.index >= self.compact_every or (
            node.applied > snap_meta.index and node.conf != snap_meta.conf_state
        ):
            # raft ignores a snapshot whose membership lacks the receiver, so a member
            # added after the last snapshot needs a newer one: snapshot after conf changes
            self.compact(node, self.compact_keep)

    def _send(self, node: SimNode, msgs: tuple[Message, ...]) -> None:
        for m in msgs:
            why = self.net.send(m, node.incarnation)
            if why:
                self.trace.add(f"drop({why}) ", m)
                self._report_drop(m, node.incarnation)

    def _apply(self, node: SimNode, rn: RawNode, e: Entry) -> None:
        if e.index <= node.applied:
            return
        if e.index != node.applied + 1:
            self.checker.core_error(
                f"node {node.id} was handed entry {e.index} to apply after {node.applied}"
            )
        self.checker.observe_apply(node.id, e)
        node.applied = e.index
        if e.type == EntryType.CONF_CHANGE:
            cc = ConfChange.decode(e.data)
            node.conf = rn.apply_conf_change(cc)
            self._conf_applied(node, e.index, cc)
            return
        w = write_id(e)
        if w is None:
            return
        node.sm.append(w)
        pending = self.pending_writes.get(w)
        if pending is not None and pending[:2] == (node.id, node.incarnation):
            del self.pending_writes[w]
            self.checker.write_acked(w, e.index)
            self.stats["acks"] += 1
            self.trace.add(f"n{node.id} acks w{w} at index {e.index}")
            if self.final and pending[2] >= self.final_start:
                self.progress_ok = True

    def _conf_applied(self, node: SimNode, index: int, cc: ConfChange) -> None:
        if index > self.conf_index:
            self.conf_index = index
            self.view = node.conf
            self.trace.add(
                f"n{node.id} applies {fmt_conf_change(cc)} at {index}: voters "
                f"{list(node.conf.voters)} learners {list(node.conf.learners)}"
            )
            if self.conf_inflight is not None and self.conf_inflight[1] == cc:
                self.conf_inflight = None
        if cc.type == ConfChangeType.REMOVE_NODE:
            self._retire(cc.node_id)

    def _serve_reads(self, node: SimNode) -> None:
        keep: list[tuple[bytes, int]] = []
        for ctx, index in node.waiting_reads:
            if node.applied >= index:
                self.reads.pop(ctx, None)
                self.checker.read_served(ctx, node.id, node.applied, node.sm)
                self.stats["served"] += 1
                self.trace.add(
                    f"n{node.id} serves {ctx.decode()} (read index {index}, applied {node.applied})"
                )
            else:
                keep.append((ctx, index))
        node.waiting_reads = keep

    def compact(self, node: SimNode, keep: int) -> None:
        st = node.storage
        snap_index = st.snapshot().metadata.index
        if node.applied <= snap_index:
            return
        self.checker.observe_state(node.id, node.applied, node.sm, "snapshot")
        st.create_snapshot(node.applied, node.conf, encode_writes(node.sm))
        upto = node.applied - keep
        if upto > st.first_index() - 1:
            st.compact(upto)
        self.trace.add(
            f"n{node.id} snapshots at {node.applied}, log now starts at {st.first_index()}"
        )

    # ================================================================== checks
    def _check(self, node: SimNode, rn: RawNode) -> None:
        r = rn.raft
        log = r.log
        term_at = _term_at(log)
        if r.state == StateType.LEADER:
            self.checker.observe_leader(
                node.id, r.term, log.first_index(), log.last_index(), term_at
            )
            self.leaders[node.id] = r.term
        else:
            self.leaders.pop(node.id, None)
        fresh = self.checker.observe_commit(node.id, r.term, log.committed, term_at)
        if fresh:
            for lid in sorted(self.leaders):
                lrn = self.nodes[lid].rn
                if lrn is None or lrn.raft.state != StateType.LEADER:
                    continue
                llog = lrn.raft.log
                self.checker.check_leader_holds(
                    lid, lrn.raft.term, fresh, llog.last_index(), _term_at(llog)
                )

    # ================================================================== client
    def _client(self) -> None:
        gap = (TICK // 4, TICK) if self.final else (TICK // 5, 2 * TICK)
        self.agenda.after(self.rng.randint(*gap), Event(EventKind.CLIENT))
        live = [n for n in self.live() if not n.retired]
        if not live:
            return
        node = self.rng.choice(live)
        rn = node.rn
        assert rn is not None
        if self.final or self.rng.random() < 0.6:
            w = self.next_write
            self.next_write += 1
            self.stats["writes"] += 1
            try:
                rn.propose(b"w%d" % w)
            except ProposalDropped as exc:
                self.trace.add(f"client w{w} -> n{node.id} dropped: {exc}")
                return
            except Exception as exc:
                self.core_failure(node, "propose", exc)
                return
            self.pending_writes[w] = (node.id, node.incarnation, self.agenda.now)
            self.trace.add(f"client w{w} -> n{node.id}")
        else:
            ctx = b"r%d" % self.next_read
            self.next_read += 1
            self.stats["reads"] += 1
            self.checker.read_started(ctx)
            try:
                rn.read_index(ctx)
            except ProposalDropped:
                self.checker.read_abandoned(ctx)
                self.trace.add(f"client {ctx.decode()} -> n{node.id} dropped")
                return
            except Exception as exc:
                self.core_failure(node, "read_index", exc)
                return
            self.reads[ctx] = (node.id, node.incarnation)
            self.trace.add(f"client {ctx.decode()} -> n{node.id}")
        self.process(node)

    # ================================================================== final phase
    def _enter_final(self) -> None:
        self.final = True
        self.final_start = self.agenda.now
        self.net.heal()
        self.net.quality = RELIABLE
        self.trace.add("final phase: network healed and reliable, restarting every member")
        for nid in sorted(self.nodes):
            node = self.nodes[nid]
            if not node.up and not node.retired:
                self.start_member(node, None)
        self.agenda.after(self.options.progress_ticks * TICK, Event(EventKind.DEADLINE))

    def _describe_nodes(self) -> str:
        parts = []
        for nid in sorted(self.nodes):
            node = self.nodes[nid]
            if node.retired:
                continue
            if node.rn is None:
                parts.append(f"n{nid} down")
                continue
            r = node.rn.raft
            parts.append(
                f"n{nid} {r.state.name} term={r.term} lead={r.lead} commit={r.log.committed} "
                f"applied={node.applied} last={r.log.last_index()} "
                f"voters={list(r.tracker.voters)}"
            )
            if r.state == StateType.LEADER:
                parts[-1] += (
                    " progress={"
                    + ", ".join(
                        f"{pid}: {pr!r}" for pid, pr in r.tracker.sorted_items() if pid != nid
                    )
                    + "}"
                )
        return "; ".join(parts)


def _term_at(log: RaftLog) -> TermAt:
    def term_at(i: int) -> int | None:
        t = log.zero_term_on_err(i)
        return t if t or i == 0 else None

    return term_at
