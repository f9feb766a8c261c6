"""The watch checker: every watcher's stream is ordered, complete, and agrees with the others.

Input: ``watches`` maps a watcher name to the :class:`~.history.WatchEvent` list it received,
in arrival order, across reconnects (a watcher started at start_revision 1 on the workload
prefix and resumed from its last revision + 1 after errors). ``WatchEvent.revision`` is the
revision of the change (the event's ``kv.mod_revision``, for a delete the deletion's
revision), ``mod_revision`` as carried by the event's kv. ``final_kv`` is the key space under
the watched prefix read at ``final_revision`` R: key -> (value, mod_revision).

The harness makes every write touch the watched prefix, so every revision 2..R has at least
one event (etcd's revision 1 is the empty store; the first write is revision 2).

Anomaly kinds (per watcher unless stated):

- ``misordered``: an event's revision is lower than the previous event's;
- ``duplicate-event``: the same (revision, key) delivered twice;
- ``gap``: a revision in [2 .. last revision received] with no event;
- ``beyond-final-revision``: an event after R;
- ``incomplete``: the stream never reached R (only with ``require_complete``);
- ``replay-mismatch``: replaying a complete, well-formed stream (reached R, none of the
  above) does not give exactly ``final_kv`` (keys, values and mod_revisions);
- ``disagreement`` (across watchers): two streams carry different events for a revision
  both contain (compared as multisets of (key, type, value, mod_revision)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .history import Anomaly, WatchEvent

CHECKER = "watch"
FIRST_WRITE_REVISION = 2
MAX_LISTED = 10

_Ev = tuple[str, str, str | None, int]


def _ranges(revs: Sequence[int]) -> str:
    """Compact listing of sorted revisions: 3-5, 9, 12-13 (at most MAX_LISTED runs)."""
    runs: list[tuple[int, int]] = []
    for r in revs:
        if runs and runs[-1][1] == r - 1:
            runs[-1] = (runs[-1][0], r)
        else:
            runs.append((r, r))
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:MAX_LISTED]]
    if len(runs) > MAX_LISTED:
        parts.append(f"... ({len(runs) - MAX_LISTED} more runs)")
    return ", ".join(parts)


def _check_stream(
    name: str,
    events: Sequence[WatchEvent],
    final_kv: Mapping[str, tuple[str, int]],
    final_revision: int,
    require_complete: bool,
) -> list[Anomaly]:
    out: list[Anomaly] = []
    well_formed = True
    prev: WatchEvent | None = None
    misordered = 0
    seen: set[tuple[int, str]] = set()
    dups: list[WatchEvent] = []
    for ev in events:
        if prev is not None and ev.revision < prev.revision:
            misordered += 1
            if misordered == 1:
                out.append(
                    Anomaly(
                        CHECKER,
                        "misordered",
                        f"watcher {name}: revision {ev.revision} (key {ev.key!r}) after "
                        f"revision {prev.revision} (key {prev.key!r})",
                    )
                )
        if (ev.revision, ev.key) in seen:
            dups.append(ev)
        seen.add((ev.revision, ev.key))
        prev = ev
    if misordered > 1:
        out.append(
            Anomaly(CHECKER, "misordered", f"watcher {name}: {misordered} misordered events")
        )
    if dups:
        well_formed = False
        out.append(
            Anomaly(
                CHECKER,
                "duplicate-event",
                f"watcher {name}: {len(dups)} duplicated events, first revision "
                f"{dups[0].revision} key {dups[0].key!r}",
            )
        )
    well_formed = well_formed and misordered == 0
    if not events:
        if require_complete and final_revision >= FIRST_WRITE_REVISION:
            out.append(Anomaly(CHECKER, "incomplete", f"watcher {name}: received no events"))
        return out
    revs = {ev.revision for ev in events}
    last = max(revs)
    missing = [r for r in range(FIRST_WRITE_REVISION, last + 1) if r not in revs]
    if missing:
        well_formed = False
        out.append(
            Anomaly(
                CHECKER,
                "gap",
                f"watcher {name}: no event for {len(missing)} revisions up to {last}: "
                f"{_ranges(missing)}",
            )
        )
    if last > final_revision:
        well_formed = False
        out.append(
            Anomaly(
                CHECKER,
                "beyond-final-revision",
                f"watcher {name}: events up to revision {last} > final revision {final_revision}",
            )
        )
    if last < final_revision:
        if require_complete:
            out.append(
                Anomaly(
                    CHECKER,
                    "incomplete",
                    f"watcher {name}: stream stops at revision {last} < final {final_revision}",
                )
            )
        return out
    if well_formed:
        out.extend(_replay(name, events, final_kv))
    return out


def _replay(
    name: str, events: Sequence[WatchEvent], final_kv: Mapping[str, tuple[str, int]]
) -> list[Anomaly]:
    kv: dict[str, tuple[str | None, int]] = {}
    for ev in events:
        if ev.type == "delete":
            kv.pop(ev.key, None)
        else:
            kv[ev.key] = (ev.value, ev.mod_revision)
    diffs: list[str] = []
    for key in sorted(set(kv) | set(final_kv)):
        got = kv.get(key)
        want = final_kv.get(key)
        if got != want:
            diffs.append(f"{key!r}: replay {got!r}, final {want!r}")
    if not diffs:
        return []
    shown = "; ".join(diffs[:MAX_LISTED])
    more = f"; ... {len(diffs) - MAX_LISTED} more" if len(diffs) > MAX_LISTED else ""
    return [
        Anomaly(
            CHECKER,
            "replay-mismatch",
            f"watcher {name}: replaying its {len(events)} events differs from the final key "
            f"space in {len(diffs)} keys: {shown}{more}",
        )
    ]


def _check_agreement(watches: Mapping[str, Sequence[WatchEvent]]) -> list[Anomaly]:
    per_rev: dict[int, dict[tuple[_Ev, ...], list[str]]] = {}
    for name, events in watches.items():
        grouped: dict[int, list[_Ev]] = {}
        for ev in events:
            grouped.setdefault(ev.revision, []).append((ev.key, ev.type, ev.value, ev.mod_revision))
        for rev, evs in grouped.items():
            per_rev.setdefault(rev, {}).setdefault(tuple(sorted(evs, key=repr)), []).append(name)
    out: list[Anomaly] = []
    bad = sorted(rev for rev, variants in per_rev.items() if len(variants) > 1)
    for rev in bad[:MAX_LISTED]:
        variants = per_rev[rev]
        desc = " vs ".join(
            f"{'/'.join(sorted(names))}: {list(evs)}" for evs, names in variants.items()
        )
        out.append(Anomaly(CHECKER, "disagreement", f"revision {rev}: {desc}"))
    if len(bad) > MAX_LISTED:
        out.append(
            Anomaly(
                CHECKER,
                "disagreement",
                f"{len(bad) - MAX_LISTED} more revisions where watchers disagree",
            )
        )
    return out


def check_watches(
    watches: Mapping[str, Sequence[WatchEvent]],
    final_kv: Mapping[str, tuple[str, int]],
    final_revision: int,
    require_complete: bool = False,
) -> list[Anomaly]:
    """Check each watcher's stream, then that all streams agree revision by revision."""
    out: list[Anomaly] = []
    for name in sorted(watches):
        out.extend(_check_stream(name, watches[name], final_kv, final_revision, require_complete))
    out.extend(_check_agreement(watches))
    return out
