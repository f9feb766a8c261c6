"""Who may do what: the permission checks of the auth store (etcd's isOpPermitted,
IsAdminPermitted and the auth applier's per-request checks).

Theory of operation. :class:`PermissionChecks` is the half of
:class:`~keelson.auth.store.AuthStore` that only reads: given an :class:`AuthInfo` (or None
for a request without credentials) it allows a request or raises etcd's error. With auth
disabled everything is allowed. With auth enabled: no credentials -> ``user name is empty``;
credentials older than the current auth revision -> ``revision of auth store is old``; an
unknown user -> ``permission denied``; a user with the ``root`` role -> allowed; otherwise
the union of the user's roles' permissions of the right type must cover the request
(:mod:`keelson.auth._ranges`). Admin calls need the ``root`` role and check no revision.

Invariant: the merged permissions of a user are cached in ``_perm_cache`` only for the auth
revision they were computed at; the store replaces the whole cache on every change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from keelson.auth._ranges import KeyPermissions
from keelson.auth.tokens import AuthInfo
from keelson.proto.authpb import auth_pb2
from keelson.proto.errors import (
    AUTH_OLD_REVISION,
    PERMISSION_DENIED,
    USER_EMPTY,
    USER_NOT_FOUND,
    EtcdError,
)
from keelson.proto.etcdserverpb import rpc_pb2 as pb

ROOT_ROLE = "root"

LeaseKeys = Callable[[int], Iterable[bytes]]
"""The keys attached to a lease id (none for an unknown id); given by the server."""


def has_root_role(user: auth_pb2.User) -> bool:
    return ROOT_ROLE in user.roles


class PermissionChecks:
    """The read-only checks; the state they read is kept by the AuthStore subclass."""

    _enabled: bool
    _revision: int
    _users: dict[str, auth_pb2.User]
    _roles: dict[str, auth_pb2.Role]
    _perm_cache: dict[str, KeyPermissions]

    def has_role(self, name: str, role: str) -> bool:
        user = self._users.get(name)
        return user is not None and role in user.roles

    def permissions(self, name: str) -> KeyPermissions | None:
        """The merged permissions of user ``name`` (cached until the revision changes), or
        None if there is no such user."""
        # Insert into the dict we looked in: if a change replaces the cache meanwhile, a
        # result computed from the old roles lands in the discarded dict, never the new one.
        cache = self._perm_cache
        cached = cache.get(name)
        if cached is not None:
            return cached
        user = self._users.get(name)
        if user is None:
            return None
        perms = KeyPermissions.merge(
            p
            for r in user.roles
            if (role := self._roles.get(r)) is not None
            for p in role.keyPermission
        )
        cache[name] = perms
        return perms

    def is_range_permitted(
        self, info: AuthInfo | None, key: bytes, range_end: bytes, *, write: bool = False
    ) -> bool:
        """Whether ``info`` may read (or, with ``write``, write) ``key``/``range_end``:
        True when auth is off, for a ``root``-role user, or when the user's roles' READ
        (WRITE) permissions cover the request; False otherwise (including no user, an old
        revision or an unknown user; :meth:`check_range` says which)."""
        try:
            self.check_range(info, key, range_end, write=write)
        except EtcdError:
            return False
        return True

    def check_range(
        self, info: AuthInfo | None, key: bytes, range_end: bytes, *, write: bool = False
    ) -> None:
        """etcd's isOpPermitted: raises USER_EMPTY (no credentials), AUTH_OLD_REVISION
        (credentials from before the last auth change) or PERMISSION_DENIED."""
        if not self._enabled:
            return
        if info is None or info.revision == 0:
            raise USER_EMPTY
        if info.revision < self._revision:
            raise AUTH_OLD_REVISION
        user = self._users.get(info.username)
        if user is None:
            raise PERMISSION_DENIED
        if has_root_role(user):
            return
        perms = self.permissions(info.username)
        if perms is None or not perms.permits(key, range_end, write=write):
            raise PERMISSION_DENIED

    def check_put(self, info: AuthInfo | None, key: bytes) -> None:
        self.check_range(info, key, b"", write=True)

    def check_admin(self, info: AuthInfo | None) -> None:
        """Auth administration and other root-only calls (etcd's IsAdminPermitted):
        raises USER_EMPTY, USER_NOT_FOUND or PERMISSION_DENIED (no revision check)."""
        if not self._enabled:
            return
        if info is None or not info.username:
            raise USER_EMPTY
        user = self._users.get(info.username)
        if user is None:
            raise USER_NOT_FOUND
        if not has_root_role(user):
            raise PERMISSION_DENIED

    def is_admin(self, info: AuthInfo | None) -> bool:
        try:
            self.check_admin(info)
        except EtcdError:
            return False
        return True

    def check_user_get(self, info: AuthInfo | None, name: str) -> None:
        """UserGet: admins, or a user asking about itself."""
        try:
            self.check_admin(info)
        except EtcdError:
            if info is None or info.username != name:
                raise

    def check_role_get(self, info: AuthInfo | None, role: str) -> None:
        """RoleGet: admins, or a user holding the role."""
        try:
            self.check_admin(info)
        except EtcdError:
            if info is None or not self.has_role(info.username, role):
                raise

    # ---- whole requests -----------------------------------------------------------------------

    def check_lease_keys(self, info: AuthInfo | None, keys: Iterable[bytes]) -> None:
        """A user may revoke a lease, or attach keys to it, only if it may write every key
        already attached (admins may always)."""
        if not self._enabled or self.is_admin(info):
            return
        for key in keys:
            self.check_put(info, key)

    def check_range_request(self, info: AuthInfo | None, request: pb.RangeRequest) -> None:
        self.check_range(info, request.key, request.range_end)

    def check_put_request(
        self, info: AuthInfo | None, request: pb.PutRequest, lease_keys: LeaseKeys | None = None
    ) -> None:
        """Write on the key; write on every key already attached to the lease it names; read
        on the key when the previous value is asked for."""
        self.check_put(info, request.key)
        if request.lease and lease_keys is not None:
            self.check_lease_keys(info, lease_keys(request.lease))
        if request.prev_kv:
            self.check_range(info, request.key, b"")

    def check_delete_range_request(
        self, info: AuthInfo | None, request: pb.DeleteRangeRequest
    ) -> None:
        """Write on the range; read on it too when the deleted values are asked for."""
        self.check_range(info, request.key, request.range_end, write=True)
        if request.prev_kv:
            self.check_range(info, request.key, request.range_end)

    def check_txn(
        self, info: AuthInfo | None, request: pb.TxnRequest, lease_keys: LeaseKeys | None = None
    ) -> None:
        """Every compare needs read on its key/range; every operation of both branches is
        checked as if sent alone, nested transactions included (etcd 3.4 skipped nested
        ones; later etcd checks them, and so does keelson)."""
        if not self._enabled:
            return
        for compare in request.compare:
            self.check_range(info, compare.key, compare.range_end)
        for branch in (request.success, request.failure):
            for op in branch:
                kind = op.WhichOneof("request")
                if kind == "request_range":
                    self.check_range_request(info, op.request_range)
                elif kind == "request_put":
                    self.check_put_request(info, op.request_put, lease_keys)
                elif kind == "request_delete_range":
                    self.check_delete_range_request(info, op.request_delete_range)
                elif kind == "request_txn":
                    self.check_txn(info, op.request_txn, lease_keys)
