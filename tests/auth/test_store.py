"""The auth store on a temp-dir LMDB backend: every operation, its errors, persistence."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keelson.auth import (
    AUTH_BUCKET,
    NO_PASSWORD_USER,
    AuthInfo,
    AuthStore,
    KeyPermissions,
    SimpleTokenProvider,
    hash_password,
    simple_token_index,
)
from keelson.auth.store import REVISION_KEY
from keelson.backend import Backend
from keelson.proto import errors
from keelson.proto.authpb import auth_pb2
from keelson.proto.errors import EtcdError
from keelson.proto.etcdserverpb import rpc_pb2 as pb

READ = auth_pb2.Permission.READ
WRITE = auth_pb2.Permission.WRITE
READWRITE = auth_pb2.Permission.READWRITE
COST = 4  # bcrypt's minimum: keeps the tests fast


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "db")


@pytest.fixture
def backend(path: str) -> Iterator[Backend]:
    b = Backend(path, buckets=AuthStore.BUCKETS, map_size=32 << 20)
    yield b
    b.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(backend: Backend, clock: Clock) -> AuthStore:
    return AuthStore(backend, SimpleTokenProvider(300, clock))


def apply(store: AuthStore, backend: Backend, method: str, request: Any, *extra: Any) -> Any:
    """Call a mutating method inside a write txn, as the apply loop does."""
    with backend.write() as txn:
        fn: Callable[..., Any] = getattr(store, method)
        return fn(txn, request, *extra)


def add_user(store: AuthStore, backend: Backend, name: str, password: str = "pw") -> None:
    apply(
        store, backend, "user_add", pb.AuthUserAddRequest(name=name), hash_password(password, COST)
    )


def add_role(store: AuthStore, backend: Backend, name: str) -> None:
    apply(store, backend, "role_add", pb.AuthRoleAddRequest(name=name))


def grant_role(store: AuthStore, backend: Backend, user: str, role: str) -> None:
    apply(store, backend, "user_grant_role", pb.AuthUserGrantRoleRequest(user=user, role=role))


def grant_perm(
    store: AuthStore, backend: Backend, role: str, key: bytes, end: bytes, kind: int
) -> None:
    perm = auth_pb2.Permission(key=key, range_end=end, permType=kind)  # type: ignore[arg-type]
    apply(
        store,
        backend,
        "role_grant_permission",
        pb.AuthRoleGrantPermissionRequest(name=role, perm=perm),
    )


def enable_with_root(store: AuthStore, backend: Backend) -> None:
    add_user(store, backend, "root", "rootpw")
    grant_role(store, backend, "root", "root")
    with backend.write() as txn:
        store.auth_enable(txn)


def raises(err: EtcdError, fn: Callable[[], object]) -> None:
    with pytest.raises(EtcdError) as info:
        fn()
    assert info.value == err, f"got {info.value!r}, want {err!r}"


# ---- revision and enable ----------------------------------------------------------------


def test_fresh_store_starts_at_revision_1_persisted(store: AuthStore, backend: Backend) -> None:
    assert store.revision == 1
    assert not store.enabled
    with backend.read() as tx:
        assert tx.get(AUTH_BUCKET, REVISION_KEY) == (1).to_bytes(8, "big")
    status = store.auth_status()
    assert (status.enabled, status.authRevision) == (False, 1)


def test_auth_enable_needs_root_user_with_root_role(store: AuthStore, backend: Backend) -> None:
    with backend.write() as txn:
        raises(errors.ROOT_USER_NOT_EXIST, lambda: store.auth_enable(txn))
    add_user(store, backend, "root")
    with backend.write() as txn:
        raises(errors.ROOT_ROLE_NOT_EXIST, lambda: store.auth_enable(txn))
    grant_role(store, backend, "root", "root")  # root role need not exist as a role
    rev = store.revision
    with backend.write() as txn:
        store.auth_enable(txn)
    assert store.enabled and store.revision == rev  # etcd does not count AuthEnable
    with backend.write() as txn:
        store.auth_enable(txn)  # again: no-op
    assert store.auth_status().enabled
    with backend.write() as txn:
        store.auth_disable(txn)
    assert not store.enabled and store.revision == rev + 1
    with backend.write() as txn:
        store.auth_disable(txn)  # again: no-op
    assert store.revision == rev + 1


def test_state_survives_reopen(path: str, clock: Clock) -> None:
    b = Backend(path, buckets=AuthStore.BUCKETS, map_size=32 << 20)
    s = AuthStore(b, SimpleTokenProvider(300, clock))
    enable_with_root(s, b)
    add_role(s, b, "r")
    grant_perm(s, b, "r", b"a", b"b", READ)
    add_user(s, b, "u")
    grant_role(s, b, "u", "r")
    rev = s.revision
    b.close()
    b = Backend(path, buckets=AuthStore.BUCKETS, map_size=32 << 20)
    try:
        s2 = AuthStore(b, SimpleTokenProvider(300, clock))
        assert s2.enabled and s2.revision == rev
        assert list(s2.user_list().users) == ["root", "u"]
        assert list(s2.user_get(pb.AuthUserGetRequest(name="u")).roles) == ["r"]
        perms = s2.role_get(pb.AuthRoleGetRequest(role="r")).perm
        assert [(p.key, p.range_end, p.permType) for p in perms] == [(b"a", b"b", READ)]
        assert s2.is_range_permitted(AuthInfo("u", rev), b"a", b"")
        assert s2.check_password("u", "pw") == rev
    finally:
        b.close()


def test_aborted_txn_then_recover_restores_memory(store: AuthStore, backend: Backend) -> None:
    add_user(store, backend, "u")
    rev = store.revision
    with pytest.raises(RuntimeError), backend.write() as txn:
        store.user_delete(txn, pb.AuthUserDeleteRequest(name="u"))
        raise RuntimeError("apply failed")
    store.recover()
    assert store.revision == rev
    assert list(store.user_list().users) == ["u"]


# ---- users --------------------------------------------------------------------------------


def test_user_add_errors_and_revision(store: AuthStore, backend: Backend) -> None:
    r0 = store.revision
    add_user(store, backend, "alice")
    assert store.revision == r0 + 1
    raises(errors.USER_EMPTY, lambda: add_user(store, backend, ""))
    raises(errors.USER_ALREADY_EXIST, lambda: add_user(store, backend, "alice"))
    raises(errors.REQUEST_TOO_LARGE, lambda: add_user(store, backend, "x" * 600))
    assert store.revision == r0 + 1
    assert list(store.user_get(pb.AuthUserGetRequest(name="alice")).roles) == []


def test_user_add_no_password(store: AuthStore, backend: Backend) -> None:
    enable_with_root(store, backend)
    req = pb.AuthUserAddRequest(name="np", options=auth_pb2.UserAddOptions(no_password=True))
    apply(store, backend, "user_add", req, None)
    raises(NO_PASSWORD_USER, lambda: store.check_password("np", ""))
    assert NO_PASSWORD_USER.code == errors.Code.UNKNOWN
    raises(
        errors.AUTH_FAILED,
        lambda: store.authenticate("np", simple_token_prefix="abc", index=9),
    )
    with pytest.raises(ValueError):
        apply(store, backend, "user_add", pb.AuthUserAddRequest(name="nohash"), None)


def test_user_get_list_delete(store: AuthStore, backend: Backend) -> None:
    for name in ["bob", "alice", "Zed"]:
        add_user(store, backend, name)
    assert list(store.user_list().users) == ["Zed", "alice", "bob"]  # byte order
    raises(errors.USER_NOT_FOUND, lambda: store.user_get(pb.AuthUserGetRequest(name="nobody")))
    rev = store.revision
    apply(store, backend, "user_delete", pb.AuthUserDeleteRequest(name="bob"))
    assert store.revision == rev + 1
    raises(
        errors.USER_NOT_FOUND,
        lambda: apply(store, backend, "user_delete", pb.AuthUserDeleteRequest(name="bob")),
    )
    assert list(store.user_list().users) == ["Zed", "alice"]


def test_root_user_and_role_protected_only_while_enabled(
    store: AuthStore, backend: Backend
) -> None:
    enable_with_root(store, backend)
    add_role(store, backend, "root")
    for method, req in [
        ("user_delete", pb.AuthUserDeleteRequest(name="root")),
        ("user_revoke_role", pb.AuthUserRevokeRoleRequest(name="root", role="root")),
        ("role_delete", pb.AuthRoleDeleteRequest(role="root")),
    ]:
        raises(errors.INVALID_AUTH_MGMT, lambda m=method, r=req: apply(store, backend, m, r))
    with backend.write() as txn:
        store.auth_disable(txn)
    apply(
        store, backend, "user_revoke_role", pb.AuthUserRevokeRoleRequest(name="root", role="root")
    )
    apply(store, backend, "role_delete", pb.AuthRoleDeleteRequest(role="root"))
    apply(store, backend, "user_delete", pb.AuthUserDeleteRequest(name="root"))
    assert list(store.user_list().users) == []


def test_change_password(store: AuthStore, backend: Backend) -> None:
    enable_with_root(store, backend)
    add_user(store, backend, "u", "old")
    add_role(store, backend, "r")
    grant_role(store, backend, "u", "r")
    store.check_password("u", "old")
    req = pb.AuthUserChangePasswordRequest(name="u")
    apply(store, backend, "user_change_password", req, hash_password("new", COST))
    raises(errors.AUTH_FAILED, lambda: store.check_password("u", "old"))
    assert store.check_password("u", "new") == store.revision
    assert list(store.user_get(pb.AuthUserGetRequest(name="u")).roles) == ["r"]
    missing = pb.AuthUserChangePasswordRequest(name="x")
    raises(
        errors.USER_NOT_FOUND,
        lambda: apply(store, backend, "user_change_password", missing, hash_password("a", COST)),
    )


def test_grant_and_revoke_role(store: AuthStore, backend: Backend) -> None:
    add_user(store, backend, "u")
    add_role(store, backend, "b")
    add_role(store, backend, "a")
    raises(errors.USER_NOT_FOUND, lambda: grant_role(store, backend, "x", "a"))
    raises(errors.ROLE_NOT_FOUND, lambda: grant_role(store, backend, "u", "nope"))
    grant_role(store, backend, "u", "b")
    grant_role(store, backend, "u", "a")
    rev = store.revision
    grant_role(store, backend, "u", "a")  # duplicate: no-op, no revision
    assert store.revision == rev
    assert list(store.user_get(pb.AuthUserGetRequest(name="u")).roles) == ["a", "b"]
    assert store.has_role("u", "a") and not store.has_role("u", "c")

    def revoke(user: str, role: str) -> None:
        apply(
            store, backend, "user_revoke_role", pb.AuthUserRevokeRoleRequest(name=user, role=role)
        )

    raises(errors.USER_NOT_FOUND, lambda: revoke("x", "a"))
    raises(errors.ROLE_NOT_GRANTED, lambda: revoke("u", "zzz"))
    revoke("u", "a")
    assert store.revision == rev + 1
    assert list(store.user_get(pb.AuthUserGetRequest(name="u")).roles) == ["b"]


# ---- roles -----------------------------------------------------------------------------------


def test_role_add_get_list_delete(store: AuthStore, backend: Backend) -> None:
    add_role(store, backend, "writer")
    add_role(store, backend, "reader")
    raises(errors.ROLE_EMPTY, lambda: add_role(store, backend, ""))
    raises(errors.ROLE_ALREADY_EXIST, lambda: add_role(store, backend, "reader"))
    assert list(store.role_list().roles) == ["reader", "writer"]
    raises(errors.ROLE_NOT_FOUND, lambda: store.role_get(pb.AuthRoleGetRequest(role="x")))
    add_user(store, backend, "u1")
    add_user(store, backend, "u2")
    grant_role(store, backend, "u1", "reader")
    grant_role(store, backend, "u1", "writer")
    grant_role(store, backend, "u2", "reader")
    rev = store.revision
    apply(store, backend, "role_delete", pb.AuthRoleDeleteRequest(role="reader"))
    assert store.revision == rev + 1
    raises(
        errors.ROLE_NOT_FOUND,
        lambda: apply(store, backend, "role_delete", pb.AuthRoleDeleteRequest(role="reader")),
    )
    assert list(store.user_get(pb.AuthUserGetRequest(name="u1")).roles) == ["writer"]
    assert list(store.user_get(pb.AuthUserGetRequest(name="u2")).roles) == []
    assert list(store.role_list().roles) == ["writer"]


def test_grant_and_revoke_permission(store: AuthStore, backend: Backend) -> None:
    raises(errors.ROLE_NOT_FOUND, lambda: grant_perm(store, backend, "r", b"a", b"", READ))
    add_role(store, backend, "r")
    raises(
        errors.PERMISSION_NOT_GIVEN,
        lambda: apply(
            store, backend, "role_grant_permission", pb.AuthRoleGrantPermissionRequest(name="r")
        ),
    )
    grant_perm(store, backend, "r", b"m", b"n", READ)
    grant_perm(store, backend, "r", b"a", b"", WRITE)
    grant_perm(store, backend, "r", b"a", b"b", READ)
    grant_perm(store, backend, "r", b"a", b"b", READWRITE)  # update in place
    perms = store.role_get(pb.AuthRoleGetRequest(role="r")).perm
    assert [(p.key, p.range_end, p.permType) for p in perms] == [
        (b"a", b"", WRITE),
        (b"a", b"b", READWRITE),
        (b"m", b"n", READ),
    ]

    def revoke(role: str, key: bytes, end: bytes) -> None:
        req = pb.AuthRoleRevokePermissionRequest(role=role, key=key, range_end=end)
        apply(store, backend, "role_revoke_permission", req)

    raises(errors.ROLE_NOT_FOUND, lambda: revoke("x", b"a", b""))
    raises(errors.PERMISSION_NOT_GRANTED, lambda: revoke("r", b"a", b"c"))
    rev = store.revision
    revoke("r", b"a", b"b")
    assert store.revision == rev + 1
    perms = store.role_get(pb.AuthRoleGetRequest(role="r")).perm
    assert [(p.key, p.range_end) for p in perms] == [(b"a", b""), (b"m", b"n")]


# ---- authentication ------------------------------------------------------------------------


def test_check_password_and_authenticate(store: AuthStore, backend: Backend, clock: Clock) -> None:
    add_user(store, backend, "u", "secret")
    raises(errors.AUTH_NOT_ENABLED, lambda: store.check_password("u", "secret"))
    raises(
        errors.AUTH_NOT_ENABLED,
        lambda: store.authenticate("u", simple_token_prefix="p", index=1),
    )
    enable_with_root(store, backend)
    raises(errors.AUTH_FAILED, lambda: store.check_password("u", "wrong"))
    raises(errors.AUTH_FAILED, lambda: store.check_password("nobody", "secret"))
    rev = store.check_password("u", "secret")
    assert rev == store.revision
    prefix = store.tokens.gen_token_prefix()
    resp = store.authenticate("u", simple_token_prefix=prefix, index=42)
    assert resp.token == f"{prefix}.42" and simple_token_index(resp.token) == 42
    info = store.auth_info_from_token(resp.token)
    assert info == AuthInfo("u", store.revision)
    raises(errors.AUTH_FAILED, lambda: store.authenticate("x", simple_token_prefix="p", index=2))
    # Deleting the user drops its tokens.
    apply(store, backend, "user_delete", pb.AuthUserDeleteRequest(name="u"))
    raises(errors.INVALID_AUTH_TOKEN, lambda: store.auth_info_from_token(resp.token))


def test_password_change_and_disable_invalidate_simple_tokens(
    store: AuthStore, backend: Backend
) -> None:
    enable_with_root(store, backend)
    add_user(store, backend, "u")
    add_user(store, backend, "v")
    tu = store.authenticate("u", simple_token_prefix="aaaa", index=10).token
    tv = store.authenticate("v", simple_token_prefix="bbbb", index=11).token
    troot = store.authenticate("root", simple_token_prefix="cccc", index=12).token
    add_role(store, backend, "other")  # unrelated auth change: simple tokens stay valid
    assert store.auth_info_from_token(tu).revision == store.revision
    req = pb.AuthUserChangePasswordRequest(name="u")
    apply(store, backend, "user_change_password", req, hash_password("n", COST))
    raises(errors.INVALID_AUTH_TOKEN, lambda: store.auth_info_from_token(tu))
    assert store.auth_info_from_token(tv).username == "v"
    with backend.write() as txn:
        store.auth_disable(txn)
    for t in (tv, troot):
        raises(errors.INVALID_AUTH_TOKEN, lambda t=t: store.auth_info_from_token(t))


# ---- permission checks ---------------------------------------------------------------------


@pytest.fixture
def secured(store: AuthStore, backend: Backend) -> AuthStore:
    """root; user ``u`` with role ``r``: READ on [a, c), WRITE on prefix w/, READWRITE on k."""
    enable_with_root(store, backend)
    add_role(store, backend, "r")
    grant_perm(store, backend, "r", b"a", b"c", READ)
    grant_perm(store, backend, "r", b"w/", b"w0", WRITE)
    grant_perm(store, backend, "r", b"k", b"", READWRITE)
    add_user(store, backend, "u")
    grant_role(store, backend, "u", "r")
    add_user(store, backend, "nobody")
    return store


def test_disabled_auth_permits_everything(store: AuthStore) -> None:
    assert store.is_range_permitted(None, b"x", b"", write=True)
    store.check_admin(None)
    store.check_txn(None, pb.TxnRequest(compare=[pb.Compare(key=b"z")]))


def test_range_checks(secured: AuthStore) -> None:
    s = secured
    u = AuthInfo("u", s.revision)
    assert s.is_range_permitted(u, b"a", b"")
    assert s.is_range_permitted(u, b"b", b"bz")
    assert s.is_range_permitted(u, b"a", b"c")
    assert not s.is_range_permitted(u, b"a", b"c\x00")
    assert not s.is_range_permitted(u, b"a", b"", write=True)
    assert s.is_range_permitted(u, b"w/x", b"", write=True)
    assert s.is_range_permitted(u, b"w/", b"w0", write=True)
    assert not s.is_range_permitted(u, b"w/", b"\x00", write=True)
    assert not s.is_range_permitted(u, b"w/x", b"")
    assert s.is_range_permitted(u, b"k", b"", write=True)
    assert not s.is_range_permitted(u, b"k", b"l", write=True)  # k\x00.. not covered
    raises(errors.PERMISSION_DENIED, lambda: s.check_range(u, b"zz", b""))
    raises(errors.USER_EMPTY, lambda: s.check_range(None, b"a", b""))
    raises(errors.USER_EMPTY, lambda: s.check_range(AuthInfo("u", 0), b"a", b""))
    raises(
        errors.AUTH_OLD_REVISION, lambda: s.check_range(AuthInfo("u", s.revision - 1), b"a", b"")
    )
    raises(
        errors.PERMISSION_DENIED, lambda: s.check_range(AuthInfo("ghost", s.revision), b"a", b"")
    )
    raises(
        errors.PERMISSION_DENIED, lambda: s.check_range(AuthInfo("nobody", s.revision), b"a", b"")
    )
    root = AuthInfo("root", s.revision)
    assert s.is_range_permitted(root, b"\x00", b"\x00", write=True)


def test_permission_cache_follows_changes(secured: AuthStore, backend: Backend) -> None:
    s = secured
    assert not s.is_range_permitted(AuthInfo("u", s.revision), b"q", b"")
    grant_perm(s, backend, "r", b"q", b"", READ)
    assert s.is_range_permitted(AuthInfo("u", s.revision), b"q", b"")
    apply(s, backend, "user_revoke_role", pb.AuthUserRevokeRoleRequest(name="u", role="r"))
    assert not s.is_range_permitted(AuthInfo("u", s.revision), b"q", b"")


def test_admin_checks(secured: AuthStore) -> None:
    s = secured
    s.check_admin(AuthInfo("root", 1))  # no revision check for admin calls
    raises(errors.USER_EMPTY, lambda: s.check_admin(None))
    raises(errors.USER_EMPTY, lambda: s.check_admin(AuthInfo("", 5)))
    raises(errors.USER_NOT_FOUND, lambda: s.check_admin(AuthInfo("ghost", s.revision)))
    raises(errors.PERMISSION_DENIED, lambda: s.check_admin(AuthInfo("u", s.revision)))
    u = AuthInfo("u", s.revision)
    s.check_user_get(u, "u")
    raises(errors.PERMISSION_DENIED, lambda: s.check_user_get(u, "root"))
    s.check_role_get(u, "r")
    raises(errors.PERMISSION_DENIED, lambda: s.check_role_get(u, "root"))


def test_put_delete_and_lease_checks(secured: AuthStore) -> None:
    s = secured
    u = AuthInfo("u", s.revision)
    s.check_put_request(u, pb.PutRequest(key=b"w/1"))
    raises(errors.PERMISSION_DENIED, lambda: s.check_put_request(u, pb.PutRequest(key=b"a")))
    # prev_kv needs read too: w/ is write-only, k is read-write.
    raises(
        errors.PERMISSION_DENIED,
        lambda: s.check_put_request(u, pb.PutRequest(key=b"w/1", prev_kv=True)),
    )
    s.check_put_request(u, pb.PutRequest(key=b"k", prev_kv=True))
    attached = {7: [b"w/2"], 8: [b"w/3", b"secret"]}

    def lease_keys(lease: int) -> list[bytes]:
        return attached.get(lease, [])

    s.check_put_request(u, pb.PutRequest(key=b"w/1", lease=7), lease_keys)
    raises(
        errors.PERMISSION_DENIED,
        lambda: s.check_put_request(u, pb.PutRequest(key=b"w/1", lease=8), lease_keys),
    )
    raises(errors.PERMISSION_DENIED, lambda: s.check_lease_keys(u, attached[8]))
    s.check_lease_keys(AuthInfo("root", s.revision), attached[8])
    s.check_delete_range_request(u, pb.DeleteRangeRequest(key=b"w/", range_end=b"w0"))
    raises(
        errors.PERMISSION_DENIED,
        lambda: s.check_delete_range_request(
            u, pb.DeleteRangeRequest(key=b"w/", range_end=b"w0", prev_kv=True)
        ),
    )
    s.check_range_request(u, pb.RangeRequest(key=b"a", range_end=b"b"))


def _put(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key))


def _get(key: bytes, end: bytes = b"") -> pb.RequestOp:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key, range_end=end))


def _txn(**kw: Any) -> pb.TxnRequest:
    return pb.TxnRequest(**kw)


@pytest.mark.parametrize(
    ("txn", "allowed"),
    [
        (_txn(compare=[pb.Compare(key=b"a")], success=[_put(b"w/1")], failure=[_get(b"b")]), True),
        (_txn(compare=[pb.Compare(key=b"w/1")], success=[_put(b"w/1")]), False),  # compare=read
        (_txn(compare=[pb.Compare(key=b"a", range_end=b"d")]), False),
        (_txn(success=[_put(b"w/1")], failure=[_put(b"a")]), False),  # failure branch checked
        (_txn(success=[_get(b"a", b"c"), _put(b"k")]), True),
        (
            _txn(
                success=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"a"))],
            ),
            False,
        ),
        (
            _txn(success=[pb.RequestOp(request_txn=_txn(success=[_put(b"w/2")]))]),
            True,
        ),
        (  # nested two deep, denied on the innermost failure branch
            _txn(
                success=[
                    pb.RequestOp(
                        request_txn=_txn(
                            success=[pb.RequestOp(request_txn=_txn(failure=[_put(b"a")]))]
                        )
                    )
                ]
            ),
            False,
        ),
        (
            _txn(failure=[pb.RequestOp(request_txn=_txn(compare=[pb.Compare(key=b"zz")]))]),
            False,
        ),
    ],
)
def test_check_txn(secured: AuthStore, txn: pb.TxnRequest, allowed: bool) -> None:
    u = AuthInfo("u", secured.revision)
    if allowed:
        secured.check_txn(u, txn)
    else:
        raises(errors.PERMISSION_DENIED, lambda: secured.check_txn(u, txn))
    secured.check_txn(AuthInfo("root", secured.revision), txn)


def test_check_txn_lease_keys(secured: AuthStore) -> None:
    u = AuthInfo("u", secured.revision)
    txn = _txn(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"w/1", lease=5))])
    secured.check_txn(u, txn, lambda lease: [b"w/9"])
    raises(errors.PERMISSION_DENIED, lambda: secured.check_txn(u, txn, lambda lease: [b"x"]))


# ---- the clear password never reaches the disk -----------------------------------------------


def test_clear_password_never_in_backend_file(path: str, clock: Clock) -> None:
    password = "Tr0ub4dor&3-very-distinctive-clear-password"
    b = Backend(path, buckets=AuthStore.BUCKETS, map_size=32 << 20)
    try:
        s = AuthStore(b, SimpleTokenProvider(300, clock))
        with b.write() as txn:
            s.user_add(
                txn,
                pb.AuthUserAddRequest(name="root", password=password),
                hash_password(password, COST),
            )
        grant_role(s, b, "root", "root")
        with b.write() as txn:
            s.auth_enable(txn)
        new = password + "-changed"
        with b.write() as txn:
            s.user_change_password(
                txn,
                pb.AuthUserChangePasswordRequest(name="root", password=new),
                hash_password(new, COST),
            )
        assert s.check_password("root", new) == s.revision
        b.sync()
    finally:
        b.close()
    files = [os.path.join(path, f) for f in os.listdir(path)]
    data = b"".join(open(f, "rb").read() for f in files)
    assert b"root" in data and b"$2a$04$" in data  # the scan sees the records
    assert password.encode() not in data


def test_permissions_computed_during_a_change_are_not_cached(
    secured: AuthStore, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check racing with a change (another thread) must not leave the pre-change
    permissions in the cache of the new revision."""
    s = secured
    real_merge = KeyPermissions.merge

    def merge_while_revoking(perms: Iterable[auth_pb2.Permission]) -> KeyPermissions:
        old = list(perms)  # read with the old roles
        monkeypatch.setattr(KeyPermissions, "merge", real_merge)
        req = pb.AuthUserRevokeRoleRequest(name="u", role="r")
        apply(s, backend, "user_revoke_role", req)  # the change lands meanwhile
        return real_merge(old)

    monkeypatch.setattr(KeyPermissions, "merge", staticmethod(merge_while_revoking))
    assert s.permissions("u") is not None
    assert not s.is_range_permitted(AuthInfo("u", s.revision), b"a", b"")
