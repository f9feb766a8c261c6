"""The generated modules carry etcd's wire names and field numbers."""

from __future__ import annotations

from pathlib import Path

from keelson.proto import generate
from keelson.proto.authpb import auth_pb2
from keelson.proto.etcdserverpb import raft_internal_pb2, rpc_pb2
from keelson.proto.mvccpb import kv_pb2
from keelson.proto.v3electionpb import v3election_pb2
from keelson.proto.v3lockpb import v3lock_pb2


def _methods(module: object, service: str) -> list[str]:
    desc = module.DESCRIPTOR.services_by_name[service]  # type: ignore[attr-defined]
    return [f"/{desc.full_name}/{m.name}" for m in desc.methods]


def test_service_full_names_and_methods() -> None:
    assert _methods(rpc_pb2, "KV") == [
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.KV/Put",
        "/etcdserverpb.KV/DeleteRange",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.KV/Compact",
    ]
    assert _methods(rpc_pb2, "Watch") == ["/etcdserverpb.Watch/Watch"]
    assert "/etcdserverpb.Lease/LeaseKeepAlive" in _methods(rpc_pb2, "Lease")
    assert "/etcdserverpb.Cluster/MemberPromote" in _methods(rpc_pb2, "Cluster")
    assert "/etcdserverpb.Maintenance/HashKV" in _methods(rpc_pb2, "Maintenance")
    assert "/etcdserverpb.Auth/RoleRevokePermission" in _methods(rpc_pb2, "Auth")
    assert _methods(v3lock_pb2, "Lock") == ["/v3lockpb.Lock/Lock", "/v3lockpb.Lock/Unlock"]
    assert "/v3electionpb.Election/Campaign" in _methods(v3election_pb2, "Election")


def _numbers(message: type) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]


def test_selected_field_numbers() -> None:
    assert _numbers(kv_pb2.KeyValue) == {
        "key": 1,
        "create_revision": 2,
        "mod_revision": 3,
        "version": 4,
        "value": 5,
        "lease": 6,
    }
    rr = _numbers(rpc_pb2.RangeRequest)
    assert rr["key"] == 1 and rr["range_end"] == 2 and rr["revision"] == 4
    assert rr["serializable"] == 7 and rr["max_create_revision"] == 13
    wcr = _numbers(rpc_pb2.WatchCreateRequest)
    assert wcr["prev_kv"] == 6 and wcr["watch_id"] == 7 and wcr["fragment"] == 8
    wr = _numbers(rpc_pb2.WatchResponse)
    assert wr["compact_revision"] == 5 and wr["fragment"] == 7 and wr["events"] == 11
    hdr = _numbers(rpc_pb2.ResponseHeader)
    assert hdr == {"cluster_id": 1, "member_id": 2, "revision": 3, "raft_term": 4}
    assert _numbers(auth_pb2.Permission) == {"permType": 1, "key": 2, "range_end": 3}
    irr = _numbers(raft_internal_pb2.InternalRaftRequest)
    assert irr["header"] == 100 and irr["ID"] == 1 and irr["lease_checkpoint"] == 11
    assert irr["auth_role_revoke_permission"] == 1204
    assert _numbers(raft_internal_pb2.RequestHeader) == {
        "ID": 1,
        "username": 2,
        "auth_revision": 3,
    }


def test_known_etcd_encoding() -> None:
    # PutRequest{key:"foo", value:"bar", lease:7} as etcd encodes it.
    req = rpc_pb2.PutRequest(key=b"foo", value=b"bar", lease=7)
    assert req.SerializeToString() == b"\n\x03foo\x12\x03bar\x18\x07"


def test_committed_modules_match_the_proto_sources(tmp_path: Path) -> None:
    """Regenerating into a scratch dir gives exactly the committed files."""
    outputs = generate.generate(tmp_path)
    assert len(outputs) == 3 * len(generate.proto_files()) == 18
    root = Path(generate.__file__).resolve().parent.parent.parent
    for out in outputs:
        committed = root / out.relative_to(tmp_path)
        assert committed.read_text() == out.read_text(), f"{committed} is stale: regenerate"
