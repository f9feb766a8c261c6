"""etcd's strict reconfiguration checks: membership changes that would endanger quorum.

Theory of operation. Before proposing a member add, remove or promote, etcd 3.4 (with its
default ``--strict-reconfig-check``) refuses changes after which the *started* voting members
could not form a quorum, and allows at most one learner. A member is started once it has
published its name (a member added with ``member add`` has no name until it joins); the
member running the check is started by definition (``self_id``). These
functions look only at the member list the caller passes, decide, and raise etcd's error;
they hold no state. Called by ``EtcdServer`` before it proposes the conf change.

Not checked: etcd also refuses an add, or the remove of a reachable voter, when the member
asked has not been connected to enough voting peers for the last 5 s ("etcdserver: unhealthy
cluster"). etcd keeps a stream open to every peer, so its "connected since" is meaningful on
every member; keelson's transport dials a peer only when it has something to send (a
follower never dials the other followers), so the same rule would refuse healthy clusters.
"""

from __future__ import annotations

from collections.abc import Iterable

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb

MAX_LEARNERS = 1
"""etcd 3.4 allows one learner in a cluster."""


def _voters(members: Iterable[pb.Member]) -> list[pb.Member]:
    return [m for m in members if not m.isLearner]


def _started(m: pb.Member, self_id: int) -> bool:
    """etcd's IsStarted (the member published its name); the member deciding counts as
    started whatever its entry says, since it is running."""
    return bool(m.name) or m.ID == self_id


def check_learners(members: Iterable[pb.Member], learner: bool) -> None:
    """Refuse adding a learner beyond :data:`MAX_LEARNERS`."""
    if learner and sum(1 for m in members if m.isLearner) + 1 > MAX_LEARNERS:
        raise errors.TOO_MANY_LEARNERS


def check_add_quorum(members: Iterable[pb.Member], learner: bool, self_id: int = 0) -> None:
    """Refuse adding a voter the started voters could not outvote (etcd's
    IsReadyToAddVotingMember, including its exception for growing a 1-member cluster).
    Adding a learner never changes the quorum."""
    if learner:
        return
    voters = _voters(members)
    total = len(voters) + 1
    started = sum(1 for m in voters if _started(m, self_id))
    if started == 1 and total == 2:
        return
    if started < total // 2 + 1:
        raise errors.MEMBER_NOT_ENOUGH_STARTED


def check_remove(members: Iterable[pb.Member], member_id: int, self_id: int = 0) -> None:
    """Refuse removing a voter when the started voters left could not form a quorum of the
    voters left (learners are removed freely)."""
    members = list(members)
    target = next((m for m in members if m.ID == member_id), None)
    if target is None or target.isLearner:
        return
    rest = [m for m in _voters(members) if m.ID != member_id]
    started = sum(1 for m in rest if _started(m, self_id))
    if started < len(rest) // 2 + 1:
        raise errors.MEMBER_NOT_ENOUGH_STARTED


def check_promote(members: Iterable[pb.Member], self_id: int = 0) -> None:
    """Refuse promoting a learner when the started voters plus the learner (counted as
    started) could not form a quorum of the grown voting set."""
    voters = _voters(members)
    total = len(voters) + 1
    started = sum(1 for m in voters if _started(m, self_id)) + 1
    if started < total // 2 + 1:
        raise errors.MEMBER_NOT_ENOUGH_STARTED

