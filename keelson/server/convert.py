"""Translation between etcd's protobuf messages and keelson.mvcc's request values.

Theory of operation: the server speaks protobuf to the api layer and to the raft log
(``InternalRaftRequest``), while the key space speaks its own frozen dataclasses. This
module is the one place the two shapes meet; every function is pure and total over valid
protobuf input (enum values outside etcd's range raise ValueError, which the caller maps to
an InvalidArgument-style error).
"""

from __future__ import annotations

from keelson import mvcc
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.mvccpb import kv_pb2

_PutRequest = mvcc.PutRequest


_RangeRequest = mvcc.RangeRequest
_SORT_ORDERS = {int(v): v for v in mvcc.SortOrder}
_SORT_TARGETS = {int(v): v for v in mvcc.SortTarget}


def range_from_pb(r: pb.RangeRequest) -> mvcc.RangeRequest:
    # Positional, in RangeRequest's field order, and the enums looked up in a dict (an
    # unknown value still goes through the enum, which raises ValueError): every range
    # passes here, and keywords plus two enum calls were a third of its cost.
    order = _SORT_ORDERS.get(r.sort_order)
    if order is None:
        order = mvcc.SortOrder(r.sort_order)
    target = _SORT_TARGETS.get(r.sort_target)
    if target is None:
        target = mvcc.SortTarget(r.sort_target)
    return _RangeRequest(
        r.key, r.range_end, r.limit, r.revision, order, target, r.serializable,
        r.keys_only, r.count_only, r.min_mod_revision, r.max_mod_revision,
        r.min_create_revision, r.max_create_revision,
    )


def put_from_pb(r: pb.PutRequest) -> mvcc.PutRequest:
    # Positional, in PutRequest's field order: keyword matching made this a third slower,
    # and every applied put (leader and followers) passes here.
    return _PutRequest(r.key, r.value, r.lease, r.prev_kv, r.ignore_value, r.ignore_lease)


def delete_from_pb(r: pb.DeleteRangeRequest) -> mvcc.DeleteRangeRequest:
    return mvcc.DeleteRangeRequest(key=r.key, range_end=r.range_end, prev_kv=r.prev_kv)


def _compare_from_pb(c: pb.Compare) -> mvcc.Compare:
    target = mvcc.CompareTarget(c.target)
    number = {
        mvcc.CompareTarget.VERSION: c.version,
        mvcc.CompareTarget.CREATE: c.create_revision,
        mvcc.CompareTarget.MOD: c.mod_revision,
        mvcc.CompareTarget.LEASE: c.lease,
        mvcc.CompareTarget.VALUE: 0,
    }[target]
    return mvcc.Compare(
        key=c.key,
        target=target,
        result=mvcc.CompareResult(c.result),
        value=c.value,
        number=number,
        range_end=c.range_end,
    )


def _op_from_pb(op: pb.RequestOp) -> mvcc.RangeRequest | mvcc.PutRequest | (
    mvcc.DeleteRangeRequest | mvcc.TxnRequest
):
    which = op.WhichOneof("request")
    if which == "request_range":
        return range_from_pb(op.request_range)
    if which == "request_put":
        return put_from_pb(op.request_put)
    if which == "request_delete_range":
        return delete_from_pb(op.request_delete_range)
    if which == "request_txn":
        return txn_from_pb(op.request_txn)
    raise ValueError("empty request op")


def txn_from_pb(r: pb.TxnRequest) -> mvcc.TxnRequest:
    return mvcc.TxnRequest(
        compare=tuple(_compare_from_pb(c) for c in r.compare),
        success=tuple(_op_from_pb(o) for o in r.success),
        failure=tuple(_op_from_pb(o) for o in r.failure),
    )


def count_txn_ops(r: pb.TxnRequest) -> int:
    """The largest of len(success), len(failure) and len(compare), as etcd checks it."""
    return max(len(r.compare), len(r.success), len(r.failure))


def kv_to_pb(kv: mvcc.KeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


def range_to_pb(r: mvcc.RangeResponse, header: pb.ResponseHeader) -> pb.RangeResponse:
    # Each KeyValue made in place by ``kvs.add`` rather than built and copied in: a
    # quarter less time per one-key range.
    out = pb.RangeResponse(more=r.more, count=r.count)
    out.header.CopyFrom(header)  # half the time of passing it to the constructor
    add = out.kvs.add
    for kv in r.kvs:
        add(key=kv.key, create_revision=kv.create_revision, mod_revision=kv.mod_revision,
            version=kv.version, value=kv.value, lease=kv.lease)
    return out


def put_to_pb(r: mvcc.PutResponse, header: pb.ResponseHeader) -> pb.PutResponse:
    out = pb.PutResponse()
    out.header.CopyFrom(header)
    if r.prev_kv is not None:
        out.prev_kv.CopyFrom(kv_to_pb(r.prev_kv))
    return out


def delete_to_pb(r: mvcc.DeleteRangeResponse, header: pb.ResponseHeader) -> pb.DeleteRangeResponse:
    return pb.DeleteRangeResponse(
        header=header, deleted=r.deleted, prev_kvs=[kv_to_pb(kv) for kv in r.prev_kvs]
    )


def txn_to_pb(r: mvcc.TxnResponse, header: pb.ResponseHeader) -> pb.TxnResponse:
    """``header`` goes on the outer response only, as in etcd 3.4: a range, put or delete
    inside the txn carries a header with just the revision it saw or wrote (a range before
    the txn's first write sees the revision before the txn), and a nested txn carries an
    empty header (present, all fields zero)."""
    out = pb.TxnResponse(header=header, succeeded=r.succeeded)
    for sub in r.responses:
        op = out.responses.add()
        at = pb.ResponseHeader(revision=sub.revision)
        if isinstance(sub, mvcc.RangeResponse):
            op.response_range.CopyFrom(range_to_pb(sub, at))
        elif isinstance(sub, mvcc.PutResponse):
            op.response_put.CopyFrom(put_to_pb(sub, at))
        elif isinstance(sub, mvcc.DeleteRangeResponse):
            op.response_delete_range.CopyFrom(delete_to_pb(sub, at))
        else:
            empty = pb.ResponseHeader()
            op.response_txn.CopyFrom(txn_to_pb(sub, empty))
            op.response_txn.header.SetInParent()
    return out
