"""Client TLS with the real etcdctl 3.4 (``--cacert --cert --key``, ``https://`` endpoints)
against keelson and a real etcd 3.4 started with the same flags, on both of keelson's gRPC
front ends (grpcio and ``--grpc-server=native``), compared outcome by outcome.

What is checked, each against etcd:

* put / get / watch over TLS with a client certificate signed by the trusted CA;
* a client certificate from a *rogue* CA, and no client certificate at all, are refused at
  the TLS handshake (``--client-cert-auth``);
* with auth enabled, a client that sends no token is the user named by its certificate's
  Common Name (etcd 3.4's ``AuthInfoFromTLS``): the CN user's permissions apply, a CN that
  names no user is denied, a token (``--user``) wins over the certificate; without
  ``--client-cert-auth`` (client certificates still required by ``--trusted-ca-file``) the
  CN is not an identity;
* ``--auto-tls``: a self-signed certificate in ``<data-dir>/fixtures/client``, reached with
  ``etcdctl --insecure-skip-tls-verify``.

Certificates are made by the test (``keelson.testing.certs``). Outcomes are etcdctl's exit
code, stdout and last stderr line, with the members' ports replaced by ``<port>`` and
member ids by ``<id>``.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keelson.testing.certs import CA, CertPair, make_ca
from keelson.testing.etcd import etcdctl
from keelson.testing.local_cluster import LocalCluster
from tests.clients.conftest import run_client_script

pytestmark = pytest.mark.skipif(
    (shutil.which("etcd") is None or shutil.which("etcdctl") is None) and not os.environ.get("CI"),
    reason="etcd/etcdctl not installed (make test installs them)",
)

FRONT_ENDS = ("grpcio", "native")
KINDS = ("etcd", "keelson")
COMMON = ("--dial-timeout=4s", "--command-timeout=10s")
FAST_FAIL = ("--dial-timeout=2s", "--command-timeout=3s")  # after COMMON: these win
_PORT = re.compile(r"127\.0\.0\.1:[0-9]{2,5}")
_ID = re.compile(r"\b[0-9a-f]{14,16}\b")  # member ids: random per cluster


@dataclass(frozen=True)
class PKI:
    ca: CA
    server: CertPair
    root: CertPair  # CN root
    alice: CertPair  # CN alice
    bob: CertPair  # CN bob
    nobody: CertPair  # CN nobody: no such user
    rogue: CertPair  # CN root, signed by a CA nobody trusts

    def server_flags(self, *, client_cert_auth: bool = True) -> tuple[str, ...]:
        flags = (
            "--cert-file", self.server.cert_file, "--key-file", self.server.key_file,
            "--trusted-ca-file", self.ca.cert_file,
        )
        return (*flags, "--client-cert-auth") if client_cert_auth else flags

    def as_(self, who: CertPair | None) -> tuple[str, ...]:
        """etcdctl's TLS flags for a client presenting ``who`` (None: no certificate)."""
        if who is None:
            return ("--cacert", self.ca.cert_file)
        return ("--cacert", self.ca.cert_file, "--cert", who.cert_file, "--key", who.key_file)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    rogue_ca = make_ca(d, "rogue-ca")
    return PKI(
        ca=ca,
        server=ca.issue(d, "server", cn="server", client=False),
        root=ca.issue(d, "root", cn="root", server=False),
        alice=ca.issue(d, "alice", cn="alice", server=False),
        bob=ca.issue(d, "bob", cn="bob", server=False),
        nobody=ca.issue(d, "nobody", cn="nobody", server=False),
        rogue=rogue_ca.issue(d, "rogue", cn="root", server=False),
    )


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


class TLSPair:
    """A 1-member etcd and a 1-member keelson with the same TLS flags and https client URLs."""

    def __init__(
        self, workdir: Path, front_end: str, flags: tuple[str, ...], ctl: tuple[str, ...]
    ) -> None:
        self.clusters: dict[str, LocalCluster] = {}
        self.ctl = ctl
        try:
            for kind in KINDS:
                extra = flags if kind == "etcd" else (*flags, "--grpc-server", front_end)
                self.clusters[kind] = self._start(kind, workdir, extra)
        except BaseException:
            self.stop()
            raise

    def _start(self, kind: str, workdir: Path, extra: tuple[str, ...]) -> LocalCluster:
        for attempt in range(3):  # a port from the OS may be taken before the member binds it
            cluster = LocalCluster(
                kind, 1, workdir / f"{kind}{attempt}", extra_args=extra,
                client_scheme="https", etcdctl_args=(*self.ctl, *COMMON),
            )
            try:
                return cluster.start(timeout=90)
            except (RuntimeError, TimeoutError):
                cluster.stop()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        for cluster in self.clusters.values():
            cluster.stop()

    def run(
        self, kind: str, tls: tuple[str, ...], *args: str, stdin: str | None = None
    ) -> Outcome:
        r = etcdctl(self.clusters[kind].endpoints, *tls, *COMMON, *args, stdin=stdin, timeout=40)
        lines = r.stderr.strip().splitlines()
        err = _PORT.sub("<port>", lines[-1]) if lines and r.returncode else ""
        return Outcome(r.returncode, _ID.sub("<id>", _PORT.sub("<port>", r.stdout)), err)

    def same(
        self, tls: tuple[str, ...], *args: str, ok: bool | None = True, stdin: str | None = None
    ) -> Outcome:
        """Run on both; assert equal outcomes that succeeded (or failed) as ``ok`` says
        (None: either)."""
        got = {kind: self.run(kind, tls, *args, stdin=stdin) for kind in KINDS}
        assert got["keelson"] == got["etcd"], (args, got)
        if ok is not None:
            assert (got["etcd"].code == 0) == ok, (args, got["etcd"])
        return got["etcd"]

    def data_dir(self, kind: str) -> Path:
        return self.clusters[kind].members[0].data_dir


@pytest.fixture(scope="module", params=FRONT_ENDS)
def pair(
    request: pytest.FixtureRequest, pki: PKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TLSPair]:
    """etcd and keelson with client TLS and --client-cert-auth; the tests of this module run
    in file order on it (the auth test enables auth last)."""
    front_end = str(request.param)
    p = TLSPair(
        tmp_path_factory.mktemp(f"tls-{front_end}"), front_end, pki.server_flags(),
        pki.as_(pki.root),
    )
    try:
        yield p
    finally:
        p.stop()


def _watch_then_put(p: TLSPair, kind: str, tls: tuple[str, ...]) -> str:
    """Start ``etcdctl watch w`` over TLS, put w twice, return what the watcher printed."""
    exe = shutil.which("etcdctl")
    assert exe is not None
    proc = subprocess.Popen(
        [exe, "--endpoints", p.clusters[kind].endpoints, *tls, *COMMON, "watch", "w"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "ETCDCTL_API": "3"},
    )
    try:
        assert proc.stdout is not None
        out = b""
        deadline = time.monotonic() + 30
        put_at = time.monotonic() + 1.0  # let the watcher connect first
        sent = False
        while time.monotonic() < deadline and out.count(b"PUT") < 2:
            if not sent and time.monotonic() >= put_at:
                for value in ("v1", "v2"):
                    assert p.run(kind, tls, "put", "w", value).code == 0
                sent = True
            ready, _, _ = select.select([proc.stdout.fileno()], [], [], 0.2)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
        return out.decode()
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)


def test_put_get_watch_over_tls(pair: TLSPair, pki: PKI) -> None:
    root = pki.as_(pki.root)
    assert pair.same(root, "put", "foo", "bar").out == "OK\n"
    assert pair.same(root, "get", "foo").out == "foo\nbar\n"
    assert pair.same(root, "get", "f", "--prefix", "--print-value-only").out == "bar\n"
    watched = {kind: _watch_then_put(pair, kind, root) for kind in KINDS}
    assert watched["keelson"] == watched["etcd"] == "PUT\nw\nv1\nPUT\nw\nv2\n", watched
    pair.same(root, "endpoint", "health")


def test_rogue_and_missing_client_certificates_are_refused(pair: TLSPair, pki: PKI) -> None:
    rogue = pair.same(pki.as_(pki.rogue), *FAST_FAIL, "get", "foo", ok=False)
    assert "context deadline exceeded" in rogue.err
    missing = pair.same(pki.as_(None), *FAST_FAIL, "get", "foo", ok=False)
    assert "context deadline exceeded" in missing.err
    # plain text to a TLS port is refused too
    plain = pair.same((), *FAST_FAIL, "get", "foo", ok=False)
    assert plain.code != 0


def test_certificate_common_name_is_the_user(pair: TLSPair, pki: PKI) -> None:
    root, alice, bob, nobody = (pki.as_(c) for c in (pki.root, pki.alice, pki.bob, pki.nobody))
    pair.same(root, "user", "add", "root:rootpw")
    pair.same(root, "user", "grant-role", "root", "root")
    pair.same(root, "role", "add", "rw")
    pair.same(root, "role", "grant-permission", "rw", "readwrite", "a/", "--prefix=true")
    pair.same(root, "user", "add", "alice:alicepw")
    pair.same(root, "user", "grant-role", "alice", "rw")
    pair.same(root, "user", "add", "bob:bobpw")
    pair.same(root, "put", "a/1", "one")
    pair.same(root, "put", "b", "bee")
    assert pair.same(root, "auth", "enable").out == "Authentication Enabled\n"

    # alice by her certificate: her role's prefix only
    assert pair.same(alice, "get", "a/1").out == "a/1\none\n"
    pair.same(alice, "put", "a/2", "two")
    pair.same(alice, "del", "a/2")
    denied = pair.same(alice, "get", "b", ok=False)
    assert "permission denied" in denied.err
    pair.same(alice, "put", "b", "x", ok=False)
    pair.same(alice, "user", "list", ok=False)
    # bob has no role; nobody is no user at all: both denied on use
    assert "permission denied" in pair.same(bob, "get", "a/1", ok=False).err
    assert "permission denied" in pair.same(nobody, "get", "a/1", ok=False).err
    pair.same(nobody, "put", "a/1", "x", ok=False)
    # root by its certificate: everything, administration included
    pair.same(root, "get", "b")
    pair.same(root, "user", "list")
    pair.same(root, "role", "get", "rw")
    # a token wins over the certificate, both ways
    pair.same((*alice, "--user", "bob:bobpw"), "get", "a/1", ok=False)
    pair.same((*alice, "--user", "root:rootpw"), "get", "b")
    pair.same((*root, "--user", "alice:wrong"), "get", "a/1", ok=False)
    # watch creation is checked against the CN user too
    pair.same(alice, "watch", "b", "--rev=1", ok=False)
    # other kinds of request, as the CN user
    txn_ok = "mod(\"a/1\") > \"0\"\n\nput a/3 three\n\n\n"
    pair.same(alice, "txn", "--interactive=false", stdin=txn_ok)
    txn_denied = "mod(\"a/1\") > \"0\"\n\nput b x\n\n\n"
    pair.same(alice, "txn", "--interactive=false", stdin=txn_denied, ok=False)
    pair.same(alice, "del", "a/", "--prefix")
    pair.same(alice, "del", "b", ok=False)
    pair.same(alice, "member", "list", ok=None)
    pair.same(alice, "defrag", ok=False)
    pair.same(root, "defrag")
    pair.same(alice, "role", "get", "rw")  # her own role and user: allowed, as in etcd
    pair.same(alice, "user", "get", "alice")
    pair.same(alice, "user", "get", "bob", ok=False)
    pair.same(root, "auth", "disable")


def test_common_name_is_no_identity_without_client_cert_auth(
    pki: PKI, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # --trusted-ca-file alone still requires a client certificate (etcd 3.4), but the CN
    # is not an identity: with auth enabled a request without a token has no user.
    for front_end in FRONT_ENDS:
        p = TLSPair(
            tmp_path_factory.mktemp(f"tls-nocca-{front_end}"), front_end,
            pki.server_flags(client_cert_auth=False), pki.as_(pki.root),
        )
        try:
            root = pki.as_(pki.root)
            pair_missing = p.same(pki.as_(None), *FAST_FAIL, "get", "foo", ok=False)
            assert "context deadline exceeded" in pair_missing.err
            p.same(root, "user", "add", "root:rootpw")
            p.same(root, "user", "grant-role", "root", "root")
            p.same(root, "auth", "enable")
            empty = p.same(root, "get", "foo", ok=False)
            assert "user name is empty" in empty.err
            p.same((*root, "--user", "root:rootpw"), "get", "foo")
        finally:
            p.stop()


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_auto_tls(front_end: str, tmp_path: Path) -> None:
    insecure = ("--insecure-skip-tls-verify", "--insecure-transport=false")
    p = TLSPair(tmp_path, front_end, ("--auto-tls",), insecure)
    try:
        assert p.same(insecure, "put", "k", "v").out == "OK\n"
        assert p.same(insecure, "get", "k").out == "k\nv\n"
        # without skipping verification, the self-signed certificate is refused by etcdctl
        p.same(("--insecure-transport=false",), *FAST_FAIL, "get", "k", ok=False)
        for kind in KINDS:
            fixtures = p.data_dir(kind) / "fixtures" / "client"
            assert sorted(f.name for f in fixtures.iterdir()) == ["cert.pem", "key.pem"]
    finally:
        p.stop()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_python_etcd3_client_over_tls(
    front_end: str, pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = LocalCluster(
        "keelson", 1, tmp_path, extra_args=(*pki.server_flags(), "--grpc-server", front_end),
        client_scheme="https", etcdctl_args=(*pki.as_(pki.root), *COMMON),
    )
    try:
        cluster.start(timeout=90)
        monkeypatch.setenv("ETCD3_CA_CERT", pki.ca.cert_file)
        monkeypatch.setenv("ETCD3_CERT_CERT", pki.root.cert_file)
        monkeypatch.setenv("ETCD3_CERT_KEY", pki.root.key_file)
        addr = f"127.0.0.1:{cluster.members[0].client_port}"
        for scenario in ("kv", "watch"):
            run_client_script("etcd3_script.py", addr, scenario, pure_python_protobuf=True)
        monkeypatch.setenv("ETCD3_CERT_CERT", pki.rogue.cert_file)
        monkeypatch.setenv("ETCD3_CERT_KEY", pki.rogue.key_file)
        with pytest.raises(pytest.fail.Exception) as refused:
            run_client_script("etcd3_script.py", addr, "kv", pure_python_protobuf=True,
                              timeout=60)
        assert "ConnectionFailedError" in str(refused.value)  # the handshake, not a check
    finally:
        cluster.stop()
