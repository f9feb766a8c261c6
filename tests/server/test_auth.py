"""Auth wired into one member, in-process: RPCs through the log, per-request checks, tokens,
no clear password on disk, persistence across a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keelson.api.auth import peer_host
from keelson.api.http import HttpEndpoints
from keelson.auth import AuthBackoff
from keelson.proto import errors
from keelson.proto.authpb import auth_pb2
from keelson.proto.etcdserverpb import raft_internal_pb2 as ipb
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server import auth as member_auth
from keelson.server.etcdserver import EtcdServer, MemberConfig
from tests.server.support import single_member_config

READ, WRITE, READWRITE = (
    auth_pb2.Permission.READ,
    auth_pb2.Permission.WRITE,
    auth_pb2.Permission.READWRITE,
)


def _cfg(tmp: Path, **kw: Any) -> MemberConfig:
    return single_member_config(tmp, bcrypt_cost=4, **kw)


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 120))


async def _started(tmp: Path, **kw: Any) -> EtcdServer:
    s = EtcdServer(_cfg(tmp, **kw))
    await s.start()
    deadline = time.monotonic() + 30
    while not s.is_leader:  # a loaded machine may need more than one election timeout
        assert time.monotonic() < deadline, "no leader"
        await asyncio.sleep(0.02)
    return s


async def _expect(err: errors.EtcdError, call: Awaitable[Any]) -> None:
    with pytest.raises(errors.EtcdError) as ei:
        await call
    assert (ei.value.code, ei.value.message) == (err.code, err.message), ei.value


async def _token(s: EtcdServer, name: str, password: str) -> str:
    resp = await s.auth.authenticate(pb.AuthenticateRequest(name=name, password=password))
    assert resp.token and resp.header.member_id == 0x1234
    return str(resp.token)


def _perm(kind: Any, key: bytes, range_end: bytes = b"") -> auth_pb2.Permission:
    return auth_pb2.Permission(permType=kind, key=key, range_end=range_end)


async def _setup(s: EtcdServer) -> str:
    """root (password rootpw) and alice (alicepw, role 'rw' = READWRITE on prefix a/,
    READ on key r); auth enabled. Returns root's token."""
    a = s.auth
    await a.user_add(pb.AuthUserAddRequest(name="root", password="rootpw"))
    await a.user_grant_role(pb.AuthUserGrantRoleRequest(user="root", role="root"))
    await a.role_add(pb.AuthRoleAddRequest(name="rw"))
    await a.role_grant_permission(
        pb.AuthRoleGrantPermissionRequest(name="rw", perm=_perm(READWRITE, b"a/", b"a0"))
    )
    await a.role_grant_permission(
        pb.AuthRoleGrantPermissionRequest(name="rw", perm=_perm(READ, b"r"))
    )
    await a.user_add(pb.AuthUserAddRequest(name="alice", password="alicepw"))
    await a.user_grant_role(pb.AuthUserGrantRoleRequest(user="alice", role="rw"))
    await a.auth_enable(pb.AuthEnableRequest())
    return await _token(s, "root", "rootpw")


def test_enable_needs_root_user_and_role(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            await _expect(
                errors.AUTH_NOT_ENABLED,
                s.auth.authenticate(pb.AuthenticateRequest(name="root", password="x")),
            )
            await _expect(errors.ROOT_USER_NOT_EXIST, s.auth.auth_enable(pb.AuthEnableRequest()))
            await s.auth.user_add(pb.AuthUserAddRequest(name="root", password="pw"))
            await _expect(errors.ROOT_ROLE_NOT_EXIST, s.auth.auth_enable(pb.AuthEnableRequest()))
            await s.auth.user_grant_role(pb.AuthUserGrantRoleRequest(user="root", role="root"))
            await s.auth.auth_enable(pb.AuthEnableRequest())
            assert s.auth.store.enabled
            await _expect(errors.USER_EMPTY, s.range(pb.RangeRequest(key=b"k")))
            await _expect(errors.USER_EMPTY, s.put(pb.PutRequest(key=b"k", value=b"v")))
            await _expect(errors.USER_EMPTY, s.auth.user_list(pb.AuthUserListRequest()))
            await _expect(errors.INVALID_AUTH_TOKEN, s.range(pb.RangeRequest(key=b"k"), "bogus.7"))
            await _expect(
                errors.AUTH_FAILED,
                s.auth.authenticate(pb.AuthenticateRequest(name="root", password="wrong")),
            )
            tok = await _token(s, "root", "pw")
            await s.put(pb.PutRequest(key=b"k", value=b"v"), tok)
            assert (await s.range(pb.RangeRequest(key=b"k"), tok)).count == 1
            await s.auth.auth_disable(pb.AuthDisableRequest(), tok)
            assert not s.auth.store.enabled
            assert (await s.range(pb.RangeRequest(key=b"k"))).count == 1
            # simple tokens die with auth disabled (etcd: the token is then unknown)
            await _expect(errors.INVALID_AUTH_TOKEN, s.range(pb.RangeRequest(key=b"k"), tok))
        finally:
            await s.stop()

    run(main)


def test_key_permissions_per_request_kind(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            root = await _setup(s)
            alice = await _token(s, "alice", "alicepw")
            await s.put(pb.PutRequest(key=b"b", value=b"root's"), root)
            await s.put(pb.PutRequest(key=b"r", value=b"readable"), root)
            # put / range / delete inside and outside the permitted prefix
            await s.put(pb.PutRequest(key=b"a/1", value=b"x"), alice)
            await _expect(
                errors.PERMISSION_DENIED, s.put(pb.PutRequest(key=b"b", value=b"y"), alice)
            )
            await _expect(
                errors.PERMISSION_DENIED, s.put(pb.PutRequest(key=b"r", value=b"y"), alice)
            )
            assert (await s.range(pb.RangeRequest(key=b"r"), alice)).kvs[0].value == b"readable"
            got = await s.range(pb.RangeRequest(key=b"a/", range_end=b"a0"), alice)
            assert got.count == 1
            await _expect(errors.PERMISSION_DENIED, s.range(pb.RangeRequest(key=b"b"), alice))
            await _expect(
                errors.PERMISSION_DENIED, s.range(pb.RangeRequest(key=b"a", range_end=b"b"), alice)
            )
            await _expect(
                errors.PERMISSION_DENIED, s.delete_range(pb.DeleteRangeRequest(key=b"b"), alice)
            )
            # txn: compares need read, branches are checked as if sent alone
            cmp_b = pb.Compare(key=b"b", target=pb.Compare.VERSION, result=pb.Compare.GREATER)
            cmp_r = pb.Compare(key=b"r", target=pb.Compare.VERSION, result=pb.Compare.GREATER)
            put_a = pb.RequestOp(request_put=pb.PutRequest(key=b"a/2", value=b"t"))
            put_b = pb.RequestOp(request_put=pb.PutRequest(key=b"b", value=b"t"))
            await _expect(
                errors.PERMISSION_DENIED,
                s.txn(pb.TxnRequest(compare=[cmp_b], success=[put_a]), alice),
            )
            await _expect(
                errors.PERMISSION_DENIED,
                s.txn(pb.TxnRequest(compare=[cmp_r], failure=[put_b]), alice),
            )
            t = await s.txn(pb.TxnRequest(compare=[cmp_r], success=[put_a]), alice)
            assert t.succeeded
            read_only = pb.TxnRequest(
                success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"b"))]
            )
            await _expect(errors.PERMISSION_DENIED, s.txn(read_only, alice))
            # deleting the permitted keys works; the values stay private to their prefix
            d = await s.delete_range(pb.DeleteRangeRequest(key=b"a/", range_end=b"a0"), alice)
            assert d.deleted == 2
            # compaction is not checked in etcd 3.4 (only the token)
            await s.compact(pb.CompactionRequest(revision=2), alice)
            # Status checks only the token (etcd 3.4); defragment and hashes need root and
            # answer with the auth package's untranslated error, as etcd 3.4's maintenance
            await s.status(pb.StatusRequest(), alice)
            await s.status(pb.StatusRequest())
            await _expect(errors.INVALID_AUTH_TOKEN, s.status(pb.StatusRequest(), "x.1"))
            denied = errors.EtcdError(errors.Code.UNKNOWN, "auth: permission denied")
            empty = errors.EtcdError(errors.Code.UNKNOWN, "auth: user name is empty")
            await _expect(denied, s.defragment(pb.DefragmentRequest(), alice))
            await _expect(denied, s.hash_kv(pb.HashKVRequest(), alice))
            await _expect(empty, s.hash(pb.HashRequest()))
            await s.hash_kv(pb.HashKVRequest(), root)
            # membership changes need root
            await _expect(
                errors.PERMISSION_DENIED,
                s.member_add(pb.MemberAddRequest(peerURLs=["http://127.0.0.1:2999"]), alice),
            )
            assert len((await s.member_list(pb.MemberListRequest(), alice)).members) == 1
            await s.alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET))
            disarm = pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=1, alarm=1)
            await _expect(errors.PERMISSION_DENIED, s.alarm(disarm, alice))
            await _expect(errors.PERMISSION_DENIED, s.move_leader(pb.MoveLeaderRequest(), alice))
            await s.alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET), alice)
            # watch creation: read permission on the watched range
            denied = await s.auth.watch_denied(alice, pb.WatchCreateRequest(key=b"b"))
            assert denied is not None and denied.canceled and denied.created
            assert denied.watch_id == -1
            assert denied.cancel_reason == (
                "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
            )
            assert await s.auth.watch_denied(alice, pb.WatchCreateRequest(key=b"a/x")) is None
            assert await s.auth.watch_denied(root, pb.WatchCreateRequest(key=b"b")) is None
        finally:
            await s.stop()

    run(main)


def test_auth_management_needs_root_but_users_see_themselves(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            root = await _setup(s)
            alice = await _token(s, "alice", "alicepw")
            a = s.auth
            await _expect(
                errors.PERMISSION_DENIED,
                a.user_add(pb.AuthUserAddRequest(name="bob", password="b"), alice),
            )
            await _expect(
                errors.PERMISSION_DENIED, a.role_add(pb.AuthRoleAddRequest(name="x"), alice)
            )
            await _expect(errors.PERMISSION_DENIED, a.user_list(pb.AuthUserListRequest(), alice))
            await _expect(errors.PERMISSION_DENIED, a.auth_disable(pb.AuthDisableRequest(), alice))
            assert list((await a.user_get(pb.AuthUserGetRequest(name="alice"), alice)).roles) == [
                "rw"
            ]
            await _expect(
                errors.PERMISSION_DENIED, a.user_get(pb.AuthUserGetRequest(name="root"), alice)
            )
            perms = (await a.role_get(pb.AuthRoleGetRequest(role="rw"), alice)).perm
            assert [(p.key, p.range_end) for p in perms] == [(b"a/", b"a0"), (b"r", b"")]
            await _expect(
                errors.PERMISSION_DENIED, a.role_get(pb.AuthRoleGetRequest(role="root"), alice)
            )
            assert list((await a.user_list(pb.AuthUserListRequest(), root)).users) == [
                "alice",
                "root",
            ]
            assert list((await a.role_list(pb.AuthRoleListRequest(), root)).roles) == ["rw"]
            # the store's own errors come through with etcd's messages
            await _expect(
                errors.USER_ALREADY_EXIST,
                a.user_add(pb.AuthUserAddRequest(name="alice", password="p"), root),
            )
            await _expect(
                errors.ROLE_NOT_FOUND, a.role_get(pb.AuthRoleGetRequest(role="nope"), root)
            )
            await _expect(
                errors.INVALID_AUTH_MGMT, a.user_delete(pb.AuthUserDeleteRequest(name="root"), root)
            )
        finally:
            await s.stop()

    run(main)


def test_tokens_after_password_change_and_permission_change(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            root = await _setup(s)
            alice = await _token(s, "alice", "alicepw")
            await s.auth.user_change_password(
                pb.AuthUserChangePasswordRequest(name="alice", password="newpw"), root
            )
            # the simple token of a user whose password changed is gone (etcd)
            await _expect(errors.INVALID_AUTH_TOKEN, s.range(pb.RangeRequest(key=b"r"), alice))
            await _expect(
                errors.AUTH_FAILED,
                s.auth.authenticate(pb.AuthenticateRequest(name="alice", password="alicepw")),
            )
            alice = await _token(s, "alice", "newpw")
            await s.range(pb.RangeRequest(key=b"a/1"), alice)
            # another auth change: simple tokens stay valid at the new revision (etcd)
            await s.auth.role_revoke_permission(
                pb.AuthRoleRevokePermissionRequest(role="rw", key=b"a/", range_end=b"a0"), root
            )
            await _expect(errors.PERMISSION_DENIED, s.range(pb.RangeRequest(key=b"a/1"), alice))
        finally:
            await s.stop()

    run(main)


def _rsa_keys(tmp: Path) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv, pub = tmp / "jwt.key", tmp / "jwt.pub"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=5m"


def test_jwt_token_goes_stale_when_auth_changes(tmp_path: Path) -> None:
    async def main() -> None:
        spec = _rsa_keys(tmp_path)
        s = await _started(tmp_path / "data", auth_token=spec)
        try:
            root = await _setup(s)
            assert root.count(".") == 2  # a JWT
            alice = await _token(s, "alice", "alicepw")
            await s.range(pb.RangeRequest(key=b"r"), alice)
            await s.auth.role_add(pb.AuthRoleAddRequest(name="other"), root)
            await _expect(errors.AUTH_OLD_REVISION, s.range(pb.RangeRequest(key=b"r"), alice))
            await _expect(
                errors.AUTH_OLD_REVISION, s.put(pb.PutRequest(key=b"a/1", value=b"v"), alice)
            )
            # admin calls check no revision (etcd's IsAdminPermitted)
            await s.auth.user_list(pb.AuthUserListRequest(), root)
            alice = await _token(s, "alice", "alicepw")
            await s.put(pb.PutRequest(key=b"a/1", value=b"v"), alice)
            forged = alice[:-4] + ("AAAA" if not alice.endswith("AAAA") else "BBBB")
            await _expect(errors.INVALID_AUTH_TOKEN, s.range(pb.RangeRequest(key=b"r"), forged))
        finally:
            await s.stop()

    run(main)


def test_leases_under_auth(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            root = await _setup(s)
            alice = await _token(s, "alice", "alicepw")
            await _expect(errors.USER_EMPTY, s.lease_grant(pb.LeaseGrantRequest(TTL=60)))
            mine = (await s.lease_grant(pb.LeaseGrantRequest(TTL=60), alice)).ID
            await s.put(pb.PutRequest(key=b"a/l", value=b"v", lease=mine), alice)
            theirs = (await s.lease_grant(pb.LeaseGrantRequest(TTL=60), root)).ID
            await s.put(pb.PutRequest(key=b"b", value=b"v", lease=theirs), root)
            # time-to-live with keys needs read on every attached key
            ttl = await s.lease_time_to_live(pb.LeaseTimeToLiveRequest(ID=mine, keys=True), alice)
            assert list(ttl.keys) == [b"a/l"]
            await _expect(
                errors.PERMISSION_DENIED,
                s.lease_time_to_live(pb.LeaseTimeToLiveRequest(ID=theirs, keys=True), alice),
            )
            await s.lease_time_to_live(pb.LeaseTimeToLiveRequest(ID=theirs), alice)
            # calls a peer forwards were checked there (the follower's own member)
            peer = member_auth.PEER_CHECKED
            fwd = await s.lease_time_to_live(pb.LeaseTimeToLiveRequest(ID=theirs, keys=True), peer)
            assert list(fwd.keys) == [b"b"]
            assert await s.lease_renew(theirs, peer) > 0
            await _expect(errors.PERMISSION_DENIED, s.lease_leases(pb.LeaseLeasesRequest(), alice))
            # attaching a key to, keeping alive or revoking a lease whose keys one may not write
            await _expect(
                errors.PERMISSION_DENIED,
                s.put(pb.PutRequest(key=b"a/m", value=b"v", lease=theirs), alice),
            )
            await _expect(errors.PERMISSION_DENIED, s.lease_renew(theirs, alice))
            assert await s.lease_renew(mine, alice) > 0
            await _expect(
                errors.PERMISSION_DENIED, s.lease_revoke(pb.LeaseRevokeRequest(ID=theirs), alice)
            )
            await s.lease_revoke(pb.LeaseRevokeRequest(ID=mine), alice)
            assert (await s.range(pb.RangeRequest(key=b"a/l"), alice)).count == 0
            # expiry is proposed by the member as root, so it is not refused
            short = (await s.lease_grant(pb.LeaseGrantRequest(TTL=1), root)).ID
            await s.put(pb.PutRequest(key=b"b2", value=b"v", lease=short), root)
            deadline = time.monotonic() + 30
            while (await s.range(pb.RangeRequest(key=b"b2"), root)).count:
                assert time.monotonic() < deadline, "the expired lease was never revoked"
                await asyncio.sleep(0.2)
        finally:
            await s.stop()

    run(main)


def test_no_clear_password_in_any_file_and_state_survives_restart(tmp_path: Path) -> None:
    first, second = "Clear-Passw0rd-One-7781", "Clear-Passw0rd-Two-9914"

    async def main() -> None:
        s = await _started(tmp_path, snapshot_count=5, snapshot_catchup_entries=1)
        try:
            await s.auth.user_add(pb.AuthUserAddRequest(name="root", password=first))
            await s.auth.user_grant_role(pb.AuthUserGrantRoleRequest(user="root", role="root"))
            await s.auth.auth_enable(pb.AuthEnableRequest())
            tok = await _token(s, "root", first)
            await s.auth.user_change_password(
                pb.AuthUserChangePasswordRequest(name="root", password=second), tok
            )
            tok = await _token(s, "root", second)
            for i in range(12):  # past snapshot_count: a snapshot and a compacted log
                await s.put(pb.PutRequest(key=b"k%d" % i, value=b"v"), tok)
        finally:
            await s.stop()
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert any(p.suffix == ".wal" for p in files)
        assert any("snap" in p.parts for p in files)
        for p in files:
            data = p.read_bytes()
            for secret in (first, second):
                assert secret.encode() not in data, f"{secret} found in {p}"
                assert secret.encode("utf-16-le") not in data, f"{secret} found in {p}"

        s = await _started(tmp_path, snapshot_count=5, snapshot_catchup_entries=1)
        try:
            assert s.auth.store.enabled
            await _expect(errors.USER_EMPTY, s.range(pb.RangeRequest(key=b"k1")))
            # simple tokens live in memory only
            await _expect(errors.INVALID_AUTH_TOKEN, s.range(pb.RangeRequest(key=b"k1"), tok))
            tok = await _token(s, "root", second)
            assert (await s.range(pb.RangeRequest(key=b"k1"), tok)).count == 1
        finally:
            await s.stop()

    run(main)


def test_failed_passwords_are_slowed_down(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            await _setup(s)
            s.auth.backoff = AuthBackoff(free_failures=1, base_delay=0.3, max_delay=0.3)
            bad = pb.AuthenticateRequest(name="alice", password="nope")
            for _ in range(2):
                await _expect(errors.AUTH_FAILED, s.auth.authenticate(bad, peer="10.0.0.9"))
            started = time.monotonic()
            await _expect(errors.AUTH_FAILED, s.auth.authenticate(bad, peer="10.0.0.9"))
            assert time.monotonic() - started >= 0.25
            assert s.auth.backoff.failures(user="alice") == 3
            await s.auth.authenticate(pb.AuthenticateRequest(name="alice", password="alicepw"))
            assert s.auth.backoff.failures(user="alice") == 0
        finally:
            await s.stop()

    run(main)


def test_token_from_the_future_waits_then_fails_without_leaking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A simple token names the raft index that issued it; a member waits to apply that
    index (bounded) before it calls the token unknown, and forgets its waiter afterwards."""
    monkeypatch.setattr(member_auth, "TOKEN_INDEX_WAIT_S", 0.3)

    async def main() -> None:
        s = await _started(tmp_path)
        try:
            root = await _setup(s)
            forged = f"abcdefghijklmnop.{s.applied_index + 10_000}"
            started = time.monotonic()
            await _expect(errors.INVALID_AUTH_TOKEN, s.range(pb.RangeRequest(key=b"k"), forged))
            assert time.monotonic() - started >= 0.25
            assert not s._applied_waiters
            await s.range(pb.RangeRequest(key=b"k"), root)
        finally:
            await s.stop()

    run(main)


def test_peer_host_strips_the_port() -> None:
    assert peer_host("ipv4:127.0.0.1:5000") == "127.0.0.1"
    assert peer_host("ipv6:[::1]:5000") == "[::1]"
    assert peer_host("unix:/tmp/sock") == "unix:/tmp/sock"
    assert peer_host(None) is None


def test_health_stays_true_with_auth_enabled(tmp_path: Path) -> None:
    """etcd's /health counts a read refused for lack of credentials as served."""

    async def main() -> None:
        s = await _started(tmp_path)
        try:
            await _setup(s)
            http = HttpEndpoints(s, [], 5.0)
            assert await http.check_health(excluded=set(), serializable=False)
            assert await http.check_health(excluded=set(), serializable=True)
        finally:
            await s.stop()

    run(main)


def test_writes_are_judged_at_their_place_in_the_log(tmp_path: Path) -> None:
    """The permission of a write is decided at apply, against the auth state after every
    entry before it: a stamp made before a permission was revoked does not carry it."""

    async def main() -> None:
        s = await _started(tmp_path)
        try:
            root = await _setup(s)
            alice = await _token(s, "alice", "alicepw")
            stamped = await s.auth.stamp(
                ipb.InternalRaftRequest(put=pb.PutRequest(key=b"a/1", value=b"v")), alice
            )
            assert stamped.header.username == "alice"
            s.auth.check_apply(stamped, "put")  # allowed as of now
            await s.auth.role_revoke_permission(
                pb.AuthRoleRevokePermissionRequest(role="rw", key=b"a/", range_end=b"a0"), root
            )
            with pytest.raises(errors.EtcdError) as ei:
                s.auth.check_apply(stamped, "put")
            assert ei.value == errors.AUTH_OLD_REVISION  # stamped before the change
            stamped = await s.auth.stamp(
                ipb.InternalRaftRequest(put=pb.PutRequest(key=b"a/1", value=b"v")), alice
            )
            with pytest.raises(errors.EtcdError) as ei:
                s.auth.check_apply(stamped, "put")
            assert ei.value == errors.PERMISSION_DENIED
            anonymous = ipb.InternalRaftRequest(put=pb.PutRequest(key=b"a/1", value=b"v"))
            with pytest.raises(errors.EtcdError) as ei:
                s.auth.check_apply(anonymous, "put")
            assert ei.value == errors.USER_EMPTY
            s.auth.check_apply(s.auth.as_root(anonymous), "put")
        finally:
            await s.stop()

    run(main)


@pytest.mark.parametrize("client_cert_auth", [True, False])
def test_certificate_name_is_the_user_only_with_client_cert_auth(
    tmp_path: Path, client_cert_auth: bool
) -> None:
    """etcd 3.4's AuthInfoFromTLS: a caller that sent no token but presented a verified
    certificate is the user its CN names, only with --client-cert-auth."""
    cn = member_auth.CertificateName

    async def main() -> None:
        s = await _started(tmp_path, client_cert_auth=client_cert_auth)
        try:
            await _setup(s)
            await s.put(pb.PutRequest(key=b"a/1", value=b"v"), await _token(s, "root", "rootpw"))
            if not client_cert_auth:
                await _expect(errors.USER_EMPTY, s.range(pb.RangeRequest(key=b"a/1"), cn("alice")))
                return
            assert (await s.range(pb.RangeRequest(key=b"a/1"), cn("alice"))).count == 1
            await s.put(pb.PutRequest(key=b"a/2", value=b"v"), cn("alice"))
            await _expect(errors.PERMISSION_DENIED, s.range(pb.RangeRequest(key=b"b"), cn("alice")))
            await _expect(errors.PERMISSION_DENIED, s.put(pb.PutRequest(key=b"b"), cn("alice")))
            await _expect(errors.PERMISSION_DENIED, s.auth.user_list(pb.AuthUserListRequest(),
                                                                     cn("alice")))
            # a name that is no user is denied on use, as etcd
            await _expect(errors.PERMISSION_DENIED, s.range(pb.RangeRequest(key=b"a/1"),
                                                            cn("nobody")))
            await _expect(errors.USER_NOT_FOUND, s.auth.user_list(pb.AuthUserListRequest(),
                                                                 cn("nobody")))
            # a certificate without a CN names the empty user
            await _expect(errors.PERMISSION_DENIED, s.range(pb.RangeRequest(key=b"a/1"), cn("")))
            await s.auth.user_list(pb.AuthUserListRequest(), cn("root"))
            info = await s.auth.identify(cn("alice"))
            assert info is not None and info.username == "alice"
            assert info.revision == s.auth.store.revision
        finally:
            await s.stop()

    run(main)
