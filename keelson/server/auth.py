"""Authentication and authorization of one member: etcd's auth RPCs and per-request checks.

Theory of operation. :class:`MemberAuth` is the part of :class:`~keelson.server.etcdserver.
EtcdServer` that speaks for :mod:`keelson.auth`. It owns the member's
:class:`~keelson.auth.AuthStore` (whose state lives in the member's backend and changes only
through the raft log), the password back-off and the bcrypt cost. It is used in three places:

- **Requests.** The server hands every client call's ``identity`` (the ``token`` the client
  sent, a :class:`CertificateName` when it sent none but presented a verified client
  certificate, an :class:`~keelson.auth.AuthInfo`, ``None`` for none) to
  :meth:`MemberAuth.identify`. A certificate name is the user only with
  ``--client-cert-auth`` (etcd 3.4's ``AuthInfoFromTLS``, consulted only when
  ``ClientCertAuthEnabled``); a name that is no user is refused as any unknown user is
  (permission denied on use). Writes are *stamped* (:meth:`stamp`): the user name
  and the auth revision the credentials were valid at travel in the entry's header, and the
  permission is decided when the entry is applied (:meth:`check_apply`), so a write is judged
  against the auth state of its position in the log, exactly as etcd's auth applier does.
  Reads (range, read-only txn, lease time-to-live with keys, watch creation) are checked on
  the member after the ReadIndex barrier, and refused with ``revision of auth store is old``
  if the auth state moved while they were served (etcd's doSerialize). Membership changes,
  MoveLeader and alarm changes need the ``root`` role (:meth:`check_admin`); Defragment,
  Hash, HashKV and Snapshot too, answered with etcd 3.4's untranslated ``auth: ...`` errors
  (:meth:`check_maintenance`); Status, MemberList and Compact only need a valid token if
  one is sent (etcd 3.4). Lease calls follow the later 3.4 releases (credentials required,
  permission on the lease's keys), which are stricter than etcd 3.4.23.
- **Auth RPCs.** Changes (enable, disable, users, roles, permissions) are proposed and
  applied in log order on every member (:meth:`apply`); the admin check happens at apply.
  ``UserAdd`` and ``UserChangePassword`` are hashed on the proposing member in a thread
  and proposed with ``hashedPassword`` only, so no clear password reaches the WAL, a
  snapshot or the backend. ``Authenticate`` checks the password in a thread (after the
  back-off admitted it), proposes the user name and a simple-token prefix, and retries if
  the auth revision moved between the check and the apply (etcd's loop). User/role reads
  are served locally after a ReadIndex barrier.
- **Apply.** :meth:`check_apply` runs before any request of the entry touches the key
  space; :meth:`apply` runs the store's mutation inside the apply's backend transaction.

Invariants: a clear password is never put into an ``InternalRaftRequest`` (``password`` is
cleared before proposing); requests the member makes on its own behalf (lease expiry) are
stamped as ``root`` (etcd's ``WithRoot``); calls forwarded by a peer that already checked
them carry :data:`PEER_CHECKED`. If an apply transaction aborts, the member stops (the raft
loop fails); :meth:`recover` reloads the store from the backend (never call it inside an
open write transaction).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from keelson.auth import (
    ROOT_USER,
    AuthBackoff,
    AuthInfo,
    AuthStore,
    effective_bcrypt_cost,
    hash_password,
    new_token_provider,
    simple_token_index,
)
from keelson.backend import Backend, WriteTxn
from keelson.proto import errors
from keelson.proto.etcdserverpb import raft_internal_pb2 as ipb
from keelson.proto.etcdserverpb import rpc_pb2 as pb

log = logging.getLogger(__name__)

TOKEN_INDEX_WAIT_S = 5.0
"""How long a simple token's request waits for this member to apply the token's entry."""


class _PeerChecked:
    """The identity of a call a peer forwards after checking it itself."""

    def __repr__(self) -> str:
        return "PEER_CHECKED"


PEER_CHECKED: Final = _PeerChecked()


@dataclass(frozen=True, slots=True)
class CertificateName:
    """A caller named by the Common Name of the verified TLS client certificate it presented
    (it sent no token). The api layer extracts it; :meth:`MemberAuth.identify` decides."""

    name: str


ADMIN_REQUESTS: Final = frozenset(
    {
        "auth_enable",
        "auth_disable",
        "auth_status",
        "auth_user_add",
        "auth_user_delete",
        "auth_user_change_password",
        "auth_user_grant_role",
        "auth_user_revoke_role",
        "auth_user_list",
        "auth_role_add",
        "auth_role_delete",
        "auth_role_grant_permission",
        "auth_role_revoke_permission",
        "auth_role_list",
    }
)
"""InternalRaftRequest fields whose apply needs the ``root`` role (etcd's
needAdminPermission)."""

_AUTH_APPLY: Final = ADMIN_REQUESTS | {"authenticate", "auth_user_get", "auth_role_get"}

Propose = Callable[[ipb.InternalRaftRequest], Awaitable[Any]]


def _ok(result: Any) -> Any:
    if isinstance(result, BaseException):
        raise result
    return result


def _watch_cancel_reason(err: errors.EtcdError) -> str:
    """etcd 3.4 puts the gRPC error's text into the canceled watch response."""
    known = (errors.INVALID_AUTH_TOKEN, errors.AUTH_OLD_REVISION, errors.USER_EMPTY)
    chosen = err if err in known else errors.PERMISSION_DENIED
    code = {
        errors.INVALID_AUTH_TOKEN: "Unauthenticated",
        errors.AUTH_OLD_REVISION: "InvalidArgument",
        errors.USER_EMPTY: "InvalidArgument",
    }.get(chosen, "PermissionDenied")
    return f"rpc error: code = {code} desc = {chosen.message}"


def _untranslated(err: errors.EtcdError) -> errors.EtcdError:
    """The auth package's own form of an auth error, as etcd 3.4's maintenance service
    returns it without mapping it to its gRPC error (``auth: ...``, codes.Unknown)."""
    suffix = err.message.removeprefix("etcdserver: ")
    return errors.EtcdError(errors.Code.UNKNOWN, f"auth: {suffix}", f"AUTH_{err.name}")


class MemberAuth:
    """The auth side of one member; see the module docstring."""

    def __init__(
        self,
        store: AuthStore,
        *,
        propose: Propose,
        barrier: Callable[[], Awaitable[None]],
        wait_applied: Callable[[int], Awaitable[None]],
        applied_index: Callable[[], int],
        header: Callable[[], pb.ResponseHeader],
        lease_keys: Callable[[int], Iterable[bytes]],
        bcrypt_cost: int = 10,
        backoff: AuthBackoff | None = None,
        client_cert_auth: bool = False,
    ) -> None:
        self.store = store
        self._propose = propose
        self._barrier = barrier
        self._wait_applied = wait_applied
        self._applied_index = applied_index
        self._header = header
        self._lease_keys = lease_keys
        self.bcrypt_cost = effective_bcrypt_cost(bcrypt_cost)
        self.backoff = backoff if backoff is not None else AuthBackoff()
        self.client_cert_auth = client_cert_auth

    @classmethod
    def for_member(cls, server: Any, backend: Backend) -> MemberAuth:
        """The auth component of ``server`` (an EtcdServer whose ``cfg`` carries
        ``auth_token``, ``auth_token_ttl``, ``bcrypt_cost`` and ``client_cert_auth``), over
        ``backend``.
        Raises :class:`~keelson.auth.AuthOptionsError` for a bad ``--auth-token``."""
        cfg = server.cfg
        provider = new_token_provider(
            str(getattr(cfg, "auth_token", "simple")),
            simple_ttl=float(getattr(cfg, "auth_token_ttl", 300)),
        )
        cost = int(getattr(cfg, "bcrypt_cost", 10))
        if effective_bcrypt_cost(cost) != cost:
            log.warning(
                "--bcrypt-cost %d is out of range; using %d", cost, effective_bcrypt_cost(cost)
            )

        def lease_keys(lease_id: int) -> Iterable[bytes]:
            try:
                return server.leases.time_to_live(lease_id, 0.0).keys  # type: ignore[no-any-return]
            except errors.EtcdError:
                return ()

        def applied() -> int:
            return int(server.applied_index)

        return cls(
            AuthStore(backend, provider),
            propose=server._propose,
            barrier=server._linearizable_barrier,
            wait_applied=server.wait_applied,
            applied_index=applied,
            header=server.header,
            lease_keys=lease_keys,
            bcrypt_cost=cost,
            client_cert_auth=bool(getattr(cfg, "client_cert_auth", False)),
        )

    def recover(self, backend: Backend) -> None:
        """Reload the store from ``backend`` after a snapshot was installed (and what to
        call should an aborted apply transaction ever not stop the member, as it does now);
        never inside an open write transaction."""
        self.store.recover(backend)

    # ---- identities -----------------------------------------------------------------------

    async def identify(self, identity: object) -> AuthInfo | None:
        """Who ``identity`` is: None without credentials; raises INVALID_AUTH_TOKEN for a
        token this member does not know (after waiting, for a simple token, until it has
        applied the entry that issued it, as etcd's index waiter). A certificate name is
        the user of that name at the current auth revision with ``--client-cert-auth``, and
        no credentials without it."""
        if identity is None or identity is PEER_CHECKED:
            return None
        if isinstance(identity, AuthInfo):
            return identity
        if isinstance(identity, CertificateName):
            if not self.client_cert_auth:
                return None
            return self.store.auth_info_for_user(identity.name)
        if not isinstance(identity, str):
            raise TypeError(
                f"identity must be a token, CertificateName, AuthInfo or None, not {identity!r}"
            )
        index = simple_token_index(identity)
        if index is not None and self._applied_index() < index:
            try:
                await asyncio.wait_for(self._wait_applied(index), TOKEN_INDEX_WAIT_S)
            except TimeoutError:
                raise errors.INVALID_AUTH_TOKEN from None
        return self.store.auth_info_from_token(identity)

    async def stamp(
        self, request: ipb.InternalRaftRequest, identity: object
    ) -> ipb.InternalRaftRequest:
        """Put the caller's user name and auth revision into ``request``'s header (the
        apply decides); raises INVALID_AUTH_TOKEN for a bad token."""
        if identity is PEER_CHECKED:
            return self.as_root(request)
        info = await self.identify(identity)
        if info is not None:
            request.header.username = info.username
            request.header.auth_revision = info.revision
        return request

    def as_root(self, request: ipb.InternalRaftRequest) -> ipb.InternalRaftRequest:
        """Stamp a request the member makes on its own behalf (etcd's WithRoot)."""
        request.header.username = ROOT_USER
        request.header.auth_revision = self.store.revision
        return request

    async def require_info(self, identity: object) -> AuthInfo | None:
        """etcd's requireAuthInfo: with auth enabled, credentials must be given."""
        if identity is PEER_CHECKED:
            return None
        info = await self.identify(identity)
        if self.store.enabled and info is None:
            raise errors.USER_EMPTY
        return info

    async def check_admin(self, identity: object) -> None:
        """Maintenance and membership calls: the ``root`` role is needed when auth is on."""
        if identity is PEER_CHECKED:
            return
        info = await self.identify(identity)
        self.store.check_admin(info)

    async def check_maintenance(self, identity: object) -> None:
        """Defragment, Hash, HashKV and Snapshot need ``root``; etcd 3.4 returns the auth
        package's error untranslated there (code Unknown, ``auth: permission denied``)."""
        try:
            await self.check_admin(identity)
        except errors.EtcdError as err:
            raise _untranslated(err) from None

    def check_revision(self, info: AuthInfo | None) -> None:
        """After serving a read: refuse it if the auth state changed meanwhile."""
        if (
            self.store.enabled
            and info is not None
            and info.revision != 0
            and info.revision != self.store.revision
        ):
            raise errors.AUTH_OLD_REVISION

    # ---- reads ----------------------------------------------------------------------------

    async def check_range(self, identity: object, request: pb.RangeRequest) -> AuthInfo | None:
        """Before serving a range (after the barrier): read permission on its keys."""
        if identity is PEER_CHECKED:
            return None
        info = await self.identify(identity)
        self.store.check_range_request(self._credentials(info), request)
        return info

    async def check_read_txn(self, identity: object, request: pb.TxnRequest) -> AuthInfo | None:
        """Before serving a read-only txn: read permission on every compare and range."""
        if identity is PEER_CHECKED:
            return None
        info = await self.identify(identity)
        self.store.check_txn(self._credentials(info), request, self._lease_keys)
        return info

    def _credentials(self, info: AuthInfo | None) -> AuthInfo:
        """etcd checks reads with empty credentials (revision 0) when none were given."""
        return info if info is not None else AuthInfo("", 0)

    async def check_lease_time_to_live(
        self, identity: object, request: pb.LeaseTimeToLiveRequest
    ) -> AuthInfo | None:
        """TimeToLive needs credentials; with ``keys`` also read permission on every key
        attached to the lease (admins may always)."""
        if identity is PEER_CHECKED:
            return None
        info = await self.require_info(identity)
        if request.keys and self.store.enabled and not self.store.is_admin(info):
            for key in self._lease_keys(request.ID):
                self.store.check_range(info, key, b"")
        return info

    async def check_lease_leases(self, identity: object, lease_ids: Iterable[int]) -> None:
        """LeaseLeases: read permission on every key of every lease (admins may always)."""
        if identity is PEER_CHECKED:
            return
        info = await self.require_info(identity)
        if not self.store.enabled or self.store.is_admin(info):
            return
        for lease_id in lease_ids:
            for key in self._lease_keys(lease_id):
                self.store.check_range(info, key, b"")
        self.check_revision(info)

    async def check_lease_renew(self, identity: object, lease_id: int) -> None:
        """A keep-alive needs write permission on every key attached to the lease."""
        if identity is PEER_CHECKED:
            return
        info = await self.require_info(identity)
        if not self.store.enabled:
            return
        self.store.check_lease_keys(info, self._lease_keys(lease_id))
        self.check_revision(info)

    async def check_alarm(self, identity: object, request: pb.AlarmRequest) -> None:
        """Listing alarms is open to anyone (etcd 3.4; the /health check lists them too);
        raising or clearing one needs ``root`` (as the later 3.4 releases)."""
        if request.action == pb.AlarmRequest.GET:
            await self.identify(identity)
        else:
            await self.check_admin(identity)

    async def watch_denied(
        self, identity: object, request: pb.WatchCreateRequest
    ) -> pb.WatchResponse | None:
        """None if the caller may watch the request's range; otherwise the canceled
        "created" response etcd sends for it (watch id -1, the reason as text)."""
        try:
            info = await self.identify(identity)
            self.store.check_range(self._credentials(info), request.key, request.range_end)
        except errors.EtcdError as err:
            return pb.WatchResponse(
                header=self._header(),
                watch_id=-1,
                created=True,
                canceled=True,
                cancel_reason=_watch_cancel_reason(err),
            )
        return None

    # ---- apply ----------------------------------------------------------------------------

    def check_apply(self, request: ipb.InternalRaftRequest, which: str | None) -> None:
        """etcd's auth applier: decide a committed request against the auth state at its
        position in the log; raises the client's error (the entry is then a no-op)."""
        store = self.store
        if not store.enabled or which is None:
            return
        info = AuthInfo(request.header.username, request.header.auth_revision)
        if which in ADMIN_REQUESTS:
            store.check_admin(info)
        elif which == "put":
            store.check_put_request(info, request.put, self._lease_keys)
        elif which == "delete_range":
            store.check_delete_range_request(info, request.delete_range)
        elif which == "txn":
            store.check_txn(info, request.txn, self._lease_keys)
        elif which == "range":
            store.check_range_request(info, request.range)
        elif which == "lease_revoke":
            store.check_lease_keys(info, self._lease_keys(request.lease_revoke.ID))
        elif which == "auth_user_get":  # keelson serves these reads locally; etcd logs them
            store.check_user_get(info, request.auth_user_get.name)
        elif which == "auth_role_get":
            store.check_role_get(info, request.auth_role_get.role)

    @staticmethod
    def handles(which: str | None) -> bool:
        """Whether an entry of this kind is applied by :meth:`apply`."""
        return which in _AUTH_APPLY

    def apply(self, txn: WriteTxn, request: ipb.InternalRaftRequest, which: str, index: int) -> Any:
        """Apply an auth entry (committed at raft ``index``) inside the apply's write
        transaction; returns the response (without header) or raises etcd's error."""
        store = self.store
        if which == "authenticate":
            a = request.authenticate
            return store.authenticate(a.name, simple_token_prefix=a.simple_token, index=index)
        if which == "auth_enable":
            return store.auth_enable(txn, request.auth_enable)
        if which == "auth_disable":
            return store.auth_disable(txn, request.auth_disable)
        if which == "auth_status":
            return store.auth_status()
        if which == "auth_user_add":
            r = request.auth_user_add
            return store.user_add(txn, r, r.hashedPassword.encode("ascii") or None)
        if which == "auth_user_change_password":
            r2 = request.auth_user_change_password
            return store.user_change_password(txn, r2, r2.hashedPassword.encode("ascii"))
        if which == "auth_user_delete":
            return store.user_delete(txn, request.auth_user_delete)
        if which == "auth_user_grant_role":
            return store.user_grant_role(txn, request.auth_user_grant_role)
        if which == "auth_user_revoke_role":
            return store.user_revoke_role(txn, request.auth_user_revoke_role)
        if which == "auth_user_get":
            return store.user_get(request.auth_user_get)
        if which == "auth_user_list":
            return store.user_list(request.auth_user_list)
        if which == "auth_role_add":
            return store.role_add(txn, request.auth_role_add)
        if which == "auth_role_delete":
            return store.role_delete(txn, request.auth_role_delete)
        if which == "auth_role_grant_permission":
            return store.role_grant_permission(txn, request.auth_role_grant_permission)
        if which == "auth_role_revoke_permission":
            return store.role_revoke_permission(txn, request.auth_role_revoke_permission)
        if which == "auth_role_get":
            return store.role_get(request.auth_role_get)
        if which == "auth_role_list":
            return store.role_list(request.auth_role_list)
        raise errors.NOT_CAPABLE

    # ---- the Auth service ---------------------------------------------------------------------

    async def _change(self, field: str, request: Any, identity: object) -> Any:
        """Propose one auth change as the caller; the response gets the member's header."""
        internal = ipb.InternalRaftRequest()
        getattr(internal, field).CopyFrom(request)
        await self.stamp(internal, identity)
        resp = _ok(await self._propose(internal))
        resp.header.CopyFrom(self._header())
        return resp

    async def authenticate(
        self, request: pb.AuthenticateRequest, peer: str | None = None
    ) -> pb.AuthenticateResponse:
        """Check the password (in a thread, after the back-off admits the attempt), then
        propose the token's issue; retried while the auth revision moves in between."""
        await self._barrier()
        if not self.store.enabled:
            raise errors.AUTH_NOT_ENABLED
        name, password = request.name, request.password
        wait = self.backoff.admit(name, peer)
        if wait is None:
            log.warning("authentication of %r from %s refused: too many failures", name, peer)
            raise errors.AUTH_FAILED
        if wait > 0:
            await asyncio.sleep(wait)
        while True:
            try:
                checked = await asyncio.to_thread(self.store.check_password, name, password)
            except errors.EtcdError as err:
                if err != errors.AUTH_NOT_ENABLED:
                    self.backoff.failure(name, peer)
                    log.warning("invalid authentication was requested for %r: %s", name, err)
                raise
            self.backoff.success(name, peer)
            internal = ipb.InternalRaftRequest(
                authenticate=ipb.InternalAuthenticateRequest(
                    name=name, simple_token=self.store.gen_token_prefix()
                )
            )
            resp: pb.AuthenticateResponse = _ok(await self._propose(internal))
            if checked == self.store.revision:
                resp.header.CopyFrom(self._header())
                return resp
            log.info("auth revision moved while the password was checked; retrying")

    async def auth_enable(
        self, request: pb.AuthEnableRequest, identity: object = None
    ) -> pb.AuthEnableResponse:
        resp: pb.AuthEnableResponse = await self._change("auth_enable", request, identity)
        return resp

    async def auth_disable(
        self, request: pb.AuthDisableRequest, identity: object = None
    ) -> pb.AuthDisableResponse:
        resp: pb.AuthDisableResponse = await self._change("auth_disable", request, identity)
        return resp

    async def auth_status(
        self, request: pb.AuthStatusRequest, identity: object = None
    ) -> pb.AuthStatusResponse:
        await self._read_as_admin(identity)
        resp = self.store.auth_status()
        resp.header.CopyFrom(self._header())
        return resp

    async def user_add(
        self, request: pb.AuthUserAddRequest, identity: object = None
    ) -> pb.AuthUserAddResponse:
        """Hash the password here (off the loop), propose only the hash."""
        r = pb.AuthUserAddRequest()
        r.CopyFrom(request)
        r.password = ""
        r.hashedPassword = ""
        if not (request.HasField("options") and request.options.no_password):
            hashed = await asyncio.to_thread(hash_password, request.password, self.bcrypt_cost)
            r.hashedPassword = hashed.decode("ascii")
        resp: pb.AuthUserAddResponse = await self._change("auth_user_add", r, identity)
        return resp

    async def user_change_password(
        self, request: pb.AuthUserChangePasswordRequest, identity: object = None
    ) -> pb.AuthUserChangePasswordResponse:
        """Hash the new password here (off the loop), propose only the hash."""
        hashed = await asyncio.to_thread(hash_password, request.password, self.bcrypt_cost)
        r = pb.AuthUserChangePasswordRequest(name=request.name, hashedPassword=hashed.decode())
        resp: pb.AuthUserChangePasswordResponse = await self._change(
            "auth_user_change_password", r, identity
        )
        return resp

    async def user_delete(
        self, request: pb.AuthUserDeleteRequest, identity: object = None
    ) -> pb.AuthUserDeleteResponse:
        resp: pb.AuthUserDeleteResponse = await self._change("auth_user_delete", request, identity)
        return resp

    async def user_grant_role(
        self, request: pb.AuthUserGrantRoleRequest, identity: object = None
    ) -> pb.AuthUserGrantRoleResponse:
        resp: pb.AuthUserGrantRoleResponse = await self._change(
            "auth_user_grant_role", request, identity
        )
        return resp

    async def user_revoke_role(
        self, request: pb.AuthUserRevokeRoleRequest, identity: object = None
    ) -> pb.AuthUserRevokeRoleResponse:
        resp: pb.AuthUserRevokeRoleResponse = await self._change(
            "auth_user_revoke_role", request, identity
        )
        return resp

    async def role_add(
        self, request: pb.AuthRoleAddRequest, identity: object = None
    ) -> pb.AuthRoleAddResponse:
        resp: pb.AuthRoleAddResponse = await self._change("auth_role_add", request, identity)
        return resp

    async def role_delete(
        self, request: pb.AuthRoleDeleteRequest, identity: object = None
    ) -> pb.AuthRoleDeleteResponse:
        resp: pb.AuthRoleDeleteResponse = await self._change("auth_role_delete", request, identity)
        return resp

    async def role_grant_permission(
        self, request: pb.AuthRoleGrantPermissionRequest, identity: object = None
    ) -> pb.AuthRoleGrantPermissionResponse:
        resp: pb.AuthRoleGrantPermissionResponse = await self._change(
            "auth_role_grant_permission", request, identity
        )
        return resp

    async def role_revoke_permission(
        self, request: pb.AuthRoleRevokePermissionRequest, identity: object = None
    ) -> pb.AuthRoleRevokePermissionResponse:
        resp: pb.AuthRoleRevokePermissionResponse = await self._change(
            "auth_role_revoke_permission", request, identity
        )
        return resp

    async def _read_as_admin(self, identity: object) -> AuthInfo | None:
        """Linearizable auth read: wait for the barrier, then require ``root``."""
        await self._barrier()
        info = await self.identify(identity)
        self.store.check_admin(info)
        return info

    async def user_get(
        self, request: pb.AuthUserGetRequest, identity: object = None
    ) -> pb.AuthUserGetResponse:
        """A user's roles: for admins, or for the user itself."""
        await self._barrier()
        self.store.check_user_get(await self.identify(identity), request.name)
        resp = self.store.user_get(request)
        resp.header.CopyFrom(self._header())
        return resp

    async def user_list(
        self, request: pb.AuthUserListRequest, identity: object = None
    ) -> pb.AuthUserListResponse:
        await self._read_as_admin(identity)
        resp = self.store.user_list(request)
        resp.header.CopyFrom(self._header())
        return resp

    async def role_get(
        self, request: pb.AuthRoleGetRequest, identity: object = None
    ) -> pb.AuthRoleGetResponse:
        """A role's permissions: for admins, or for a user holding the role."""
        await self._barrier()
        self.store.check_role_get(await self.identify(identity), request.role)
        resp = self.store.role_get(request)
        resp.header.CopyFrom(self._header())
        return resp

    async def role_list(
        self, request: pb.AuthRoleListRequest, identity: object = None
    ) -> pb.AuthRoleListResponse:
        await self._read_as_admin(identity)
        resp = self.store.role_list(request)
        resp.header.CopyFrom(self._header())
        return resp
