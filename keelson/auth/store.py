"""The auth store: users, roles, key-range permissions and the auth revision of a member.

Theory of operation. Every member holds the same auth state, persisted in three buckets of
its backend (etcd's layout): ``auth`` (``authEnabled`` -> 1 byte, ``authRevision`` -> 8-byte
big-endian), ``authUsers`` (name -> ``authpb.User``) and ``authRoles`` (name ->
``authpb.Role``). The server's apply loop calls the mutating methods (``auth_enable`` ...
``role_grant_permission``) with the backend write transaction of the apply, so an auth
change commits atomically with the consistent index; they return etcd's response message
(without header) or raise an :class:`~keelson.proto.errors.EtcdError` with etcd's message.

The store mirrors the buckets in memory (users and roles are few), so permission checks,
``check_password`` and the read-only calls never touch LMDB and see every change applied so
far, including changes of the current, not yet committed, apply transaction. If that
transaction aborts, the caller must call :meth:`AuthStore.recover` to reload the mirror.

Invariants:
- The in-memory users, roles, ``enabled`` and ``revision`` equal the buckets as of the last
  applied entry; a mutation writes the backend first and updates memory only afterwards.
- The auth revision starts at 1 and grows by one with every change etcd counts (all
  mutations that change something except AuthEnable, which etcd does not count); it is
  persisted with the change.
- A user's roles are sorted and unique; a role's permissions are sorted by key.
- No clear password is ever stored: ``user_add``/``user_change_password`` take the bcrypt
  hash computed by the proposing member (:func:`keelson.auth.password.hash_password`).
- The per-user merged permissions cache is dropped whenever the revision changes.

Thread-safety: mutations run on the apply loop; checks and ``check_password`` may run on
other threads concurrently: they read immutable snapshots (dict lookups, replaced values).
"""

from __future__ import annotations

import logging
import struct

from keelson.auth._checks import ROOT_ROLE, PermissionChecks, has_root_role
from keelson.auth._ranges import KeyPermissions
from keelson.auth.password import password_matches
from keelson.auth.tokens import AuthInfo, TokenProvider
from keelson.backend import Backend, ReadTxn, WriteTxn
from keelson.proto.authpb import auth_pb2
from keelson.proto.errors import (
    AUTH_FAILED,
    AUTH_NOT_ENABLED,
    INVALID_AUTH_MGMT,
    PERMISSION_NOT_GIVEN,
    PERMISSION_NOT_GRANTED,
    REQUEST_TOO_LARGE,
    ROLE_ALREADY_EXIST,
    ROLE_EMPTY,
    ROLE_NOT_FOUND,
    ROLE_NOT_GRANTED,
    ROOT_ROLE_NOT_EXIST,
    ROOT_USER_NOT_EXIST,
    USER_ALREADY_EXIST,
    USER_EMPTY,
    USER_NOT_FOUND,
    Code,
    EtcdError,
)
from keelson.proto.etcdserverpb import rpc_pb2 as pb

log = logging.getLogger(__name__)

AUTH_BUCKET = b"auth"
AUTH_USERS_BUCKET = b"authUsers"
AUTH_ROLES_BUCKET = b"authRoles"
ENABLED_KEY = b"authEnabled"
REVISION_KEY = b"authRevision"
ROOT_USER = "root"
MAX_NAME_BYTES = 511
"""LMDB's key size limit; longer user or role names are refused (etcd has no limit)."""

_REVISION = struct.Struct(">Q")

NO_PASSWORD_USER = EtcdError(
    Code.UNKNOWN,
    "auth: authentication failed, password was given for no password user",
    "NO_PASSWORD_USER",
)
"""Authenticate as a user added with --no-password. etcd 3.4 has no gRPC mapping for this
error, so it answers codes.Unknown with the auth package's own message."""


class AuthCorrupt(Exception):
    """A record in an auth bucket cannot be decoded."""


def _name_key(name: str) -> bytes:
    key = name.encode("utf-8")
    if len(key) > MAX_NAME_BYTES:
        raise REQUEST_TOO_LARGE
    return key


class AuthStore(PermissionChecks):
    """The auth state of one member; see the module docstring (checks: :mod:`._checks`)."""

    BUCKETS = (AUTH_BUCKET, AUTH_USERS_BUCKET, AUTH_ROLES_BUCKET)
    """Buckets the backend must be opened with."""

    def __init__(self, backend: Backend, token_provider: TokenProvider) -> None:
        self._backend = backend
        self.tokens = token_provider
        self._enabled = False
        self._revision = 0
        self._users: dict[str, auth_pb2.User] = {}
        self._roles: dict[str, auth_pb2.Role] = {}
        self._perm_cache: dict[str, KeyPermissions] = {}
        self.recover()

    # ---- state -------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def revision(self) -> int:
        """The auth revision (etcd's authStore.Revision)."""
        return self._revision

    def recover(self, backend: Backend | None = None) -> None:
        """Reload everything from the buckets (at start, after a snapshot was installed,
        or after an apply transaction aborted; never inside an open write transaction). A
        store that never had a revision gets revision 1, persisted at once in its own write
        transaction, as etcd's NewAuthStore does."""
        if backend is not None:
            self._backend = backend
        with self._backend.read() as txn:
            enabled, revision, users, roles = self._load(txn)
        if revision == 0:
            revision = 1
            with self._backend.write() as wtxn:
                wtxn.put(AUTH_BUCKET, REVISION_KEY, _REVISION.pack(revision))
        self._users, self._roles = users, roles
        self._revision = revision
        self._perm_cache = {}
        self._enabled = enabled
        if enabled:
            self.tokens.enable()
        else:
            self.tokens.disable()

    @staticmethod
    def _load(
        txn: ReadTxn,
    ) -> tuple[bool, int, dict[str, auth_pb2.User], dict[str, auth_pb2.Role]]:
        enabled = txn.get(AUTH_BUCKET, ENABLED_KEY) == b"\x01"
        raw = txn.get(AUTH_BUCKET, REVISION_KEY)
        revision = 0
        if raw is not None:
            if len(raw) != _REVISION.size:
                raise AuthCorrupt(f"bad auth revision record {raw!r}")
            (revision,) = _REVISION.unpack(raw)
        users: dict[str, auth_pb2.User] = {}
        for key, value in txn.range(AUTH_USERS_BUCKET, b"", None):
            user = auth_pb2.User()
            try:
                user.ParseFromString(value)
            except Exception as e:
                raise AuthCorrupt(f"bad user record {key!r}: {e}") from None
            users[key.decode("utf-8", "surrogateescape")] = user
        roles: dict[str, auth_pb2.Role] = {}
        for key, value in txn.range(AUTH_ROLES_BUCKET, b"", None):
            role = auth_pb2.Role()
            try:
                role.ParseFromString(value)
            except Exception as e:
                raise AuthCorrupt(f"bad role record {key!r}: {e}") from None
            roles[key.decode("utf-8", "surrogateescape")] = role
        return enabled, revision, users, roles

    # ---- persistence helpers (backend first, memory after) ----------------------------------

    def _bump_revision(self, txn: WriteTxn) -> None:
        txn.put(AUTH_BUCKET, REVISION_KEY, _REVISION.pack(self._revision + 1))

    def _committed(self) -> None:
        """Memory side of a counted change: the revision moves, cached permissions go."""
        self._perm_cache = {}
        self._revision += 1

    def _put_user(self, txn: WriteTxn, user: auth_pb2.User) -> None:
        txn.put(AUTH_USERS_BUCKET, user.name, user.SerializeToString())

    def _put_role(self, txn: WriteTxn, role: auth_pb2.Role) -> None:
        txn.put(AUTH_ROLES_BUCKET, role.name, role.SerializeToString())

    # ---- enable / disable / status --------------------------------------------------------

    def auth_enable(
        self, txn: WriteTxn, request: pb.AuthEnableRequest | None = None
    ) -> pb.AuthEnableResponse:
        """Turn authentication on; refused unless user ``root`` exists with role ``root``.
        Enabling twice is a no-op. etcd does not bump the revision here."""
        if self._enabled:
            return pb.AuthEnableResponse()
        root = self._users.get(ROOT_USER)
        if root is None:
            raise ROOT_USER_NOT_EXIST
        if not has_root_role(root):
            raise ROOT_ROLE_NOT_EXIST
        txn.put(AUTH_BUCKET, ENABLED_KEY, b"\x01")
        self._enabled = True
        self._perm_cache = {}
        self.tokens.enable()
        log.info("enabled authentication")
        return pb.AuthEnableResponse()

    def auth_disable(
        self, txn: WriteTxn, request: pb.AuthDisableRequest | None = None
    ) -> pb.AuthDisableResponse:
        """Turn authentication off (no-op if off); every simple token is dropped."""
        if not self._enabled:
            return pb.AuthDisableResponse()
        txn.put(AUTH_BUCKET, ENABLED_KEY, b"\x00")
        self._bump_revision(txn)
        self._committed()
        self._enabled = False
        self.tokens.disable()
        log.info("disabled authentication")
        return pb.AuthDisableResponse()

    def auth_status(self) -> pb.AuthStatusResponse:
        return pb.AuthStatusResponse(enabled=self._enabled, authRevision=self._revision)

    # ---- authentication -----------------------------------------------------------------------

    def check_password(self, name: str, password: str) -> int:
        """Verify ``password`` for user ``name``; returns the auth revision the check was
        made at (the server proposes Authenticate and retries if the revision moved
        meanwhile, as etcd does). CPU-bound (bcrypt): call it in a thread.

        Raises AUTH_NOT_ENABLED, AUTH_FAILED (unknown user or wrong password) or
        NO_PASSWORD_USER."""
        if not self._enabled:
            raise AUTH_NOT_ENABLED
        revision = self._revision
        user = self._users.get(name)
        if user is None:
            raise AUTH_FAILED
        if user.options.no_password:
            raise NO_PASSWORD_USER
        if not password_matches(user.password, password):
            log.info("authentication failed, invalid password for user %r", name)
            raise AUTH_FAILED
        return revision

    def authenticate(
        self, name: str, *, simple_token_prefix: str, index: int
    ) -> pb.AuthenticateResponse:
        """Apply an Authenticate entry (committed at raft ``index``, proposed with the
        proposer's ``simple_token_prefix``): issue the token on this member. The password
        was checked before proposing and is not in the log."""
        if not self._enabled:
            raise AUTH_NOT_ENABLED
        user = self._users.get(name)
        if user is None or user.options.no_password:
            raise AUTH_FAILED
        token = self.tokens.assign(name, self._revision, prefix=simple_token_prefix, index=index)
        return pb.AuthenticateResponse(token=token)

    def gen_token_prefix(self) -> str:
        """The random part of a simple token, chosen by the member that proposes
        Authenticate and carried in the entry ("" with jwt)."""
        return self.tokens.gen_token_prefix()

    def auth_info_from_token(self, token: str) -> AuthInfo:
        """The identity behind ``token`` (raises INVALID_AUTH_TOKEN). For simple tokens the
        server first waits until it applied ``simple_token_index(token)``."""
        return self.tokens.info(token, self._revision)

    def auth_info_for_user(self, name: str) -> AuthInfo:
        """The identity of a user named by other means (a client certificate's CN)."""
        return AuthInfo(name, self._revision)

    # ---- users ----------------------------------------------------------------------------------

    def user_add(
        self, txn: WriteTxn, request: pb.AuthUserAddRequest, password_hash: bytes | None
    ) -> pb.AuthUserAddResponse:
        """Add a user. ``password_hash`` is the bcrypt hash made before proposing (ignored,
        and may be None, when ``request.options.no_password``); ``request.password`` is
        never looked at, so it need not (must not) travel through the log."""
        if not request.name:
            raise USER_EMPTY
        key = _name_key(request.name)
        if request.name in self._users:
            raise USER_ALREADY_EXIST
        no_password = request.HasField("options") and request.options.no_password
        user = auth_pb2.User(name=key, options=auth_pb2.UserAddOptions(no_password=no_password))
        if not no_password:
            if not password_hash:
                raise ValueError("user_add needs the password hash unless options.no_password")
            user.password = password_hash
        self._put_user(txn, user)
        self._bump_revision(txn)
        self._users[request.name] = user
        self._committed()
        log.info("added a user %r", request.name)
        return pb.AuthUserAddResponse()

    def user_delete(
        self, txn: WriteTxn, request: pb.AuthUserDeleteRequest
    ) -> pb.AuthUserDeleteResponse:
        """Delete a user (not ``root`` while auth is enabled); its simple tokens go."""
        if self._enabled and request.name == ROOT_USER:
            raise INVALID_AUTH_MGMT
        if request.name not in self._users:
            raise USER_NOT_FOUND
        txn.delete(AUTH_USERS_BUCKET, request.name.encode("utf-8"))
        self._bump_revision(txn)
        del self._users[request.name]
        self._committed()
        self.tokens.invalidate_user(request.name)
        log.info("deleted a user %r", request.name)
        return pb.AuthUserDeleteResponse()

    def user_change_password(
        self, txn: WriteTxn, request: pb.AuthUserChangePasswordRequest, password_hash: bytes
    ) -> pb.AuthUserChangePasswordResponse:
        """Replace a user's password by ``password_hash`` (made before proposing); roles and
        options stay; the user's simple tokens go."""
        old = self._users.get(request.name)
        if old is None:
            raise USER_NOT_FOUND
        if not password_hash:
            raise ValueError("user_change_password needs the password hash")
        user = auth_pb2.User()
        user.CopyFrom(old)
        user.password = password_hash
        self._put_user(txn, user)
        self._bump_revision(txn)
        self._users[request.name] = user
        self._committed()
        self.tokens.invalidate_user(request.name)
        log.info("changed the password of user %r", request.name)
        return pb.AuthUserChangePasswordResponse()

    def user_grant_role(
        self, txn: WriteTxn, request: pb.AuthUserGrantRoleRequest
    ) -> pb.AuthUserGrantRoleResponse:
        """Grant a role to a user. The ``root`` role may be granted before it exists;
        granting a role the user has is a no-op (no revision change), as in etcd."""
        old = self._users.get(request.user)
        if old is None:
            raise USER_NOT_FOUND
        if request.role != ROOT_ROLE and request.role not in self._roles:
            raise ROLE_NOT_FOUND
        if request.role in old.roles:
            return pb.AuthUserGrantRoleResponse()
        user = auth_pb2.User()
        user.CopyFrom(old)
        roles = sorted([*old.roles, request.role])
        del user.roles[:]
        user.roles.extend(roles)
        self._put_user(txn, user)
        self._bump_revision(txn)
        self._users[request.user] = user
        self._committed()
        log.info("granted role %r to user %r", request.role, request.user)
        return pb.AuthUserGrantRoleResponse()

    def user_revoke_role(
        self, txn: WriteTxn, request: pb.AuthUserRevokeRoleRequest
    ) -> pb.AuthUserRevokeRoleResponse:
        """Revoke a role from a user (not ``root`` from ``root`` while auth is enabled)."""
        if self._enabled and request.name == ROOT_USER and request.role == ROOT_ROLE:
            raise INVALID_AUTH_MGMT
        old = self._users.get(request.name)
        if old is None:
            raise USER_NOT_FOUND
        if request.role not in old.roles:
            raise ROLE_NOT_GRANTED
        user = auth_pb2.User()
        user.CopyFrom(old)
        del user.roles[:]
        user.roles.extend(r for r in old.roles if r != request.role)
        self._put_user(txn, user)
        self._bump_revision(txn)
        self._users[request.name] = user
        self._committed()
        log.info("revoked role %r from user %r", request.role, request.name)
        return pb.AuthUserRevokeRoleResponse()

    def user_get(self, request: pb.AuthUserGetRequest) -> pb.AuthUserGetResponse:
        user = self._users.get(request.name)
        if user is None:
            raise USER_NOT_FOUND
        return pb.AuthUserGetResponse(roles=list(user.roles))

    def user_list(self, request: pb.AuthUserListRequest | None = None) -> pb.AuthUserListResponse:
        """Every user name in byte order of the name (the bucket's order)."""
        return pb.AuthUserListResponse(users=sorted(self._users, key=_utf8))

    # ---- roles ----------------------------------------------------------------------------------

    def role_add(self, txn: WriteTxn, request: pb.AuthRoleAddRequest) -> pb.AuthRoleAddResponse:
        if not request.name:
            raise ROLE_EMPTY
        key = _name_key(request.name)
        if request.name in self._roles:
            raise ROLE_ALREADY_EXIST
        role = auth_pb2.Role(name=key)
        self._put_role(txn, role)
        self._bump_revision(txn)
        self._roles[request.name] = role
        self._committed()
        log.info("created role %r", request.name)
        return pb.AuthRoleAddResponse()

    def role_get(self, request: pb.AuthRoleGetRequest) -> pb.AuthRoleGetResponse:
        role = self._roles.get(request.role)
        if role is None:
            raise ROLE_NOT_FOUND
        return pb.AuthRoleGetResponse(perm=list(role.keyPermission))

    def role_list(self, request: pb.AuthRoleListRequest | None = None) -> pb.AuthRoleListResponse:
        """Every role name in byte order of the name (the bucket's order)."""
        return pb.AuthRoleListResponse(roles=sorted(self._roles, key=_utf8))

    def role_delete(
        self, txn: WriteTxn, request: pb.AuthRoleDeleteRequest
    ) -> pb.AuthRoleDeleteResponse:
        """Delete a role (not ``root`` while auth is enabled) and revoke it from every user."""
        if self._enabled and request.role == ROOT_ROLE:
            raise INVALID_AUTH_MGMT
        if request.role not in self._roles:
            raise ROLE_NOT_FOUND
        txn.delete(AUTH_ROLES_BUCKET, request.role.encode("utf-8"))
        updated: dict[str, auth_pb2.User] = {}
        for name in sorted(self._users, key=_utf8):
            old = self._users[name]
            if request.role not in old.roles:
                continue
            user = auth_pb2.User()
            user.CopyFrom(old)
            del user.roles[:]
            user.roles.extend(r for r in old.roles if r != request.role)
            self._put_user(txn, user)
            updated[name] = user
        self._bump_revision(txn)
        del self._roles[request.role]
        self._users.update(updated)
        self._committed()
        log.info("deleted role %r", request.role)
        return pb.AuthRoleDeleteResponse()

    def role_grant_permission(
        self, txn: WriteTxn, request: pb.AuthRoleGrantPermissionRequest
    ) -> pb.AuthRoleGrantPermissionResponse:
        """Add a permission to a role, or change the type of the one on the same key and
        range_end. (etcd looks only at the first permission with that key, so with two
        permissions on one key it may append a duplicate; keelson updates the match.)"""
        old = self._roles.get(request.name)
        if old is None:
            raise ROLE_NOT_FOUND
        if not request.HasField("perm"):
            raise PERMISSION_NOT_GIVEN
        perm = request.perm
        role = auth_pb2.Role()
        role.CopyFrom(old)
        for existing in role.keyPermission:
            if existing.key == perm.key and existing.range_end == perm.range_end:
                existing.permType = perm.permType
                break
        else:
            perms = [
                *role.keyPermission,
                auth_pb2.Permission(permType=perm.permType, key=perm.key, range_end=perm.range_end),
            ]
            perms.sort(key=lambda p: p.key)
            del role.keyPermission[:]
            role.keyPermission.extend(perms)
        self._put_role(txn, role)
        self._bump_revision(txn)
        self._roles[request.name] = role
        self._committed()
        log.info("granted a permission to role %r", request.name)
        return pb.AuthRoleGrantPermissionResponse()

    def role_revoke_permission(
        self, txn: WriteTxn, request: pb.AuthRoleRevokePermissionRequest
    ) -> pb.AuthRoleRevokePermissionResponse:
        """Remove the role's permission(s) on exactly this key and range_end."""
        old = self._roles.get(request.role)
        if old is None:
            raise ROLE_NOT_FOUND
        kept = [
            p
            for p in old.keyPermission
            if not (p.key == request.key and p.range_end == request.range_end)
        ]
        if len(kept) == len(old.keyPermission):
            raise PERMISSION_NOT_GRANTED
        role = auth_pb2.Role(name=old.name, keyPermission=kept)
        self._put_role(txn, role)
        self._bump_revision(txn)
        self._roles[request.role] = role
        self._committed()
        log.info("revoked a permission from role %r", request.role)
        return pb.AuthRoleRevokePermissionResponse()


def _utf8(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")
