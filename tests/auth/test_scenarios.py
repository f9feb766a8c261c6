"""Auth store scenarios as data: ``tests/auth/testdata/*.txt`` (etcd's datadriven format).

Commands (keys and ends accept Python escapes such as ``\\x00``):

- ``user-add <name> [password=<pw>] [no-password]``, ``user-delete <name>``,
  ``user-passwd <name> password=<pw>``, ``user-get <name>``, ``users``
- ``role-add <name>``, ``role-delete <name>``, ``role-get <name>``, ``roles``
- ``grant-role <user> <role>``, ``revoke-role <user> <role>``
- ``grant-perm <role> <READ|WRITE|READWRITE> <key> [end=<end> | prefix | from-key]``
- ``revoke-perm <role> <key> [end=<end> | prefix | from-key]``
- ``enable``, ``disable``, ``status``
- ``login <name> password=<pw>`` checks the password and authenticates
- ``check <user> <read|write> <key> [end=... | prefix | from-key] [rev=<n>]``; user ``-``
  is a request without credentials
- ``admin <user>``

Each prints ``ok`` (with what a read returns) or ``error: <CODE> <message>``; mutations
that change the auth revision show it as ``rev=N``. Rewrite with ``KEELSON_REWRITE=1``.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keelson.auth import AuthInfo, AuthStore, SimpleTokenProvider, hash_password
from keelson.backend import Backend
from keelson.proto.authpb import auth_pb2
from keelson.proto.errors import EtcdError
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.testing.datadriven import TestCase, run_file

TESTDATA = Path(__file__).parent / "testdata"


def _bytes(text: str) -> bytes:
    return codecs.decode(text, "unicode_escape").encode("latin-1")


def _show(b: bytes) -> str:
    return repr(b)[2:-1]


def _prefix_end(key: bytes) -> bytes:
    end = bytearray(key)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def _span(tc: TestCase, key: str) -> tuple[bytes, bytes]:
    k = _bytes(key)
    if tc.arg("prefix") is not None:
        return k, _prefix_end(k)
    if tc.arg("from-key") is not None:
        return k, b"\x00"
    end = tc.arg("end")
    return k, _bytes(end.vals[0]) if end is not None else b""


class Driver:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.store = AuthStore(backend, SimpleTokenProvider(300))
        self.index = 0

    def mutate(self, fn: Callable[..., object], request: object, *extra: object) -> str:
        before = self.store.revision
        with self.backend.write() as txn:
            fn(txn, request, *extra)
        after = self.store.revision
        return f"ok rev={after}" if after != before else "ok (revision unchanged)"

    def handle(self, tc: TestCase) -> str:
        try:
            return self._handle(tc)
        except EtcdError as e:
            return f"error: {e.code.name} {e.message}"

    def _handle(self, tc: TestCase) -> str:
        s = self.store
        pos = tc.positional()
        pw_arg = tc.arg("password")
        password = pw_arg.vals[0] if pw_arg is not None else ""
        cmd = tc.cmd
        if cmd == "user-add":
            no_pw = tc.arg("no-password") is not None
            opts = auth_pb2.UserAddOptions(no_password=no_pw)
            req = pb.AuthUserAddRequest(name=pos[0] if pos else "", options=opts)
            return self.mutate(s.user_add, req, None if no_pw else hash_password(password, 4))
        if cmd == "user-delete":
            return self.mutate(s.user_delete, pb.AuthUserDeleteRequest(name=pos[0]))
        if cmd == "user-passwd":
            req_cp = pb.AuthUserChangePasswordRequest(name=pos[0])
            return self.mutate(s.user_change_password, req_cp, hash_password(password, 4))
        if cmd == "user-get":
            roles = s.user_get(pb.AuthUserGetRequest(name=pos[0])).roles
            return "ok roles=[" + ", ".join(roles) + "]"
        if cmd == "users":
            return "ok [" + ", ".join(s.user_list().users) + "]"
        if cmd == "role-add":
            return self.mutate(s.role_add, pb.AuthRoleAddRequest(name=pos[0] if pos else ""))
        if cmd == "role-delete":
            return self.mutate(s.role_delete, pb.AuthRoleDeleteRequest(role=pos[0]))
        if cmd == "role-get":
            perms = s.role_get(pb.AuthRoleGetRequest(role=pos[0])).perm
            lines = [
                f"  {auth_pb2.Permission.Type.Name(p.permType)} {_show(p.key)} "
                f"end={_show(p.range_end)}"
                for p in perms
            ]
            return "\n".join(["ok", *lines])
        if cmd == "roles":
            return "ok [" + ", ".join(s.role_list().roles) + "]"
        if cmd == "grant-role":
            req_g = pb.AuthUserGrantRoleRequest(user=pos[0], role=pos[1])
            return self.mutate(s.user_grant_role, req_g)
        if cmd == "revoke-role":
            req_r = pb.AuthUserRevokeRoleRequest(name=pos[0], role=pos[1])
            return self.mutate(s.user_revoke_role, req_r)
        if cmd == "grant-perm":
            role, kind, key = pos[0], pos[1], pos[2]
            k, e = _span(tc, key)
            perm = auth_pb2.Permission(
                key=k,
                range_end=e,
                permType=auth_pb2.Permission.Type.Value(kind),
            )
            req_p = pb.AuthRoleGrantPermissionRequest(name=role, perm=perm)
            return self.mutate(s.role_grant_permission, req_p)
        if cmd == "revoke-perm":
            k, e = _span(tc, pos[1])
            req_rp = pb.AuthRoleRevokePermissionRequest(role=pos[0], key=k, range_end=e)
            return self.mutate(s.role_revoke_permission, req_rp)
        if cmd == "enable":
            return self.mutate(s.auth_enable, pb.AuthEnableRequest())
        if cmd == "disable":
            return self.mutate(s.auth_disable, pb.AuthDisableRequest())
        if cmd == "status":
            st = s.auth_status()
            return f"ok enabled={st.enabled} rev={st.authRevision}"
        if cmd == "login":
            s.check_password(pos[0], password)
            self.index += 1
            token = s.authenticate(pos[0], simple_token_prefix="scenario", index=self.index).token
            info = s.auth_info_from_token(token)
            return f"ok token={token} user={info.username}"
        if cmd == "check":
            user, mode, key = pos[0], pos[1], pos[2]
            rev_arg = tc.arg("rev")
            rev = rev_arg.int() if rev_arg is not None else s.revision
            info = None if user == "-" else AuthInfo(user, rev)
            k, e = _span(tc, key)
            s.check_range(info, k, e, write=mode == "write")
            return "ok"
        if cmd == "admin":
            s.check_admin(None if pos[0] == "-" else AuthInfo(pos[0], s.revision))
            return "ok"
        raise ValueError(f"{tc.pos}: unknown command {cmd}")


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Driver]:
    backend = Backend(str(tmp_path / "db"), buckets=AuthStore.BUCKETS, map_size=32 << 20)
    try:
        yield Driver(backend)
    finally:
        backend.close()


@pytest.mark.parametrize("name", sorted(p.name for p in TESTDATA.glob("*.txt")))
def test_scenario(driver: Driver, name: str) -> None:
    run_file(TESTDATA / name, driver.handle)
