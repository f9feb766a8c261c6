"""Response headers and membership checks as etcd 3.4 fills them, through the server object.

Found by the differential suite in tests/compat (etcdctl against keelson and a real etcd);
these pin each difference down without processes: a write's header names the revision it
wrote even when later writes were applied in the same batch; ops inside a txn carry only
their own revision (a nested txn an empty header); Cluster responses and alarms carry no
revision; HashKV says -1 before any compaction; etcd's strict reconfiguration checks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server import reconfig
from keelson.server.etcdserver import EtcdServer
from tests.server.test_single_member import _started, run


def test_concurrent_writes_report_their_own_revision(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            start = (await s.put(pb.PutRequest(key=b"w", value=b"0"))).header.revision
            # proposed together: applied in one batch, answered after it
            got = await asyncio.gather(*(s.put(pb.PutRequest(key=b"w%d" % i, value=b"v"))
                                         for i in range(20)))
            revs = sorted(r.header.revision for r in got)
            assert revs == list(range(start + 1, start + 21))
            dels = await asyncio.gather(
                *(s.delete_range(pb.DeleteRangeRequest(key=b"w%d" % i)) for i in range(5)))
            assert len({d.header.revision for d in dels}) == 5
        finally:
            await s.stop()

    run(main())


def _op(**kw: object) -> pb.RequestOp:
    return pb.RequestOp(**kw)  # type: ignore[arg-type]


def test_txn_inner_headers_carry_only_their_revision(tmp_path: Path) -> None:
    async def main() -> None:
        s: EtcdServer = await _started(tmp_path)
        try:
            rev = (await s.put(pb.PutRequest(key=b"a", value=b"1"))).header.revision
            nested = pb.TxnRequest(success=[_op(request_put=pb.PutRequest(key=b"c", value=b"3"))])
            t = await s.txn(pb.TxnRequest(success=[
                _op(request_range=pb.RangeRequest(key=b"a")),
                _op(request_put=pb.PutRequest(key=b"b", value=b"2")),
                _op(request_range=pb.RangeRequest(key=b"b")),
                _op(request_txn=nested),
            ]))
            assert t.header.revision == rev + 1 and t.header.member_id == 0x1234
            inner = [r.WhichOneof("response") for r in t.responses]
            assert inner == ["response_range", "response_put", "response_range", "response_txn"]
            # a range before the txn's first write sees the revision before the txn
            assert t.responses[0].response_range.header == pb.ResponseHeader(revision=rev)
            assert t.responses[1].response_put.header == pb.ResponseHeader(revision=rev + 1)
            assert t.responses[2].response_range.header == pb.ResponseHeader(revision=rev + 1)
            sub = t.responses[3].response_txn
            assert sub.HasField("header") and sub.header == pb.ResponseHeader()
            assert sub.responses[0].response_put.header == pb.ResponseHeader(revision=rev + 1)
        finally:
            await s.stop()

    run(main())


def test_cluster_alarm_and_hashkv_headers(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            await s.put(pb.PutRequest(key=b"a", value=b"1"))
            members = await s.member_list(pb.MemberListRequest())
            assert members.header.revision == 0 and members.header.cluster_id == 0xABCD
            alarms = await s.alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET))
            assert not alarms.HasField("header")
            assert (await s.hash_kv(pb.HashKVRequest())).compact_revision == -1
            await s.compact(pb.CompactionRequest(revision=2))
            assert (await s.hash_kv(pb.HashKVRequest())).compact_revision == 2
            added = await s.member_add(
                pb.MemberAddRequest(peerURLs=["http://127.0.0.1:1"], isLearner=True))
            assert added.header.revision == 0
            with pytest.raises(errors.EtcdError) as ei:
                await s.member_add(
                    pb.MemberAddRequest(peerURLs=["http://127.0.0.1:2"], isLearner=True))
            assert ei.value == errors.TOO_MANY_LEARNERS
            with pytest.raises(errors.EtcdError) as ei:
                await s.move_leader(pb.MoveLeaderRequest(targetID=added.member.ID))
            assert ei.value == errors.BAD_LEADER_TRANSFEREE  # a learner cannot lead
            await s.move_leader(pb.MoveLeaderRequest(targetID=0x1234))  # already leads
        finally:
            await s.stop()

    run(main())


def _m(mid: int, name: str = "", learner: bool = False) -> pb.Member:
    return pb.Member(ID=mid, name=name, isLearner=learner)


def test_reconfig_add_quorum() -> None:
    started3 = [_m(1, "a"), _m(2, "b"), _m(3, "c")]
    reconfig.check_add_quorum(started3, learner=False)  # 3 of 4 started
    reconfig.check_add_quorum([_m(1, "a")], learner=False)  # growing 1 to 2 is allowed
    one_unstarted = [*started3, _m(4)]
    reconfig.check_add_quorum(one_unstarted, learner=False)  # 3 of 5
    with pytest.raises(errors.EtcdError) as ei:
        reconfig.check_add_quorum([*one_unstarted, _m(5)], learner=False)  # 3 of 6
    assert ei.value == errors.MEMBER_NOT_ENOUGH_STARTED
    reconfig.check_add_quorum([*one_unstarted, _m(5)], learner=True)


def test_reconfig_learners_remove_promote() -> None:
    reconfig.check_learners([_m(1, "a")], learner=True)
    with pytest.raises(errors.EtcdError):
        reconfig.check_learners([_m(1, "a"), _m(2, learner=True)], learner=True)
    reconfig.check_learners([_m(1, "a"), _m(2, learner=True)], learner=False)
    members = [_m(1, "a"), _m(2, "b"), _m(3), _m(4), _m(9, learner=True)]
    reconfig.check_remove(members, 3)  # removing an unstarted voter: 2 of 3 started
    reconfig.check_remove(members, 9)  # learners go freely
    with pytest.raises(errors.EtcdError) as ei:
        reconfig.check_remove(members, 1)  # 1 started of 3 left
    assert ei.value == errors.MEMBER_NOT_ENOUGH_STARTED
    reconfig.check_promote([_m(1, "a"), _m(2, "b"), _m(3)])  # 3 of 4 with the learner
    with pytest.raises(errors.EtcdError):
        reconfig.check_promote([_m(1, "a"), _m(2), _m(3)])  # 2 of 4
