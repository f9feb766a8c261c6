"""The auth store against a real etcd 3.4: the same operations, the same answers.

Each auth operation is sent to a real etcd over gRPC and applied to a local AuthStore; both
must succeed, or both fail with the same gRPC code and message. Then, for seeded random
permission sets over a small alphabet, every random request (single key, range, prefix,
from-key; read or write) must be allowed by etcd exactly when the store allows it.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from keelson.auth import AuthInfo, AuthStore, SimpleTokenProvider, hash_password
from keelson.backend import Backend
from keelson.proto.authpb import auth_pb2
from keelson.proto.errors import EtcdError
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.testing.etcd import EtcdProcess

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd 3.4 not installed")

READ = auth_pb2.Permission.READ
WRITE = auth_pb2.Permission.WRITE
READWRITE = auth_pb2.Permission.READWRITE
TIMEOUT = 20.0


class Pair:
    """A real etcd and a local store, driven together."""

    def __init__(self, etcd: EtcdProcess, backend: Backend) -> None:
        self.channel = grpc.insecure_channel(etcd.endpoint)
        self.auth = pbg.AuthStub(self.channel)
        self.kv = pbg.KVStub(self.channel)
        self.backend = backend
        self.store = AuthStore(backend, SimpleTokenProvider(300))
        self.token: str | None = None  # root's, once auth is on

    def md(self, token: str | None) -> list[tuple[str, str]]:
        return [("token", token)] if token else []

    def etcd_call(self, method: str, request: Any, token: str | None = None) -> tuple[int, str]:
        try:
            getattr(self.auth, method)(request, timeout=TIMEOUT, metadata=self.md(token))
        except grpc.RpcError as e:
            return int(e.code().value[0]), str(e.details())
        return 0, ""

    def local_call(self, fn: Callable[[], object]) -> tuple[int, str]:
        try:
            fn()
        except EtcdError as e:
            return int(e.code), e.message
        return 0, ""

    def same(self, method: str, request: Any, local: Callable[[], object]) -> tuple[int, str]:
        theirs = self.etcd_call(method, request, self.token)
        ours = self.local_call(local)
        assert ours == theirs, f"{method}({request}): etcd {theirs}, keelson {ours}"
        return ours

    def apply(self, method: str, request: Any, *extra: Any) -> Callable[[], object]:
        def run() -> object:
            with self.backend.write() as txn:
                return getattr(self.store, method)(txn, request, *extra)

        return run


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    etcd = EtcdProcess(str(tmp_path / "etcd"), extra_args=("--bcrypt-cost", "4"))
    backend = Backend(str(tmp_path / "local"), buckets=AuthStore.BUCKETS, map_size=32 << 20)
    try:
        etcd.start(timeout=60)
        p = Pair(etcd, backend)
        yield p
        p.channel.close()
    finally:
        etcd.stop()
        backend.close()


def _hash(password: str) -> bytes:
    return hash_password(password, 4)


def test_management_errors_match_etcd(pair: Pair) -> None:
    p = pair
    s = p.store
    p.same("AuthEnable", pb.AuthEnableRequest(), lambda: p.apply("auth_enable", None)())
    root = pb.AuthUserAddRequest(name="root", password="rootpw")
    p.same("UserAdd", root, p.apply("user_add", root, _hash("rootpw")))
    p.same("UserAdd", root, p.apply("user_add", root, _hash("rootpw")))
    p.same("AuthEnable", pb.AuthEnableRequest(), lambda: p.apply("auth_enable", None)())
    empty = pb.AuthUserAddRequest(name="", password="x")
    p.same("UserAdd", empty, p.apply("user_add", empty, _hash("x")))
    for req in [
        pb.AuthUserGrantRoleRequest(user="root", role="nope"),
        pb.AuthUserGrantRoleRequest(user="ghost", role="root"),
        pb.AuthUserGrantRoleRequest(user="root", role="root"),  # root role need not exist
        pb.AuthUserGrantRoleRequest(user="root", role="root"),  # duplicate: fine
    ]:
        p.same("UserGrantRole", req, p.apply("user_grant_role", req))
    for name in ["", "r1", "r1"]:
        req_r = pb.AuthRoleAddRequest(name=name)
        p.same("RoleAdd", req_r, p.apply("role_add", req_r))
    u = pb.AuthUserAddRequest(name="u", password="upw")
    p.same("UserAdd", u, p.apply("user_add", u, _hash("upw")))
    for rr in [
        pb.AuthUserRevokeRoleRequest(name="u", role="r1"),
        pb.AuthUserRevokeRoleRequest(name="ghost", role="r1"),
    ]:
        p.same("UserRevokeRole", rr, p.apply("user_revoke_role", rr))
    for rp in [
        pb.AuthRoleRevokePermissionRequest(role="r1", key=b"a"),
        pb.AuthRoleRevokePermissionRequest(role="nope", key=b"a"),
    ]:
        p.same("RoleRevokePermission", rp, p.apply("role_revoke_permission", rp))
    gp = pb.AuthRoleGrantPermissionRequest(
        name="nope", perm=auth_pb2.Permission(key=b"a", permType=READ)
    )
    p.same("RoleGrantPermission", gp, p.apply("role_grant_permission", gp))
    for ug in [pb.AuthUserGetRequest(name="ghost"), pb.AuthUserGetRequest(name="root")]:
        p.same("UserGet", ug, lambda ug=ug: s.user_get(ug))
    for rg in [pb.AuthRoleGetRequest(role="ghost"), pb.AuthRoleGetRequest(role="r1")]:
        p.same("RoleGet", rg, lambda rg=rg: s.role_get(rg))
    for cp in [pb.AuthUserChangePasswordRequest(name="ghost", password="x")]:
        p.same("UserChangePassword", cp, p.apply("user_change_password", cp, _hash("x")))
    for ud in [pb.AuthUserDeleteRequest(name="ghost")]:
        p.same("UserDelete", ud, p.apply("user_delete", ud))
    for rd in [pb.AuthRoleDeleteRequest(role="ghost")]:
        p.same("RoleDelete", rd, p.apply("role_delete", rd))

    # Authentication before and after enabling.
    def authenticate(name: str, password: str) -> None:
        s.check_password(name, password)

    bad = pb.AuthenticateRequest(name="root", password="wrong")
    p.same("Authenticate", bad, lambda: authenticate("root", "wrong"))
    p.same("AuthEnable", pb.AuthEnableRequest(), lambda: p.apply("auth_enable", None)())
    for name, password in [("root", "wrong"), ("ghost", "x"), ("u", "wrong")]:
        req_a = pb.AuthenticateRequest(name=name, password=password)
        p.same("Authenticate", req_a, lambda n=name, pw=password: authenticate(n, pw))
    resp = p.auth.Authenticate(pb.AuthenticateRequest(name="root", password="rootpw"))
    p.token = resp.token
    s.check_password("root", "rootpw")

    # Root is protected while auth is on.
    for method, local, req2 in [
        ("UserDelete", "user_delete", pb.AuthUserDeleteRequest(name="root")),
        (
            "UserRevokeRole",
            "user_revoke_role",
            pb.AuthUserRevokeRoleRequest(name="root", role="root"),
        ),
        ("RoleDelete", "role_delete", pb.AuthRoleDeleteRequest(role="root")),
    ]:
        p.same(method, req2, p.apply(local, req2))
    # A user without roles doing admin work, and nobody at all.
    u_token = p.auth.Authenticate(pb.AuthenticateRequest(name="u", password="upw")).token
    ours_admin = p.local_call(lambda: s.check_admin(AuthInfo("u", s.revision)))
    assert ours_admin == p.etcd_call("UserList", pb.AuthUserListRequest(), u_token)
    assert p.local_call(lambda: s.check_admin(None)) == p.etcd_call(
        "UserList", pb.AuthUserListRequest(), None
    )

    # Reads of data: no token, and a user without permissions.
    def kv_range(token: str | None) -> tuple[int, str]:
        try:
            p.kv.Range(pb.RangeRequest(key=b"a"), timeout=TIMEOUT, metadata=p.md(token))
        except grpc.RpcError as e:
            return int(e.code().value[0]), str(e.details())
        return 0, ""

    assert kv_range(None) == p.local_call(lambda: s.check_range(None, b"a", b""))
    assert kv_range(u_token) == p.local_call(
        lambda: s.check_range(AuthInfo("u", s.revision), b"a", b"")
    )
    # A token nobody issued.
    assert kv_range("bogusbogusbogusb.1") == p.local_call(
        lambda: s.auth_info_from_token("bogusbogusbogusb.1")
    )
    # A user added with --no-password cannot authenticate (etcd: codes.Unknown).
    np = pb.AuthUserAddRequest(name="np", options=auth_pb2.UserAddOptions(no_password=True))
    p.same("UserAdd", np, p.apply("user_add", np, None))
    req_np = pb.AuthenticateRequest(name="np", password="x")
    p.same("Authenticate", req_np, lambda: authenticate("np", "x"))
    # Lists come out in the same order.
    names = p.auth.UserList(pb.AuthUserListRequest(), metadata=p.md(p.token)).users
    assert list(names) == list(s.user_list().users)
    roles = p.auth.RoleList(pb.AuthRoleListRequest(), metadata=p.md(p.token)).roles
    assert list(roles) == list(s.role_list().roles)


def _prefix_end(key: bytes) -> bytes:
    return key[:-1] + bytes([key[-1] + 1])


def _random_span(rng: random.Random) -> tuple[bytes, bytes]:
    key = "".join(rng.choice("ab") for _ in range(rng.randint(1, 2))).encode()
    shape = rng.choice(["key", "range", "prefix", "from"])
    if shape == "key":
        return key, b""
    if shape == "prefix":
        return key, _prefix_end(key)
    if shape == "from":
        return key, b"\x00"
    ends = [
        e.encode()
        for e in ("a", "aa", "ab", "ac", "b", "ba", "bb", "bc", "c", "ca")
        if e.encode() > key
    ]
    return key, rng.choice(ends)


@pytest.mark.parametrize("seed", range(1, 9))
def test_permission_matrix_matches_etcd(pair: Pair, seed: int) -> None:
    rng = random.Random(seed)
    p = pair
    s = p.store
    for req in [
        pb.AuthUserAddRequest(name="root", password="rootpw"),
        pb.AuthUserAddRequest(name="u", password="upw"),
    ]:
        p.same("UserAdd", req, p.apply("user_add", req, _hash(req.password)))
    for req_r in [pb.AuthRoleAddRequest(name="r1"), pb.AuthRoleAddRequest(name="r2")]:
        p.same("RoleAdd", req_r, p.apply("role_add", req_r))
    for user, role in [("root", "root"), ("u", "r1"), ("u", "r2")]:
        g = pb.AuthUserGrantRoleRequest(user=user, role=role)
        p.same("UserGrantRole", g, p.apply("user_grant_role", g))
    for _ in range(rng.randint(1, 6)):
        key, end = _random_span(rng)
        perm = auth_pb2.Permission(
            key=key, range_end=end, permType=rng.choice([READ, WRITE, READWRITE])
        )
        gp = pb.AuthRoleGrantPermissionRequest(name=rng.choice(["r1", "r2"]), perm=perm)
        p.same("RoleGrantPermission", gp, p.apply("role_grant_permission", gp))
    p.same("AuthEnable", pb.AuthEnableRequest(), lambda: p.apply("auth_enable", None)())
    token = p.auth.Authenticate(pb.AuthenticateRequest(name="u", password="upw")).token
    info = AuthInfo("u", s.revision)
    md = p.md(token)
    outcomes = []
    for _ in range(40):
        key, end = _random_span(rng)
        write = rng.random() < 0.5
        try:
            if not write:
                p.kv.Range(
                    pb.RangeRequest(key=key, range_end=end, serializable=True),
                    timeout=TIMEOUT,
                    metadata=md,
                )
            elif end == b"":
                p.kv.Put(pb.PutRequest(key=key, value=b"v"), timeout=TIMEOUT, metadata=md)
            else:
                p.kv.DeleteRange(
                    pb.DeleteRangeRequest(key=key, range_end=end), timeout=TIMEOUT, metadata=md
                )
            theirs = True
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e.details()
            theirs = False
        ours = s.is_range_permitted(info, key, end, write=write)
        perms = [
            (pp.key, pp.range_end, pp.permType)
            for r in ("r1", "r2")
            for pp in s.role_get(pb.AuthRoleGetRequest(role=r)).perm
        ]
        assert ours == theirs, (
            f"seed {seed}: {perms} {'write' if write else 'read'} {key!r}..{end!r}"
        )
        outcomes.append(ours)
    print(f"seed {seed}: {sum(outcomes)} allowed, {len(outcomes) - sum(outcomes)} denied")


def test_edge_cases_match_etcd(pair: Pair) -> None:
    """Inverted and empty requests, adjacent permissions, whole-key-space grants."""
    p = pair
    s = p.store
    for req in [
        pb.AuthUserAddRequest(name="root", password="rootpw"),
        pb.AuthUserAddRequest(name="u", password="upw"),
        pb.AuthUserAddRequest(name="w", password="wpw"),
    ]:
        p.same("UserAdd", req, p.apply("user_add", req, _hash(req.password)))
    for name in ("r", "all"):
        req_r = pb.AuthRoleAddRequest(name=name)
        p.same("RoleAdd", req_r, p.apply("role_add", req_r))
    for user, role in [("root", "root"), ("u", "r"), ("w", "all")]:
        g = pb.AuthUserGrantRoleRequest(user=user, role=role)
        p.same("UserGrantRole", g, p.apply("user_grant_role", g))
    grants = [
        ("r", b"b", b"d", READ),
        ("r", b"d", b"f", READ),
        ("r", b"x", b"", READ),
        ("all", b"\x00", b"\x00", READ),  # etcdctl's grant for "" --prefix
    ]
    for role, key, end, kind in grants:
        perm = auth_pb2.Permission(key=key, range_end=end, permType=kind)
        gp = pb.AuthRoleGrantPermissionRequest(name=role, perm=perm)
        p.same("RoleGrantPermission", gp, p.apply("role_grant_permission", gp))
    p.same("AuthEnable", pb.AuthEnableRequest(), lambda: p.apply("auth_enable", None)())
    requests = [
        (b"b", b"f"),  # two adjacent permissions
        (b"b", b"f\x00"),
        (b"c", b"a"),  # inverted, inside [b, f)
        (b"a", b"a"),  # empty, outside
        (b"c", b"c"),  # empty, inside
        (b"x", b""),
        (b"x", b"x\x00"),  # the same single key as a range
        (b"x", b"y"),
        (b"\x00", b"\x00"),
        (b"\xff", b""),
    ]
    for user, password in [("u", "upw"), ("w", "wpw")]:
        token = p.auth.Authenticate(pb.AuthenticateRequest(name=user, password=password)).token
        for key, end in requests:
            try:
                p.kv.Range(
                    pb.RangeRequest(key=key, range_end=end, serializable=True),
                    timeout=TIMEOUT,
                    metadata=p.md(token),
                )
                theirs = True
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e.details()
                theirs = False
            ours = s.is_range_permitted(AuthInfo(user, s.revision), key, end)
            assert ours == theirs, f"{user} read {key!r}..{end!r}: etcd {theirs}, keelson {ours}"


def test_jwt_tokens_interoperate_with_etcd(tmp_path: Path) -> None:
    """etcd and keelson configured with the same keys accept each other's tokens, and an
    auth change makes an older token "old" on both."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from keelson.auth import JwtTokenProvider, new_token_provider

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = tmp_path / "jwt.pem"
    pub = tmp_path / "jwt.pub"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    spec = f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=10m"
    etcd = EtcdProcess(
        str(tmp_path / "etcd"), extra_args=("--bcrypt-cost", "4", "--auth-token", spec)
    )
    backend = Backend(str(tmp_path / "local"), buckets=AuthStore.BUCKETS, map_size=32 << 20)
    try:
        etcd.start(timeout=60)
        with grpc.insecure_channel(etcd.endpoint) as channel:
            auth = pbg.AuthStub(channel)
            kv = pbg.KVStub(channel)
            provider = new_token_provider(spec)
            assert isinstance(provider, JwtTokenProvider)
            store = AuthStore(backend, provider)
            for name in ("root", "u"):
                auth.UserAdd(pb.AuthUserAddRequest(name=name, password="pw"), timeout=TIMEOUT)
                with backend.write() as txn:
                    store.user_add(txn, pb.AuthUserAddRequest(name=name), _hash("pw"))
            auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"))
            auth.AuthEnable(pb.AuthEnableRequest(), timeout=TIMEOUT)
            theirs = auth.Authenticate(pb.AuthenticateRequest(name="root", password="pw")).token
            info = store.auth_info_from_token(theirs)
            assert info.username == "root" and info.revision > 0
            ours = provider.assign("root", info.revision)
            md = [("token", ours)]
            kv.Put(pb.PutRequest(key=b"k", value=b"v"), timeout=TIMEOUT, metadata=md)
            # An auth change: the token's revision is now old, on etcd as in keelson.
            auth.RoleAdd(pb.AuthRoleAddRequest(name="x"), timeout=TIMEOUT, metadata=md)
            with pytest.raises(grpc.RpcError) as err:
                kv.Range(pb.RangeRequest(key=b"k"), timeout=TIMEOUT, metadata=md)
            assert err.value.details() == "etcdserver: revision of auth store is old"
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with backend.write() as txn:
                store.user_grant_role(txn, pb.AuthUserGrantRoleRequest(user="root", role="root"))
                store.auth_enable(txn)
            assert store.revision == info.revision  # the same revision numbering as etcd
            with backend.write() as txn:
                store.role_add(txn, pb.AuthRoleAddRequest(name="x"))
            stale = store.auth_info_from_token(ours)
            with pytest.raises(EtcdError) as ours_err:
                store.check_range(stale, b"k", b"")
            assert ours_err.value.message == err.value.details()
    finally:
        etcd.stop()
        backend.close()
