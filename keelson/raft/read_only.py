"""ReadIndex bookkeeping on the leader (safe mode).

A read request records the leader's commit index at arrival and is broadcast as the context
of a heartbeat round. When a quorum of voters has acknowledged a heartbeat carrying that
context, the leader still led at the moment the request arrived, so every request queued up
to and including it may be answered with its recorded index. Requests are kept in arrival
order; a confirmed request releases all earlier ones too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keelson.raft.types import Message


@dataclass
class ReadIndexStatus:
    req: Message
    index: int
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, req: Message) -> None:
        ctx = req.entries[0].data
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(req, index)
        self.queue.append(ctx)

    def recv_ack(self, node: int, ctx: bytes) -> set[int] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks.add(node)
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        if ctx not in self.pending:
            return []
        n = self.queue.index(ctx) + 1
        done = [self.pending.pop(c) for c in self.queue[:n]]
        del self.queue[:n]
        return done

    def last_pending_request_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""
