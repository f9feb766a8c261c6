"""Auth with the real etcdctl 3.4 (``--user name:password``) against keelson and etcd 3.4
started with the same flags: users, roles, prefix/range/key permissions, and what each kind
of request may do, compared outcome by outcome (see tests/compat/differential.py for the
normalization).

The clusters are shared by the module and the tests run in file order: the first test sets
up the users and roles and enables auth, the later ones use them. Known, deliberate
differences from etcd 3.4.23 (the Debian build) are asserted separately and say why.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from tests.compat.differential import Outcome, Pair, Side, Watcher

pytestmark = pytest.mark.skipif(
    (shutil.which("etcd") is None or shutil.which("etcdctl") is None) and not os.environ.get("CI"),
    reason="etcd/etcdctl not installed (make test installs them)",
)

ROOT = ("--user", "root:rootpw")
ALICE = ("--user", "alice:alicepw")  # role rw: READWRITE a/ (prefix), READ r, WRITE w/..w0
BOB = ("--user", "bob:bobpw")  # no roles
FIRST_PASSWORD = "Alice-First-Secret-5521"
_TTL = re.compile(r"(remaining|TTL)\([0-9]+s?\)")
SECOND_PASSWORD = "Alice-Second-Secret-8830"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(1, tmp_path_factory.mktemp("auth1"), extra_args=("--bcrypt-cost=4",)).start()
    try:
        yield p
    finally:
        p.stop()


def _grpc_call(
    side: Side, method: str, request: object, token: str | None, endpoint: int = 0
) -> tuple[str, str]:
    """One gRPC call straight to a member: ("OK", "") or (status code name, message)."""
    with grpc.insecure_channel(side.endpoint(endpoint)) as ch:
        stubs = {
            "Range": pbg.KVStub(ch).Range,
            "Put": pbg.KVStub(ch).Put,
            "Authenticate": pbg.AuthStub(ch).Authenticate,
        }
        metadata = (("token", token),) if token is not None else None
        try:
            stubs[method](request, metadata=metadata, timeout=15)
        except grpc.RpcError as e:
            return e.code().name, str(e.details())
        return "OK", ""


def _token(side: Side, name: str, password: str, endpoint: int = 0) -> str:
    with grpc.insecure_channel(side.endpoint(endpoint)) as ch:
        resp = pbg.AuthStub(ch).Authenticate(
            pb.AuthenticateRequest(name=name, password=password), timeout=15
        )
    return str(resp.token)


# -- setup ----------------------------------------------------------------------------------


def test_users_roles_and_enable(pair: Pair) -> None:
    pair.same("auth", "enable", ok=False)  # root user does not exist
    assert pair.same("user", "add", "root:rootpw").out == "User root created\n"
    # (etcdctl's auth enable adds the root role itself when it is missing)
    pair.same("user", "grant-role", "root", "root")
    pair.same("role", "add", "rw")
    pair.same("role", "add", "rw", ok=False)
    pair.same("role", "grant-permission", "rw", "readwrite", "a/", "--prefix=true")
    pair.same("role", "grant-permission", "rw", "read", "r")
    pair.same("role", "grant-permission", "rw", "write", "w/", "w0")
    pair.same("role", "grant-permission", "rw", "bogus", "x", ok=False)
    pair.same("user", "add", f"alice:{FIRST_PASSWORD}")
    pair.same("user", "passwd", "alice", "--interactive=false", stdin="alicepw\n")
    pair.same("user", "add", "bob:bobpw")
    pair.same("user", "grant-role", "alice", "rw")
    pair.same("user", "grant-role", "alice", "nope", ok=False)
    pair.same("user", "add", "alice:x", ok=False)
    pair.same("user", "get", "alice")
    pair.same("user", "get", "alice", "-w", "json")
    pair.same("role", "get", "rw")
    pair.same("role", "get", "rw", "-w", "json")
    pair.same("user", "list")
    pair.same("role", "list")
    # data written before auth is on, by nobody in particular
    for key, value in (("a/1", "one"), ("b", "bee"), ("r", "are"), ("w/1", "double")):
        pair.same("put", key, value)
    assert pair.same("auth", "enable").out == "Authentication Enabled\n"
    pair.same("auth", "enable", *ROOT)


def test_no_or_bad_credentials(pair: Pair) -> None:
    pair.same("get", "a/1", ok=False)  # user name is empty
    pair.same("put", "a/1", "x", ok=False)
    pair.same("get", "a/1", "--user", "alice:wrong", ok=False)  # authentication failed
    pair.same("get", "a/1", "--user", "nobody:pw", ok=False)
    pair.same("get", "a/1", *BOB, ok=False)  # permission denied
    pair.same("user", "list", ok=False)


def test_key_permissions_by_request_kind(pair: Pair) -> None:
    pair.same("get", "a/1", *ALICE)
    pair.same("get", "a/", "--prefix", "-w", "json", *ALICE)
    pair.same("get", "r", *ALICE)
    pair.same("get", "b", *ALICE, ok=False)
    pair.same("get", "a", "--prefix", *ALICE, ok=False)  # "a" prefix is wider than a/
    pair.same("get", "w/1", *ALICE, ok=False)  # write-only
    pair.same("get", "", "--from-key", *ALICE, ok=False)
    pair.same("put", "a/2", "two", *ALICE)
    pair.same("put", "w/2", "two", *ALICE)
    pair.same("put", "w0", "x", *ALICE, ok=False)  # range end is exclusive
    pair.same("put", "r", "x", *ALICE, ok=False)  # read-only
    pair.same("put", "b", "x", *ALICE, ok=False)
    pair.same("put", "a/2", "three", "--prev-kv", *ALICE)
    pair.same("put", "w/2", "three", "--prev-kv", *ALICE, ok=False)  # prev_kv needs read
    pair.same("del", "b", *ALICE, ok=False)
    pair.same("del", "w/2", "--prev-kv", *ALICE, ok=False)
    pair.same("del", "w/2", *ALICE)
    pair.same("del", "a/", "--prefix", "--prev-kv", "-w", "json", *ALICE)
    pair.same("get", "", "--from-key", "-w", "json", *ROOT)


def test_txn_compares_and_branches(pair: Pair) -> None:
    pair.same("put", "a/t", "1", *ALICE)
    allowed = 'value("r") = "are"\n\nput a/t 2\nget a/t\n\nput w/t 3\n\n'
    pair.same("txn", "-w", "json", *ALICE, stdin=allowed)
    for script in (
        'value("b") = "bee"\n\nput a/t 4\n\n\n',  # compare on a key it may not read
        'value("r") = "are"\n\nput b 5\n\n\n',  # success branch writes outside
        'value("r") = "x"\n\nput a/t 6\n\nget b\n\n',  # failure branch reads outside
        "\n\nget w/1\n\n\n",  # read-only txn
        'value("a/t") = "2"\n\ndel r\n\n\n',
    ):
        pair.same("txn", *ALICE, stdin=script, ok=False)
    pair.same("get", "a/t", "-w", "json", *ALICE)


def test_watch_permissions(pair: Pair) -> None:
    outputs: dict[str, list[tuple[str, str]]] = {}
    views = (("a/", "--prefix", *ALICE), ("b", *ALICE), ("b", *ROOT))
    for kind, side in pair.sides.items():
        watchers = [Watcher(side, *v) for v in views]
        time.sleep(1.5)  # the watchers register before the writes
        side.run("put", "a/w", "1", *ALICE)
        side.run("put", "b", "2", *ROOT)
        outputs[kind] = [w.stop(n, timeout=8) for w, n in zip(watchers, (1, 1, 1), strict=True)]
    for i, view in enumerate(views):
        got = {}
        for kind, side in pair.sides.items():
            out, err = outputs[kind][i]
            last_err = err.strip().splitlines()[-1:] if err.strip() else []
            got[kind] = (side.normalize_text(out), [side.normalize_text(x) for x in last_err])
        assert got["keelson"] == got["etcd"], (view, got)
        assert got["etcd"][0] or got["etcd"][1], view
        if view == ("b", *ALICE):
            assert got["etcd"] == ("", ["Error: watch is canceled by the server"]), got
        else:
            assert "PUT" in got["etcd"][0], got


def test_leases(pair: Pair) -> None:
    for side in pair.sides.values():
        lease_id = None
        code, out, err = side.raw("lease", "grant", "600", *ROOT)
        assert code == 0, err
        lease_id = out.split()[1]
        side.learn(int(lease_id, 16), "<root-lease>")
        code, out, err = side.raw("put", "b/leased", "x", "--lease", lease_id, *ROOT)
        assert code == 0, err
    etcd_id, keelson_id = pair.etcd.hex_id("<root-lease>"), pair.keelson.hex_id("<root-lease>")

    def both(*args: str, ok: bool) -> None:
        got = {
            "etcd": pair.etcd.run(*[etcd_id if a == "<id>" else a for a in args]),
            "keelson": pair.keelson.run(*[keelson_id if a == "<id>" else a for a in args]),
        }
        # the remaining TTL differs by a second or so between the two clusters
        got = {k: Outcome(o.code, _TTL.sub("TTL(*)", str(o.out)), o.err) for k, o in got.items()}
        assert got["keelson"] == got["etcd"], (args, got)
        assert (got["etcd"].code == 0) == ok, got

    both("lease", "revoke", "<id>", *ALICE, ok=False)  # may not write b/leased
    both("put", "a/l", "x", "--lease", "<id>", *ALICE, ok=False)  # attach to such a lease
    both("lease", "timetolive", "<id>", *ALICE, ok=True)
    both("lease", "timetolive", "<id>", "--keys", *ROOT, ok=True)
    # etcd 3.4.23 lists the keys of a lease to anyone authenticated; 3.4.26+ (the fix of
    # CVE-2023-32082) and keelson require read permission on every key
    etcd_ttl = pair.etcd.run("lease", "timetolive", etcd_id, "--keys", *ALICE)
    keelson_ttl = pair.keelson.run("lease", "timetolive", keelson_id, "--keys", *ALICE)
    assert etcd_ttl.code == 0 and "b/leased" in str(etcd_ttl.out)
    assert keelson_ttl == Outcome(2, "", "Error: etcdserver: permission denied"), keelson_ttl
    both("lease", "revoke", "<id>", *ROOT, ok=True)


def test_compaction_membership_maintenance(pair: Pair) -> None:
    rev = int(
        pair.etcd.raw("get", "r", "-w", "json", *ROOT)[1].split('"revision":')[1].split(",")[0]
    )
    pair.same("compaction", str(rev - 2), *ALICE)  # etcd 3.4 checks only a token's validity
    pair.same("compaction", str(rev - 1))  # so even no credentials at all may compact
    pair.same("member", "list", *ALICE, sort_lines=True)
    pair.same("member", "add", "m9", "--peer-urls=http://127.0.0.1:1", *ALICE, ok=False)
    pair.same("endpoint", "status", "-w", "json", *ALICE)  # etcd 3.4: any valid token
    pair.same("endpoint", "hashkv", *ALICE, ok=False)
    pair.same("defrag", *ALICE, ok=False)
    pair.same("defrag", *BOB, ok=False)
    snap = pair.keelson.cluster.workdir.parent / "denied.db"
    pair.same("snapshot", "save", str(snap), *ALICE, ok=False)
    assert not snap.exists()
    pair.same("alarm", "list", *ALICE)
    pair.same("alarm", "disarm", *ALICE)  # no alarm raised: etcdctl only lists
    pair.same("endpoint", "status", "-w", "json", *ROOT)
    pair.same("defrag", *ROOT)


def test_auth_administration_by_non_root(pair: Pair) -> None:
    for args in (
        ("user", "add", "carol:pw"),
        ("user", "delete", "bob"),
        ("user", "list"),
        ("user", "get", "root"),
        ("user", "grant-role", "bob", "rw"),
        ("user", "revoke-role", "alice", "rw"),
        ("role", "add", "x"),
        ("role", "list"),
        ("role", "delete", "rw"),
        ("role", "get", "root"),
        ("role", "grant-permission", "rw", "read", "b"),
        ("role", "revoke-permission", "rw", "r"),
        ("auth", "disable"),
    ):
        pair.same(*args, *ALICE, ok=False)
    pair.same("user", "get", "alice", *ALICE)  # a user may look at itself
    pair.same("role", "get", "rw", *ALICE)  # and at the roles it has
    pair.same("user", "delete", "root", *ROOT, ok=False)  # invalid auth management
    pair.same("user", "revoke-role", "root", "root", *ROOT, ok=False)
    pair.same("role", "delete", "root", *ROOT, ok=False)
    pair.same("role", "revoke-permission", "rw", "nothing", *ROOT, ok=False)
    pair.same("user", "get", "nobody", *ROOT, ok=False)


def test_stale_token_after_password_change(pair: Pair) -> None:
    tokens = {kind: _token(side, "alice", "alicepw") for kind, side in pair.sides.items()}
    for kind, side in pair.sides.items():
        assert _grpc_call(side, "Range", pb.RangeRequest(key=b"r"), tokens[kind]) == ("OK", "")
    pair.same("user", "passwd", "alice", "--interactive=false", *ROOT, stdin=f"{SECOND_PASSWORD}\n")
    got = {
        kind: _grpc_call(side, "Range", pb.RangeRequest(key=b"r"), tokens[kind])
        for kind, side in pair.sides.items()
    }
    assert got["keelson"] == got["etcd"] == ("UNAUTHENTICATED", "etcdserver: invalid auth token")
    pair.same("get", "r", *ALICE, ok=False)  # the old password fails
    pair.same("get", "r", "--user", f"alice:{SECOND_PASSWORD}")
    # a role change keeps simple tokens valid, judged at the new revision
    tokens = {kind: _token(side, "alice", SECOND_PASSWORD) for kind, side in pair.sides.items()}
    pair.same("role", "revoke-permission", "rw", "r", *ROOT)
    got = {
        kind: _grpc_call(side, "Range", pb.RangeRequest(key=b"r"), tokens[kind])
        for kind, side in pair.sides.items()
    }
    assert got["keelson"] == got["etcd"] == ("PERMISSION_DENIED", "etcdserver: permission denied")


def test_no_clear_password_in_member_files(pair: Pair) -> None:
    """Passwords set through ``user add`` and ``change-password`` are nowhere on disk."""
    data_dir = pair.keelson.cluster.members[0].data_dir
    files = [p for p in Path(data_dir).rglob("*") if p.is_file()]
    assert any(p.suffix == ".wal" for p in files) and any(p.name.endswith(".mdb") for p in files)
    for p in files:
        data = p.read_bytes()
        for secret in ("rootpw", "bobpw", FIRST_PASSWORD, SECOND_PASSWORD):
            assert secret.encode() not in data, f"{secret!r} in {p}"


def test_disable(pair: Pair) -> None:
    pair.same("auth", "disable", *ALICE, ok=False)
    assert pair.same("auth", "disable", *ROOT).out == "Authentication Disabled\n"
    pair.same("get", "b")
    pair.same("user", "list")
    pair.same("user", "delete", "bob")
    pair.same("role", "delete", "rw")
    pair.same("user", "get", "alice", "-w", "json")


# -- three members --------------------------------------------------------------------------


def _jwt_flag(tmp: Path) -> str:
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
    return f"--auth-token=jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=10m"


@pytest.mark.parametrize("token_kind", ["simple", "jwt"])
def test_three_members(tmp_path: Path, token_kind: str) -> None:
    """Auth enabled through one member applies on all; a token from one member is used on
    another: a jwt anywhere, a simple token wherever its Authenticate entry was applied
    (every member applies it, as in etcd)."""
    flags = ["--bcrypt-cost=4"]
    if token_kind == "jwt":
        flags.append(_jwt_flag(tmp_path))
    p = Pair(3, tmp_path / "c", extra_args=tuple(flags)).start()
    try:
        p.same("user", "add", "root:rootpw", endpoint=0)
        p.same("user", "grant-role", "root", "root", endpoint=1)
        p.same("auth", "enable", endpoint=2)
        for i in range(3):
            p.same("get", "k", endpoint=i, ok=False)  # user name is empty
            p.same("put", "k", str(i), *ROOT, endpoint=i)
        tokens = {
            kind: _token(side, "root", "rootpw", endpoint=0) for kind, side in p.sides.items()
        }
        for i in (1, 2):
            got = {
                kind: _grpc_call(side, "Range", pb.RangeRequest(key=b"k"), tokens[kind], i)
                for kind, side in p.sides.items()
            }
            assert got["keelson"] == got["etcd"] == ("OK", ""), (i, got)
        bad = {kind: tok[:-3] + "xyz" for kind, tok in tokens.items()}
        got = {
            kind: _grpc_call(side, "Range", pb.RangeRequest(key=b"k"), bad[kind], 1)
            for kind, side in p.sides.items()
        }
        assert got["keelson"] == got["etcd"], got
        p.same("user", "add", "u:pw", *ROOT, endpoint=1)
        p.same("user", "list", *ROOT, endpoint=2)
        # lease calls a follower forwards to the leader were checked on the follower
        for side in p.sides.values():
            code, out, err = side.raw("lease", "grant", "600", *ROOT, endpoint=0)
            assert code == 0, err
            side.learn(int(out.split()[1], 16), "<lease>")
            code, _, err = side.raw("put", "lk", "v", "--lease", out.split()[1], *ROOT)
            assert code == 0, err
        for i in range(3):
            for args in (("timetolive", "--keys"), ("keep-alive", "--once")):
                got = {
                    kind: side.run(
                        "lease", args[0], side.hex_id("<lease>"), args[1], *ROOT, endpoint=i
                    )
                    for kind, side in p.sides.items()
                }
                # the remaining TTL differs by a second or so between the two clusters
                got = {
                    k: Outcome(o.code, _TTL.sub("TTL(*)", str(o.out)), o.err)
                    for k, o in got.items()
                }
                assert "lk" in str(got["etcd"].out) or args[0] != "timetolive", got
                assert got["keelson"] == got["etcd"], (i, args, got)
                assert got["etcd"].code == 0, got
            got = {
                kind: side.run(
                    "lease",
                    "timetolive",
                    side.hex_id("<lease>"),
                    "--keys",
                    "--user",
                    "u:pw",
                    endpoint=i,
                )
                for kind, side in p.sides.items()
            }
            # etcd 3.4.23 shows the keys to any user; keelson needs read on them (3.4.26+)
            assert got["keelson"].err == "Error: etcdserver: permission denied", got
    finally:
        p.stop()
