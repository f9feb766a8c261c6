"""Auto compaction (etcd's --auto-compaction-mode/--auto-compaction-retention).

Theory of operation. ``Compactor`` is a pure decision object: the server feeds it the
current revision with the time (``observe``) and asks ``due`` for a revision to compact
to, which it proposes through the log like a client Compact (only the leader does).

* ``revision`` mode, retention N: keep the last N revisions; compact to current - N when
  that is newer than the last compaction.
* ``periodic`` mode, retention a duration: sample (time, revision) every retention/10;
  compact to the newest sample at least ``retention`` old.

A retention of 0 disables auto compaction. ``parse_retention`` reports a bad value as
ValueError naming it.
"""

from __future__ import annotations

import re
from collections import deque

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_retention(mode: str, value: str) -> float:
    """Revisions (revision mode) or seconds (periodic mode). A bare number in periodic mode
    means hours, as in etcd."""
    value = value.strip()
    if mode == "revision":
        if not value.isdigit():
            raise ValueError(f"auto-compaction-retention {value!r}: want a revision count")
        return float(int(value))
    if mode != "periodic":
        raise ValueError(f"auto-compaction-mode {mode!r}: want periodic or revision")
    if re.fullmatch(r"\d+", value):
        return int(value) * 3600.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(value) or not value:
        raise ValueError(f"auto-compaction-retention {value!r}: want a duration like 1h30m")
    return total


class Compactor:
    def __init__(self, mode: str, retention: float) -> None:
        self.mode = mode
        self.retention = retention
        self._samples: deque[tuple[float, int]] = deque()
        self._last = 0

    @property
    def enabled(self) -> bool:
        return self.retention > 0

    def interval(self) -> float:
        """How often the server should call ``observe`` (seconds)."""
        if self.mode == "periodic":
            return max(0.05, self.retention / 10)
        return 1.0

    def observe(self, now: float, revision: int) -> None:
        if self.mode == "periodic":
            self._samples.append((now, revision))

    def due(self, now: float, revision: int, compacted: int) -> int:
        """The revision to compact to now, or 0."""
        if not self.enabled:
            return 0
        if self.mode == "revision":
            target = revision - int(self.retention)
        else:
            target = 0
            while self._samples and now - self._samples[0][0] >= self.retention:
                target = self._samples.popleft()[1]
        if target > max(compacted, self._last):
            self._last = target
            return target
        return 0
