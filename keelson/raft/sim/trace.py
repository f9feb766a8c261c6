"""The event trace of one simulated run.

Every step of the simulator (a tick, a delivered or dropped message, a crash, a client
request, a fault) is one line: ``step  time  text``. The trace keeps the last ``keep``
lines for failure reports, or every line when ``full`` (``--trace`` and the determinism
tests); with ``echo`` set it also writes each line out as it happens. Lines are built from
integers and message fields only, so two runs of one seed produce identical traces.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from keelson.raft.types import ConfChange, EntryType, Message, MessageType

TAIL = 40


class Trace:
    def __init__(
        self, full: bool = False, echo: Callable[[str], None] | None = None, keep: int = TAIL
    ) -> None:
        self.full = full
        self._echo = echo
        # (step, time, text, message): the message part is formatted only when shown
        self._lines: deque[tuple[int, int, str, Message | None]] = (
            deque() if full else deque(maxlen=keep)
        )
        self.step = 0
        self.time = 0

    def add(self, text: str, msg: Message | None = None) -> None:
        """Record one event: ``text``, followed by ``msg`` formatted (if given)."""
        item = (self.step, self.time, text, msg)
        self._lines.append(item)
        if self._echo is not None:
            self._echo(_render(item))

    def lines(self) -> list[str]:
        return [_render(item) for item in self._lines]


def _render(item: tuple[int, int, str, Message | None]) -> str:
    step, time, text, msg = item
    if msg is not None:
        text = f"{text}{fmt_message(msg)}"
    return f"{step:6d} t={time:<8d} {text}"


_SHORT = {
    MessageType.APP: "app",
    MessageType.APP_RESP: "app-resp",
    MessageType.VOTE: "vote",
    MessageType.VOTE_RESP: "vote-resp",
    MessageType.PRE_VOTE: "prevote",
    MessageType.PRE_VOTE_RESP: "prevote-resp",
    MessageType.SNAP: "snap",
    MessageType.HEARTBEAT: "hb",
    MessageType.HEARTBEAT_RESP: "hb-resp",
    MessageType.PROP: "prop",
    MessageType.READ_INDEX: "readindex",
    MessageType.READ_INDEX_RESP: "readindex-resp",
    MessageType.TIMEOUT_NOW: "timeout-now",
    MessageType.TRANSFER_LEADER: "transfer",
}


def fmt_message(m: Message) -> str:
    """One message, compactly: ``1->2 app t3 prev=5/2 ents=6..7 c=5``."""
    name = _SHORT.get(m.type, m.type.name.lower())
    s = f"{m.frm}->{m.to} {name} t{m.term}"
    if m.type == MessageType.APP:
        s += f" prev={m.index}/{m.log_term}"
    elif m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
        s += f" last={m.index}/{m.log_term}"
    if m.entries:
        s += f" ents={m.entries[0].index}..{m.entries[-1].index}"
        if m.type == MessageType.PROP:
            s += f" {fmt_data(m.entries[0].type, m.entries[0].data)}"
    if m.type in (MessageType.APP, MessageType.HEARTBEAT):
        s += f" c={m.commit}"
    if m.type in (MessageType.APP_RESP, MessageType.READ_INDEX_RESP):
        s += f" idx={m.index}"
    if m.reject:
        s += f" REJECT hint={m.reject_hint}"
    if m.snapshot is not None:
        s += f" snap={m.snapshot.metadata.index}/{m.snapshot.metadata.term}"
    if m.context:
        s += f" ctx={m.context.decode(errors='replace')}"
    return s


def fmt_data(t: EntryType, data: bytes) -> str:
    if t == EntryType.CONF_CHANGE:
        try:
            return fmt_conf_change(ConfChange.decode(data))
        except ValueError:
            return "conf:?"
    return data.decode(errors="replace") if data else "-"


def fmt_conf_change(cc: ConfChange) -> str:
    return f"{cc.type.name.lower()}({cc.node_id})"
