"""One call for the harness: run every checker over a finished run's records.

``check_all`` takes what the harness recorded (formats in :mod:`.history` and
:mod:`.leasecheck`) and returns every anomaly, empty for a clean run. Checkers:

- :func:`.linearizable.check_linearizable` on register ops (``read``/``write``/``cas``);
- :func:`.appendcheck.check_appends` on ``txn`` ops;
- :func:`.watchcheck.check_watches` on the watchers' streams vs ``final_kv`` at
  ``final_revision``;
- :func:`.leasecheck.check_leases` on the lease history (None or empty: skipped);
- :func:`.durability.check_durability` on ops vs ``final_kv``.

All are pure functions of their inputs (no I/O); the linearizability search is bounded in
steps and time per key, so the whole call is bounded too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .appendcheck import check_appends
from .durability import check_durability
from .history import Anomaly, Op, WatchEvent
from .leasecheck import DEFAULT_GRACE_NS, LeaseHistory, check_leases
from .linearizable import DEFAULT_KEY_SECONDS, check_linearizable
from .watchcheck import check_watches


def check_all(
    ops: Sequence[Op],
    watches: Mapping[str, Sequence[WatchEvent]],
    final_kv: Mapping[str, tuple[str, int]],
    final_revision: int,
    leases: LeaseHistory | None,
    *,
    require_complete_watches: bool = False,
    lease_grace_ns: int = DEFAULT_GRACE_NS,
    key_seconds: float = DEFAULT_KEY_SECONDS,
) -> list[Anomaly]:
    """Every anomaly of the run, grouped by checker in the order above."""
    out: list[Anomaly] = []
    out.extend(check_linearizable(ops, key_seconds=key_seconds))
    out.extend(check_appends(ops))
    out.extend(check_watches(watches, final_kv, final_revision, require_complete_watches))
    if leases is not None:
        out.extend(check_leases(leases, grace_ns=lease_grace_ns))
    out.extend(check_durability(ops, final_kv))
    return out
