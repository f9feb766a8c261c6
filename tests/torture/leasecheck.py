"""The lease checker: keys attached to a lease vanish when it ends, and not before.

This module owns the lease history format (the dataclasses below) and its checker. All times
are ``time.monotonic_ns()`` readings in the harness process, like :class:`~.history.Op`;
``complete`` is None when the client gave up without an answer (status ``info``). TTLs are
the seconds the *server* answered (etcd may raise a requested TTL to its minimum).

What the harness records (append to the lists of one :class:`LeaseHistory`):

- :class:`LeaseGrant` for each LeaseGrant; lease ids should be chosen by the client (the
  ``ID`` field of the request) so an ``info`` grant still has a known id.
- :class:`LeaseKeepAlive` for each keep-alive answer; ``ttl`` 0 means the server said the
  lease is not found (it is gone), status stays ``ok``.
- :class:`LeaseRevoke` for each LeaseRevoke.
- :class:`LeaseAttach` for each put of a key with a lease. Each key is attached once (to one
  lease) and not otherwise written or deleted by any workload; keys attached twice are
  checked against the latest attachment only where that is unambiguous.
- :class:`KeyObservation` for each *linearizable* read of an attached key: present or not.
- ``unstable``: windows ``(start, end)`` during which leadership may have changed (every
  fault from its injection until its heal plus a settling time). etcd (and keelson) give
  every lease ``now + remaining TTL + election timeout`` when a member becomes leader, so a
  lease still alive in such a window may legitimately live until ``end + ttl + grace``.

Invariants checked (per attached key, per observation):

- **early expiry**: the lease certainly lived until ``death_lb`` = the latest of
  ``grant.invoke + ttl`` and ``keepalive.invoke + ttl`` over ok grants / ok keep-alives with
  ttl > 0 (the server refreshed the lease at some point after the request was sent). An
  observation *absent* that was invoked after the attach completed, completed before
  ``death_lb - early_margin``, with no revoke of the lease invoked before it completed, is
  an anomaly ``early-expiry``.
- **late expiry**: the lease certainly ended by ``death_ub``: the completion of an ok revoke
  (``present-after-revoke``, no grace: revoke goes through the log before answering), the
  completion of a keep-alive answering ttl 0, or, for expiry, ``last refresh + ttl + grace``
  where "last refresh" is the latest completion of any ok grant or keep-alive, or
  invocation + ``info_horizon`` (default 10 s) of an ``info`` one (a request the client gave
  up on may still reach the leader a little later), extended through the ``unstable``
  windows it overlaps. An observation *present* invoked after that bound is ``late-expiry``.

``grace`` (default 3 s) covers the lessor's expiry tick (500 ms in etcd), proposing the
revoke through Raft and applying it on a loaded 2-core machine; ``early_margin`` (default
100 ms) covers clock reading jitter between the harness and the server (same host, same
monotonic clock).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from .history import Anomaly, Status

CHECKER = "lease"
SECOND_NS = 1_000_000_000
DEFAULT_GRACE_NS = 3 * SECOND_NS
DEFAULT_EARLY_MARGIN_NS = SECOND_NS // 10
DEFAULT_INFO_HORIZON_NS = 10 * SECOND_NS


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A LeaseGrant: ``ttl`` the granted TTL in seconds (the requested one if no answer)."""

    lease_id: int
    ttl: int
    invoke: int
    complete: int | None
    status: Status


@dataclass(frozen=True, slots=True)
class LeaseKeepAlive:
    """One keep-alive round trip: ``ttl`` as answered, 0 meaning "lease not found"."""

    lease_id: int
    invoke: int
    complete: int | None
    status: Status
    ttl: int = 0


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    """A LeaseRevoke of ``lease_id``."""

    lease_id: int
    invoke: int
    complete: int | None
    status: Status


@dataclass(frozen=True, slots=True)
class LeaseAttach:
    """A put of ``key`` with ``lease_id`` (status ``fail`` e.g. when the lease was gone)."""

    key: str
    lease_id: int
    invoke: int
    complete: int | None
    status: Status


@dataclass(frozen=True, slots=True)
class KeyObservation:
    """A linearizable read of an attached key: ``present`` whether it existed."""

    key: str
    invoke: int
    complete: int | None
    status: Status
    present: bool


@dataclass(slots=True)
class LeaseHistory:
    """Everything the lease workload recorded, plus the windows of possible leader change."""

    grants: list[LeaseGrant] = field(default_factory=list)
    keepalives: list[LeaseKeepAlive] = field(default_factory=list)
    revokes: list[LeaseRevoke] = field(default_factory=list)
    attaches: list[LeaseAttach] = field(default_factory=list)
    observations: list[KeyObservation] = field(default_factory=list)
    unstable: list[tuple[int, int]] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.grants or self.keepalives or self.attaches or self.observations)


@dataclass(slots=True)
class _LeaseBounds:
    """What the history proves about one lease's lifetime."""

    death_lb: int | None = None  # the lease certainly lived until here
    refresh_ub: int | None = None  # latest moment the server may have refreshed it
    ttl_ns: int = 0  # longest TTL seen
    revoked_at: int | None = None  # an ok revoke completed here
    not_found_at: int | None = None  # a keep-alive said "not found" here
    revoke_invoked: list[int] = field(default_factory=list)  # non-fail revokes' invocations


def _max(a: int | None, b: int) -> int:
    return b if a is None else max(a, b)


def _min(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)


def _refresh_time(status: Status, invoke: int, complete: int | None, horizon: int) -> int:
    """Latest moment a grant/keep-alive may have refreshed its lease."""
    if status == "ok" and complete is not None:
        return complete
    return invoke + horizon


def _bounds(history: LeaseHistory, horizon: int) -> dict[int, _LeaseBounds]:
    out: dict[int, _LeaseBounds] = {}
    for g in history.grants:
        if g.status == "fail":
            continue
        b = out.setdefault(g.lease_id, _LeaseBounds())
        ttl_ns = g.ttl * SECOND_NS
        b.ttl_ns = max(b.ttl_ns, ttl_ns)
        if g.status == "ok":
            b.death_lb = _max(b.death_lb, g.invoke + ttl_ns)
        b.refresh_ub = _max(b.refresh_ub, _refresh_time(g.status, g.invoke, g.complete, horizon))
    for k in history.keepalives:
        if k.status == "fail":
            continue
        b = out.setdefault(k.lease_id, _LeaseBounds())
        if k.status == "ok" and k.ttl <= 0:
            if k.complete is not None:
                b.not_found_at = _min(b.not_found_at, k.complete)
            continue
        ttl_ns = k.ttl * SECOND_NS
        b.ttl_ns = max(b.ttl_ns, ttl_ns)
        if k.status == "ok":
            b.death_lb = _max(b.death_lb, k.invoke + ttl_ns)
        b.refresh_ub = _max(b.refresh_ub, _refresh_time(k.status, k.invoke, k.complete, horizon))
    for r in history.revokes:
        if r.status == "fail":
            continue
        b = out.setdefault(r.lease_id, _LeaseBounds())
        b.revoke_invoked.append(r.invoke)
        if r.status == "ok" and r.complete is not None:
            b.revoked_at = _min(b.revoked_at, r.complete)
    for b in out.values():
        b.revoke_invoked.sort()
    return out


def _expiry_bound(b: _LeaseBounds, unstable: list[tuple[int, int]], grace: int) -> int | None:
    """Latest time the lease may still exist by expiry, or None if nothing refreshed it."""
    if b.refresh_ub is None or b.ttl_ns == 0:
        return None
    bound = b.refresh_ub + b.ttl_ns + grace
    for start, end in sorted(unstable):
        if start <= bound:
            bound = max(bound, end + b.ttl_ns + grace)
    return bound


def _attachment_for(
    attaches: list[LeaseAttach], obs: KeyObservation
) -> tuple[LeaseAttach | None, bool]:
    """The ok attachment in force during ``obs`` and whether that is unambiguous.

    Ambiguous when another non-fail attach of the key may overlap or follow the chosen one
    before the observation was invoked.
    """
    chosen: LeaseAttach | None = None
    for a in attaches:
        if a.status == "ok" and a.complete is not None and a.complete < obs.invoke:
            if chosen is None or a.complete > chosen.complete:  # type: ignore[operator]
                chosen = a
    if chosen is None:
        return None, False
    for a in attaches:
        if a is chosen or a.status == "fail":
            continue
        # another attach not certainly before the chosen one's invocation
        if a.complete is None or a.complete >= chosen.invoke:
            if a.invoke <= (obs.complete if obs.complete is not None else obs.invoke):
                return chosen, False
    return chosen, True


def check_leases(
    history: LeaseHistory,
    grace_ns: int = DEFAULT_GRACE_NS,
    early_margin_ns: int = DEFAULT_EARLY_MARGIN_NS,
    info_horizon_ns: int = DEFAULT_INFO_HORIZON_NS,
) -> list[Anomaly]:
    """Check every ok observation of an attached key against its lease's known lifetime."""
    bounds = _bounds(history, info_horizon_ns)
    by_key: dict[str, list[LeaseAttach]] = {}
    for a in history.attaches:
        by_key.setdefault(a.key, []).append(a)
    anomalies: list[Anomaly] = []
    for obs in history.observations:
        if obs.status != "ok" or obs.complete is None:
            continue
        attach, unambiguous = _attachment_for(by_key.get(obs.key, []), obs)
        if attach is None or not unambiguous:
            continue
        b = bounds.get(attach.lease_id)
        if b is None:
            continue
        where = f"key {obs.key!r} lease {attach.lease_id:#x}"
        if obs.present:
            if b.revoked_at is not None and obs.invoke > b.revoked_at:
                anomalies.append(
                    Anomaly(
                        CHECKER,
                        "present-after-revoke",
                        f"{where}: revoke completed at {b.revoked_at}, key read present by a "
                        f"read invoked at {obs.invoke} ({_ms(obs.invoke - b.revoked_at)} later)",
                    )
                )
                continue
            if b.not_found_at is not None and obs.invoke > b.not_found_at:
                anomalies.append(
                    Anomaly(
                        CHECKER,
                        "present-after-lease-gone",
                        f"{where}: a keep-alive answered 'not found' at {b.not_found_at}, key "
                        f"read present by a read invoked at {obs.invoke}",
                    )
                )
                continue
            bound = _expiry_bound(b, history.unstable, grace_ns)
            if bound is not None and obs.invoke > bound:
                anomalies.append(
                    Anomaly(
                        CHECKER,
                        "late-expiry",
                        f"{where}: last refresh by {b.refresh_ub}, ttl {b.ttl_ns // SECOND_NS}s, "
                        f"grace {_ms(grace_ns)}: must be gone by {bound}, read present at "
                        f"{obs.invoke} ({_ms(obs.invoke - bound)} late)",
                    )
                )
        else:
            if b.death_lb is None or obs.invoke <= attach.complete:  # type: ignore[operator]
                continue
            if obs.complete >= b.death_lb - early_margin_ns:
                continue
            i = bisect_right(b.revoke_invoked, obs.complete)
            if i > 0:  # a revoke was invoked before the read completed
                continue
            anomalies.append(
                Anomaly(
                    CHECKER,
                    "early-expiry",
                    f"{where}: the lease lives at least until {b.death_lb} (ok grant/keep-alive "
                    f"+ ttl), but a read completed at {obs.complete} "
                    f"({_ms(b.death_lb - obs.complete)} earlier) found the key absent",
                )
            )
    return anomalies


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.0f} ms"
