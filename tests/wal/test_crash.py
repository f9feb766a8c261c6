"""Crash test: SIGKILL a process that appends and acknowledges, reopen, check that every
acknowledged record is there and the log is intact. Seeded; the seed is printed on failure.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from keelson.wal import WAL

from .crash_child import SEGMENT_SIZE, entry_data

CHILD = Path(__file__).with_name("crash_child.py")
ITERATIONS = 20


def _apply(log: dict[int, int], first: int, last: int, term: int) -> dict[int, int]:
    out = {i: t for i, t in log.items() if i < first}
    for i in range(first, last + 1):
        out[i] = term
    return out


def test_sigkill_loses_nothing_acknowledged(tmp_path: Path, rng: random.Random) -> None:
    d = tmp_path / "wal"
    d.mkdir()
    acked: dict[int, int] = {}  # index -> term, as the log must at least read
    acked_commit = 0
    acked_marker = 0
    total_acks = 0
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    deadline = time.monotonic() + 25
    for it in range(ITERATIONS):
        if time.monotonic() > deadline:
            break
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(d), str(rng.randrange(1 << 30))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        target = rng.randrange(1, 80)
        lines: list[bytes] = []
        acks = 0
        while acks < target:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            acks += line.startswith(b"ack ")
        time.sleep(rng.random() * 0.004)
        os.kill(proc.pid, signal.SIGKILL)
        lines.extend(proc.stdout.read().splitlines(keepends=True))  # keeps read-ahead data
        proc.stdout.close()
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, err.decode()
        pending: tuple[int, int, int, int] | None = None
        for raw in lines:
            if not raw.endswith(b"\n"):
                break  # cut mid-line: not an acknowledgement
            kind, *nums = raw.decode().split()
            values = tuple(int(x) for x in nums)
            if kind == "intent":
                first, last, term, commit = values
                pending = (first, last, term, commit)
            elif kind == "ack":
                first, last, term, commit = values
                assert pending == (first, last, term, commit)
                acked = _apply(acked, first, last, term)
                acked_commit = commit
                pending = None
                total_acks += 1
            elif kind == "snap":
                acked_marker = values[0]
        wal, got = WAL.open(d, segment_size=SEGMENT_SIZE)
        wal.close()
        ctx = f"iteration {it}"
        assert got.metadata == b"crash-test", ctx
        assert got.snapshot.index >= acked_marker, ctx
        log = {e.index: e.term for e in got.entries}
        for e in got.entries:
            assert e.data == entry_data(e.index, e.term), ctx
        assert sorted(log) == list(range(got.snapshot.index + 1, got.snapshot.index + 1 + len(log)))
        # The log is the acknowledged one, or it plus a prefix of the one unacknowledged batch.
        candidates = [acked]
        hard_states = [acked_commit]
        if pending is not None:
            first, last, term, commit = pending
            candidates += [_apply(acked, first, k, term) for k in range(first, last + 1)]
            hard_states.append(commit)
        visible = [{i: t for i, t in c.items() if i > got.snapshot.index} for c in candidates]
        assert log in visible, f"{ctx}: log does not match what was acknowledged"
        assert got.hard_state.commit in hard_states, ctx
        acked = log  # the next child continues from what is on disk
        acked_commit = got.hard_state.commit
        if got.snapshot.index > acked_marker:
            acked_marker = got.snapshot.index
    assert total_acks > 100, "the children acknowledged too little to test anything"
