"""keelson.cli.tls: contexts built from etcd's TLS flags, every refusal's one-line message,
auto TLS files made once and reused; and keelson.testing.certs, the test PKI they run on.

Handshakes run in memory (two ``ssl.SSLObject`` over ``MemoryBIO`` pairs), so these tests
use no socket and no event loop; the cluster-level behaviour is in
tests/cluster/test_peer_tls.py.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from keelson.cli import tls
from keelson.cli.tls import TLSError, TLSInfo
from keelson.testing.certs import make_ca

REPO = Path(__file__).resolve().parent.parent.parent


class PKI:
    def __init__(self, base: Path) -> None:
        self.dir = base / "pki"
        self.ca = make_ca(self.dir, "ca")
        self.rogue_ca = make_ca(self.dir, "rogue-ca")
        self.server = self.ca.issue(self.dir, "server", cn="m0")
        self.client = self.ca.issue(self.dir, "client", cn="alice", server=False)
        self.rogue = self.rogue_ca.issue(self.dir, "rogue", cn="m0")


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path)


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, hostname: str | None = "127.0.0.1"
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a TLS handshake between the two contexts in memory, then one byte each way (TLS
    1.3 reports a refused client certificate only after the client's handshake ends).
    Raises the first side's ssl.SSLError."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, obj in (("c", cli), ("s", srv)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            c_in.write(s_out.read())
            s_in.write(c_out.read())
        if all(done.values()):
            break
    assert all(done.values()), "handshake did not finish"
    cli.write(b"x")
    s_in.write(c_out.read())
    assert srv.read(1) == b"x"
    srv.write(b"y")
    c_in.write(s_out.read())
    assert cli.read(1) == b"y"
    return srv, cli


# ------------------------------------------------------------------------------- certs


def test_issued_certificates_carry_names_and_usages(pki: PKI) -> None:
    cert = x509.load_pem_x509_certificate(Path(pki.server.cert_file).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "m0"
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {
        x509.ExtendedKeyUsageOID.SERVER_AUTH,
        x509.ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    client = x509.load_pem_x509_certificate(Path(pki.client.cert_file).read_bytes())
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        x509.ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert (
        cert.issuer == x509.load_pem_x509_certificate(Path(pki.ca.cert_file).read_bytes()).subject
    )
    assert stat.S_IMODE(os.stat(pki.server.key_file).st_mode) == 0o600


def test_a_client_only_certificate_cannot_serve(pki: PKI) -> None:
    server = tls.server_context(TLSInfo(pki.client.cert_file, pki.client.key_file))
    client = tls.client_context(TLSInfo(trusted_ca_file=pki.ca.cert_file))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate purpose"):
        handshake(server, client)


# ---------------------------------------------------------------------- context building


def test_server_context_settings(pki: PKI) -> None:
    plain = tls.server_context(TLSInfo(pki.server.cert_file, pki.server.key_file))
    assert plain.minimum_version == ssl.TLSVersion.TLSv1_2
    assert plain.verify_mode == ssl.CERT_NONE
    auth = TLSInfo(pki.server.cert_file, pki.server.key_file, pki.ca.cert_file, True)
    assert tls.server_context(auth).verify_mode == ssl.CERT_REQUIRED
    # etcd 3.4: a trusted CA file alone already requires and verifies client certificates
    ca_only = TLSInfo(pki.server.cert_file, pki.server.key_file, pki.ca.cert_file)
    assert tls.server_context(ca_only).verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(TLSError):
        tls.server_context(TLSInfo())


def test_client_context_settings(pki: PKI) -> None:
    ctx = tls.client_context(TLSInfo(pki.server.cert_file, pki.server.key_file, pki.ca.cert_file))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    auto = tls.client_context(TLSInfo(pki.server.cert_file, pki.server.key_file, self_signed=True))
    assert auto.verify_mode == ssl.CERT_NONE and not auto.check_hostname


def test_mutual_tls_handshake_and_alpn(pki: PKI) -> None:
    server = tls.server_context(
        TLSInfo(pki.server.cert_file, pki.server.key_file, pki.ca.cert_file, True), alpn=("h2",)
    )
    client = tls.client_context(
        TLSInfo(pki.client.cert_file, pki.client.key_file, pki.ca.cert_file)
    )
    client.set_alpn_protocols(["h2"])
    srv, cli = handshake(server, client)
    assert srv.selected_alpn_protocol() == "h2"
    peer = srv.getpeercert()
    assert peer is not None and (("commonName", "alice"),) in peer["subject"]
    assert cli.version() in ("TLSv1.2", "TLSv1.3")


def test_rogue_client_certificate_is_refused(pki: PKI) -> None:
    server = tls.server_context(
        TLSInfo(pki.server.cert_file, pki.server.key_file, pki.ca.cert_file, True)
    )
    rogue = tls.client_context(TLSInfo(pki.rogue.cert_file, pki.rogue.key_file, pki.ca.cert_file))
    with pytest.raises(ssl.SSLError, match="certificate verify failed"):
        handshake(server, rogue)


def test_missing_client_certificate_is_refused(pki: PKI) -> None:
    server = tls.server_context(
        TLSInfo(pki.server.cert_file, pki.server.key_file, pki.ca.cert_file, True)
    )
    anonymous = tls.client_context(TLSInfo(trusted_ca_file=pki.ca.cert_file))
    with pytest.raises(
        ssl.SSLError, match="PEER_DID_NOT_RETURN_A_CERTIFICATE|certificate required"
    ):
        handshake(server, anonymous)


def test_dialer_refuses_a_rogue_server_and_a_wrong_name(pki: PKI) -> None:
    client = tls.client_context(
        TLSInfo(pki.client.cert_file, pki.client.key_file, pki.ca.cert_file)
    )
    rogue_server = tls.server_context(TLSInfo(pki.rogue.cert_file, pki.rogue.key_file))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        handshake(rogue_server, client)
    elsewhere = pki.ca.issue(pki.dir, "elsewhere", cn="m9", hosts=("10.9.9.9", "m9.example"))
    server = tls.server_context(TLSInfo(elsewhere.cert_file, elsewhere.key_file))
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(server, client, hostname="127.0.0.1")
    handshake(server, client, hostname="m9.example")  # the right name passes


def test_expired_certificate_is_refused(pki: PKI) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    old = pki.ca.issue(pki.dir, "old", cn="m0", not_after=past)
    server = tls.server_context(TLSInfo(old.cert_file, old.key_file))
    client = tls.client_context(TLSInfo(trusted_ca_file=pki.ca.cert_file))
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        handshake(server, client)


# ---------------------------------------------------------------------------- refusals


def refusal(info: TLSInfo, side: tls.Side = "peer") -> str:
    with pytest.raises(TLSError) as err:
        tls.check(info, side)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_refusals_name_the_flag_in_one_line(pki: PKI, tmp_path: Path) -> None:
    s, c = pki.server, pki.client
    missing = str(tmp_path / "nope.crt")
    assert refusal(TLSInfo(missing, s.key_file), "client") == (
        f"--cert-file: open {missing}: no such file or directory"
    )
    assert refusal(TLSInfo(s.cert_file, missing)) == (
        f"--peer-key-file: open {missing}: no such file or directory"
    )
    assert refusal(TLSInfo(s.cert_file, s.key_file, str(tmp_path))) == (
        f"--peer-trusted-ca-file: open {tmp_path}: is a directory"
    )
    assert refusal(TLSInfo(s.cert_file, c.key_file)) == (
        "--peer-cert-file/--peer-key-file: tls: private key does not match public key"
    )
    assert refusal(TLSInfo(s.cert_file, "")) == (
        "--peer-cert-file/--peer-key-file: KeyFile and CertFile must both be present"
        f"[key: , cert: {s.cert_file}]"
    )
    assert refusal(TLSInfo("", s.key_file), "client") == (
        "--cert-file/--key-file: KeyFile and CertFile must both be present"
        f"[key: {s.key_file}, cert: ]"
    )
    assert refusal(TLSInfo(s.key_file, s.key_file)) == (
        "--peer-cert-file: tls: failed to find any PEM data in certificate input"
    )
    assert refusal(TLSInfo(s.cert_file, s.cert_file)) == (
        "--peer-key-file: tls: failed to find any PEM data in key input"
    )
    assert refusal(TLSInfo(s.cert_file, s.key_file, client_cert_auth=True)) == (
        "--peer-client-cert-auth requires --peer-trusted-ca-file "
        "(the CA that signs accepted certificates)"
    )
    assert refusal(TLSInfo(s.cert_file, s.key_file, s.key_file, True), "client") == (
        f"--trusted-ca-file: no PEM certificate found in {s.key_file}"
    )
    assert refusal(TLSInfo(s.cert_file, s.key_file, allowed_cn="m1")) == (
        "--peer-cert-allowed-cn requires --peer-client-cert-auth and --peer-trusted-ca-file"
    )


def test_unreadable_file_is_refused(pki: PKI) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    os.chmod(pki.server.key_file, 0)
    assert refusal(TLSInfo(pki.server.cert_file, pki.server.key_file)) == (
        f"--peer-key-file: open {pki.server.key_file}: permission denied"
    )


def test_good_configurations_pass(pki: PKI) -> None:
    s = pki.server
    tls.check(TLSInfo(), "peer")
    tls.check(TLSInfo(s.cert_file, s.key_file), "peer")
    tls.check(TLSInfo(s.cert_file, s.key_file, pki.ca.cert_file, True, allowed_cn="m1"), "peer")
    tls.check(TLSInfo(auto_tls=True), "client")


def test_allowed_cn(pki: PKI) -> None:
    info = TLSInfo(
        pki.server.cert_file, pki.server.key_file, pki.ca.cert_file, True, allowed_cn="m1"
    )
    assert tls.allowed_cn_error(info, {"subject": ((("commonName", "m1"),),)}) is None
    wrong = tls.allowed_cn_error(info, {"subject": ((("commonName", "m2"),),)})
    assert wrong == "client certificate authentication failed (CN m2, allowed m1)"
    assert tls.allowed_cn_error(info, None) is not None
    assert tls.allowed_cn_error(TLSInfo(), {"subject": ()}) is None


# ---------------------------------------------------------------------------- auto TLS


def test_auto_tls_makes_files_once_and_reuses_them(tmp_path: Path) -> None:
    data_dir = tmp_path / "m0.keelson"
    hosts = tls.hosts_of(["https://127.0.0.1:2380", "https://localhost:2381"])
    assert hosts == ["127.0.0.1", "localhost"]
    info = tls.auto_tls(TLSInfo(auto_tls=True), data_dir, "peer", hosts)
    cert, key = Path(info.cert_file), Path(info.key_file)
    assert cert == data_dir / "fixtures" / "peer" / "cert.pem"
    assert key == data_dir / "fixtures" / "peer" / "key.pem"
    assert info.self_signed and not info.empty()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    tls.check(info, "peer")
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    before = (cert.read_bytes(), key.read_bytes())
    again = tls.auto_tls(TLSInfo(auto_tls=True), data_dir, "peer", ["10.0.0.1"])
    assert again == info
    assert (cert.read_bytes(), key.read_bytes()) == before  # reused, not regenerated
    key.unlink()  # half a pair is never reused
    tls.auto_tls(TLSInfo(auto_tls=True), data_dir, "peer", hosts)
    assert cert.read_bytes() != before[0] and key.exists()
    client = tls.auto_tls(TLSInfo(auto_tls=True), data_dir, "client", hosts)
    assert Path(client.cert_file).parent == data_dir / "fixtures" / "client"


def test_auto_tls_members_talk_without_verifying(tmp_path: Path) -> None:
    a = tls.auto_tls(TLSInfo(auto_tls=True), tmp_path / "a", "peer", ["127.0.0.1"])
    b = tls.auto_tls(TLSInfo(auto_tls=True), tmp_path / "b", "peer", ["127.0.0.1"])
    handshake(tls.server_context(a), tls.client_context(b))
    handshake(tls.server_context(b), tls.client_context(a))


def test_auto_tls_ignored_when_certs_given(pki: PKI, tmp_path: Path) -> None:
    given = TLSInfo(pki.server.cert_file, pki.server.key_file, auto_tls=True)
    assert tls.auto_tls(given, tmp_path, "peer", ["127.0.0.1"]) == given
    assert tls.auto_tls_ignored(given, "peer") == "ignoring peer auto TLS since certs given"
    assert not (tmp_path / "fixtures").exists()
    plain = TLSInfo()
    assert tls.auto_tls(plain, tmp_path, "peer", ["127.0.0.1"]) is plain
    assert tls.auto_tls_ignored(plain, "peer") is None


# ----------------------------------------------------------------- keelson serve refusals


def serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env = {k: v for k, v in env.items() if not k.startswith("ETCD_")}
    return subprocess.run(
        [sys.executable, "-m", "keelson.cli.main", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


def test_serve_refuses_peer_misconfiguration_with_exit_status_2(pki: PKI, tmp_path: Path) -> None:
    url = "https://127.0.0.1:23801"
    base = [
        "--data-dir",
        str(tmp_path / "d"),
        "--listen-peer-urls",
        url,
        "--initial-advertise-peer-urls",
        url,
        "--initial-cluster",
        f"default={url}",
    ]
    missing = str(tmp_path / "missing.crt")
    cases = {
        f"--peer-cert-file: open {missing}: no such file or directory": [
            "--peer-cert-file",
            missing,
            "--peer-key-file",
            pki.server.key_file,
        ],
        "--peer-cert-file/--peer-key-file: tls: private key does not match public key": [
            "--peer-cert-file",
            pki.server.cert_file,
            "--peer-key-file",
            pki.client.key_file,
        ],
        "--peer-client-cert-auth requires --peer-trusted-ca-file "
        "(the CA that signs accepted certificates)": [
            "--peer-cert-file",
            pki.server.cert_file,
            "--peer-key-file",
            pki.server.key_file,
            "--peer-client-cert-auth",
        ],
    }
    for message, flags in cases.items():
        res = serve(*base, *flags, cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert res.stderr == f"keelson: {message}\n"
    res = serve(*base, cwd=tmp_path)  # https peer URL, nothing to serve it with
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "KeyFile and CertFile are not presented" in res.stderr
    assert not (tmp_path / "d").exists()  # nothing written for a refused configuration


# ------------------------------------------------------------ peer certificate checks


def san_error(cert: dict[str, object] | None, host: str) -> str | None:
    return asyncio.run(tls.peer_san_error(cert, host, timeout=5.0))


def test_peer_san_check_as_etcd(pki: PKI) -> None:
    """etcd 3.4's checkCertSAN: a dialing peer's certificate must name its address."""
    ip_only = {"subjectAltName": (("IP Address", "127.0.0.1"),)}
    assert san_error(ip_only, "127.0.0.1") is None
    assert san_error(ip_only, "127.0.0.2") == (
        "x509: certificate is valid for 127.0.0.1, not 127.0.0.2"
    )
    assert san_error({"subject": ((("commonName", "m1"),),)}, "10.0.0.1") is None  # no SANs
    assert san_error(None, "10.0.0.1") is None
    # a DNS SAN resolving to the address (forward lookup of localhost) is enough
    assert san_error({"subjectAltName": (("DNS", "localhost"),)}, "127.0.0.1") is None
    nowhere = {"subjectAltName": (("IP Address", "10.9.9.9"), ("DNS", "m9.invalid"))}
    assert san_error(nowhere, "127.0.0.1") == (
        "tls: '127.0.0.1' does not match any of DNSNames ['m9.invalid']"
    )


def test_peer_cert_check_only_when_client_certificates_are_verified(pki: PKI) -> None:
    s = pki.server
    assert tls.peer_cert_check(TLSInfo(s.cert_file, s.key_file)) is None
    check = tls.peer_cert_check(
        TLSInfo(s.cert_file, s.key_file, pki.ca.cert_file, True, allowed_cn="m1")
    )
    assert check is not None
    good = {"subject": ((("commonName", "m1"),),), "subjectAltName": (("IP Address", "127.0.0.1"),)}
    assert asyncio.run(check(good, "127.0.0.1")) is None
    assert asyncio.run(check(good, "127.0.0.3")) == (
        "x509: certificate is valid for 127.0.0.1, not 127.0.0.3"
    )
    other_cn = {**good, "subject": ((("commonName", "m2"),),)}
    assert asyncio.run(check(other_cn, "127.0.0.1")) == (
        "client certificate authentication failed (CN m2, allowed m1)"
    )
