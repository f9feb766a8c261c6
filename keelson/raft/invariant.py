"""Internal invariant checks that ``python -O`` cannot strip.

``assert`` disappears under ``-O``; a broken raft invariant must never be silently ignored,
because continuing would risk losing committed entries. ``invariant`` always raises.
"""

from __future__ import annotations


def invariant(cond: bool, msg: str) -> None:
    """Raise AssertionError(msg) if ``cond`` is false, whatever the interpreter flags."""
    if not cond:
        raise AssertionError(msg)
