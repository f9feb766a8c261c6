"""Internal invariant checks that ``python -O`` cannot strip.

``assert`` disappears under ``-O``; a broken raft invariant must never be silently ignored,
because continuing would risk losing committed entries. ``invariant`` always raises.
"""

from __future__ import annotations


def invariant(cond: bool, msg: str, *args: object) -> None:
    """Raise AssertionError(msg) if ``cond`` is false, whatever the interpreter flags.

    With ``args``, the message is ``msg % args``, formatted only when the check fails: the
    checks on the write path run several times per entry, an f-string would be built
    (and thrown away) every time.
    """
    if not cond:
        raise AssertionError(msg % args if args else msg)
