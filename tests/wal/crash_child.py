"""Child process of the crash test: appends to a WAL forever and acknowledges durability.

Usage: ``python crash_child.py <wal-dir> <seed>``. Opens (or creates) the WAL, then loops:
prints ``intent <first> <last> <term> <commit>``, saves that batch with ``must_sync``, prints
``ack <first> <last> <term> <commit>`` once ``save`` returned (the batch is durable). Now and
then writes a snapshot marker (``snap <index> <term>`` after it is durable) and releases
segments. Entry data is a pure function of (index, term) so the parent can verify it.
The parent SIGKILLs this process at random points.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from keelson.raft.types import Entry, HardState
from keelson.wal import WAL

SEGMENT_SIZE = 8192


def entry_data(index: int, term: int) -> bytes:
    return (b"%d/%d;" % (index, term)) * (1 + (index * 7 + term) % 23)


def main() -> None:
    d = Path(sys.argv[1])
    rng = random.Random(int(sys.argv[2]))
    if any(d.glob("*.wal")):
        wal, got = WAL.open(d, segment_size=SEGMENT_SIZE)
        term = max([got.hard_state.term, got.snapshot.term, *(e.term for e in got.entries), 1])
        marker = got.snapshot.index
    else:
        wal = WAL.create(d, b"crash-test", segment_size=SEGMENT_SIZE)
        term, marker = 1, 0
    out = sys.stdout
    while True:
        last = wal.last_index
        if rng.random() < 0.1 and last - 2 > marker:
            first = rng.randrange(max(marker + 1, last - 5), last + 1)
            term += 1
        else:
            first = last + 1
        n = rng.randrange(1, 8)
        commit = max(marker, first - 1)
        out.write(f"intent {first} {first + n - 1} {term} {commit}\n")
        out.flush()
        entries = [Entry(term, i, data=entry_data(i, term)) for i in range(first, first + n)]
        wal.save(HardState(term, 1, commit), entries, must_sync=True)
        out.write(f"ack {first} {first + n - 1} {term} {commit}\n")
        out.flush()
        if rng.random() < 0.05 and commit > marker:
            marker = commit
            wal.save_snapshot_marker(marker, term)
            out.write(f"snap {marker} {term}\n")
            out.flush()
            wal.release_to(marker)


if __name__ == "__main__":
    main()
