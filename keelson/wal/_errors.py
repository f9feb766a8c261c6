"""Errors the WAL and the snapshotter raise.

A ``WALCorruptError`` means the data dir cannot be trusted: the member must refuse to start
and an operator must look at the named file. It is never raised for a torn tail of the last
segment, which is repaired (truncated to the last valid record) and logged instead.
"""

from __future__ import annotations

import os


class WALError(Exception):
    """Base class of every error raised by ``keelson.wal``."""


class WALCorruptError(WALError):
    """The log on disk is damaged somewhere other than a torn tail.

    ``path`` names the file and ``offset`` the byte offset of the first bad byte (the start
    of the record that failed to verify), both also in the message.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int, reason: str) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self.reason = reason
        super().__init__(f"wal corrupt: {self.path} at byte offset {offset}: {reason}")


class WALClosedError(WALError):
    """The WAL was closed, or a previous write failed and it refuses further writes."""


class SnapshotNotFoundError(WALError):
    """No snapshot file that verifies (and matches a WAL marker, when asked) was found."""
