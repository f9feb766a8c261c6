"""etcd's TLS flags turned into :class:`ssl.SSLContext` objects: the one place that does so.

Theory of operation: a :class:`TLSInfo` holds one side's flags (the client side:
``--cert-file --key-file --trusted-ca-file --client-cert-auth --auto-tls``; the peer side:
the same with ``--peer-``, plus etcd's ``--peer-cert-allowed-cn``). At start the member

1. resolves ``--auto-tls`` / ``--peer-auto-tls`` with :func:`auto_tls` (a self-signed pair
   in ``<data-dir>/fixtures/client|peer``, made once and reused, as etcd 3.4's ``SelfCert``);
2. refuses a misconfigured side with :func:`check`: a :class:`TLSError` whose message is
   one line naming the flag, printed as ``keelson: <message>`` with exit status 2 like
   every configuration error;
3. builds contexts with :func:`server_context` (for listeners) and :func:`client_context`
   (for member-to-member dials).

Behaviour, as etcd 3.4's ``pkg/transport`` (compared with ``listener.go``, ``embed/etcd.go``,
``embed/config.go`` of release-3.4; our own code):

* TLS 1.2 is the minimum version on both ends.
* A server requires and verifies a client certificate when ``--client-cert-auth`` is given
  **or** when a trusted CA file is given (etcd 3.4's ``ServerConfig`` does exactly this:
  ``TrustedCAFile != "" || ClientCertAuth`` means ``RequireAndVerifyClientCert``). The chain
  must lead to the trusted CA; with ``--peer-cert-allowed-cn`` the dialing member's
  certificate subject CN must also equal it (checked by the peer transport right after the
  handshake with :func:`allowed_cn_error`: the stdlib has no verification callback). Unlike
  etcd, the dialing side does not check the CN of the member it dials (its chain and
  host name are verified).
* A dialing member presents its own certificate (when it has one) and verifies the server's
  certificate against the trusted CA file (the system roots when none is given) and its
  host name/IP against the URL, as Go's ``tls.Config`` does with ``ServerName`` from the URL.
* The peer listener, when it verifies client certificates, also checks that a dialing
  member's certificate names the address it dials from (an IP SAN, or a DNS SAN resolving
  to it), as etcd 3.4's peer listener does (``checkCertSAN``): :func:`peer_cert_check`.
* Auto TLS: each member's certificate is self-signed, so nobody can verify anybody;
  etcd sets ``InsecureSkipVerify`` for ``--peer-auto-tls`` and the dialing side here does
  the same (``CERT_NONE``, no host name check). Auto TLS gives encryption against passive
  eavesdroppers, not authentication. ``--peer-auto-tls`` together with certificate files is
  ignored with a warning ("ignoring peer auto TLS since certs given"), as etcd.

Refusals (etcd's wording where it has one, after the flag names):

* a file that cannot be read: ``--cert-file: open /x: no such file or directory``;
* a certificate or key that is not PEM, or a key not matching the certificate:
  ``--peer-cert-file/--peer-key-file: tls: private key does not match public key``;
* one of cert/key without the other: ``... KeyFile and CertFile must both be present[...]``;
* a trusted CA file holding no certificate;
* ``--client-cert-auth`` without ``--trusted-ca-file`` — *keelson refuses this*, where etcd
  3.4 would verify client certificates against the machine's system roots (so any
  certificate from a public CA would be accepted as a member or a user): a surprising and
  unsafe reading of the flags.

URLs are checked by :mod:`keelson.cli.config` (``_validate_tls_urls``), which knows them:
an ``https://`` listen URL for a side with neither certificates nor auto TLS is refused in
etcd's words (``TLS key/cert (--cert-file, --key-file) must be provided for client url
https://... with HTTPS scheme``; for peers ``cannot listen on TLS for <addr>: KeyFile and
CertFile are not presented``), and TLS flags for a side with only ``http://`` listen URLs
are refused too, as the issue asks: etcd 3.4 only warns ("scheme is HTTP while key and cert
files are present; ignoring key and cert files") and serves plain text, which an operator
who gave certificates almost certainly did not mean. Dials follow the *remote* URL's
scheme: a member dials ``https://`` peers with :func:`client_context`.

Contexts load the files once, at start; etcd re-reads them per handshake. Replacing
certificates needs a restart here.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

__all__ = [
    "PeerCertCheck",
    "Side",
    "TLSError",
    "TLSInfo",
    "allowed_cn_error",
    "auto_tls",
    "auto_tls_ignored",
    "check",
    "client_context",
    "hosts_of",
    "peer_cert_check",
    "peer_san_error",
    "server_context",
]

Side = Literal["client", "peer"]


class TLSError(Exception):
    """A TLS misconfiguration; the message is one line naming the flag(s)."""


@dataclass(frozen=True)
class TLSInfo:
    """One side's TLS settings (client or peer), as given on the command line.

    ``self_signed`` is set by :func:`auto_tls` only: the pair was generated, nobody can
    verify it, and dials from this side skip verification (etcd's ``InsecureSkipVerify``).
    """

    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    auto_tls: bool = False
    allowed_cn: str = ""
    self_signed: bool = False

    def empty(self) -> bool:
        """No certificate and no key given (etcd's ``TLSInfo.Empty``): auto TLS aside, this
        side speaks plain TCP."""
        return self.cert_file == "" and self.key_file == ""

    def enabled(self) -> bool:
        """Certificates given or auto TLS asked for: this side can speak TLS."""
        return not self.empty() or self.auto_tls


def _flag(side: Side, name: str) -> str:
    return f"--peer-{name}" if side == "peer" else f"--{name}"


def _os_error(exc: OSError, path: str) -> str:
    """Go's wording of a failed open: ``open <path>: no such file or directory``."""
    reason = exc.strerror or str(exc)
    return f"open {path}: {reason[:1].lower()}{reason[1:]}"


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TLSError(f"{flag}: {_os_error(exc, path)}") from None


def check(info: TLSInfo, side: Side) -> None:
    """Refuse a misconfigured side with a one-line :class:`TLSError`. Reads every file named
    and loads cert + key together (so a key that does not match is caught at start, not at
    the first handshake). Call after :func:`auto_tls`, so generated files are checked too."""
    cert_flag, key_flag = _flag(side, "cert-file"), _flag(side, "key-file")
    ca_flag, auth_flag = _flag(side, "trusted-ca-file"), _flag(side, "client-cert-auth")
    if bool(info.cert_file) != bool(info.key_file):
        raise TLSError(
            f"{cert_flag}/{key_flag}: KeyFile and CertFile must both be present"
            f"[key: {info.key_file}, cert: {info.cert_file}]"
        )
    if info.client_cert_auth and not info.trusted_ca_file:
        raise TLSError(f"{auth_flag} requires {ca_flag} (the CA that signs accepted certificates)")
    if info.allowed_cn and side == "peer" and not (info.trusted_ca_file or info.client_cert_auth):
        raise TLSError(
            "--peer-cert-allowed-cn requires --peer-client-cert-auth and --peer-trusted-ca-file"
        )
    if info.trusted_ca_file:
        data = _read(info.trusted_ca_file, ca_flag)
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise TLSError(f"{ca_flag}: no PEM certificate found in {info.trusted_ca_file}")
        try:
            ssl.create_default_context(cadata=data.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise TLSError(f"{ca_flag}: {info.trusted_ca_file}: {_ssl_reason(exc)}") from None
    if info.empty():
        return
    cert = _read(info.cert_file, cert_flag)
    key = _read(info.key_file, key_flag)
    if b"-----BEGIN" not in cert or b"CERTIFICATE-----" not in cert:
        raise TLSError(f"{cert_flag}: tls: failed to find any PEM data in certificate input")
    if b"-----BEGIN" not in key or b"PRIVATE KEY-----" not in key:
        raise TLSError(f"{key_flag}: tls: failed to find any PEM data in key input")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(info.cert_file, info.key_file)
    except ssl.SSLError as exc:
        reason = _ssl_reason(exc)
        if "KEY_VALUES_MISMATCH" in reason.upper() or "values mismatch" in reason:
            reason = "tls: private key does not match public key"
        raise TLSError(f"{cert_flag}/{key_flag}: {reason}") from None
    except OSError as exc:  # raced with a removal
        raise TLSError(f"{cert_flag}/{key_flag}: {exc}") from None


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.library or 'ssl'}: {exc.reason}".lower().replace("_", " ")
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def server_context(info: TLSInfo, *, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """A context for a listener: our certificate; TLS >= 1.2; client certificates required
    and verified against the trusted CA when ``client_cert_auth`` or a trusted CA is given
    (etcd 3.4). ``alpn`` lists protocols to offer (``("h2",)`` for gRPC). Raises
    :class:`TLSError` on a bad configuration (run :func:`check` first for etcd's wording)."""
    if info.empty():
        raise TLSError("a TLS listener needs a certificate and a key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(info.cert_file, info.key_file)
        if info.trusted_ca_file:
            ctx.load_verify_locations(cafile=info.trusted_ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise TLSError(f"loading TLS files: {_ssl_reason(exc)}") from None
    if info.trusted_ca_file or info.client_cert_auth:
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def client_context(info: TLSInfo) -> ssl.SSLContext:
    """A context for dialing another member: presents our certificate when we have one;
    verifies the server's chain against the trusted CA (system roots if none) and its name
    against the URL's host; with auto TLS (``self_signed``) verifies nothing, as etcd's
    ``InsecureSkipVerify`` for ``--peer-auto-tls``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if not info.empty():
            ctx.load_cert_chain(info.cert_file, info.key_file)
        if info.self_signed:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif info.trusted_ca_file:
            ctx.load_verify_locations(cafile=info.trusted_ca_file)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (ssl.SSLError, OSError) as exc:
        raise TLSError(f"loading TLS files: {_ssl_reason(exc)}") from None
    return ctx


def allowed_cn_error(info: TLSInfo, peercert: dict[str, object] | None) -> str | None:
    """``None`` if the verified peer certificate ``peercert`` (``SSLObject.getpeercert()``)
    is acceptable under ``allowed_cn``; else a reason to log. Without ``allowed_cn`` every
    verified certificate is acceptable."""
    if not info.allowed_cn:
        return None
    cns: list[str] = []
    subject = peercert.get("subject", ()) if peercert else ()
    for rdn in subject if isinstance(subject, tuple) else ():
        for key, value in rdn:
            if key == "commonName":
                cns.append(str(value))
    if info.allowed_cn in cns:
        return None
    got = ", ".join(cns) or "<none>"
    return f"client certificate authentication failed (CN {got}, allowed {info.allowed_cn})"


PeerCertCheck = Callable[[dict[str, object] | None, str], Awaitable[str | None]]


def peer_cert_check(info: TLSInfo) -> PeerCertCheck | None:
    """The check the peer listener runs after each handshake, or None when it does not
    verify client certificates (no trusted CA, no client cert auth). As etcd 3.4's peer
    listener: the certificate must name the address the peer dials from
    (:func:`peer_san_error`), and with ``--peer-cert-allowed-cn`` carry that CN."""
    if not (info.trusted_ca_file or info.client_cert_auth):
        return None

    async def check(cert: dict[str, object] | None, host: str) -> str | None:
        return allowed_cn_error(info, cert) or await peer_san_error(cert, host)

    return check


async def peer_san_error(
    cert: dict[str, object] | None, host: str, *, timeout: float = 2.0
) -> str | None:
    """etcd 3.4's ``checkCertSAN`` for a peer that dialed in from ``host``: ``None`` when
    the certificate has no IP or DNS SANs, or ``host`` is one of its IP SANs, or one of its
    DNS names resolves to ``host`` (reverse lookup of ``host``, then forward lookups of the
    names, each bounded by ``timeout``); else the reason, in Go's words."""
    if not cert:
        return None
    sans = cert.get("subjectAltName", ())
    pairs = (
        [p for p in sans if isinstance(p, tuple) and len(p) == 2] if isinstance(sans, tuple) else []
    )
    ips = [str(v) for k, v in pairs if k == "IP Address"]
    names = [str(v) for k, v in pairs if k == "DNS"]
    if not ips and not names:
        return None
    if any(_same_ip(ip, host) for ip in ips):
        return None
    if not names:
        return f"x509: certificate is valid for {', '.join(ips)}, not {host}"
    if await _host_in_dns(host, names, timeout):
        return None
    return f"tls: {host!r} does not match any of DNSNames {names!r}"


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.strip()) == ipaddress.ip_address(b)
    except ValueError:
        return False


async def _host_in_dns(host: str, names: list[str], timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    wildcards = [n[1:] for n in names if n.startswith("*.")]
    exact = [n for n in names if not n.startswith("*.")]
    try:
        async with asyncio.timeout(timeout):
            primary, aliases, _ = await loop.run_in_executor(None, socket.gethostbyaddr, host)
        for found in [primary, *aliases]:
            found = found.rstrip(".")
            if found in exact or any(found.endswith(w) for w in wildcards):
                return True
    except (OSError, TimeoutError):
        pass
    for name in exact:
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            continue
        if any(_same_ip(str(info[4][0]), host) for info in infos):
            return True
    return False


def hosts_of(urls: Sequence[str]) -> list[str]:
    """The host names / IPs of ``urls``, de-duplicated in order (for auto TLS SANs)."""
    hosts: list[str] = []
    for url in urls:
        host = urlsplit(url).hostname or ""
        if host and host not in hosts:
            hosts.append(host)
    return hosts


def auto_tls(
    info: TLSInfo, data_dir: str | os.PathLike[str], side: Side, hosts: Sequence[str]
) -> TLSInfo:
    """Resolve ``--auto-tls`` / ``--peer-auto-tls``: with the flag and no certificate files,
    return ``info`` pointing at ``<data_dir>/fixtures/<side>/cert.pem`` and ``key.pem``,
    generating them (self-signed ECDSA P-256, one year, SANs ``hosts``) only if either is
    missing, so a restarted member keeps its certificate. The result has ``self_signed``
    set: peers dialing with it do not verify anybody, and nobody can verify it (etcd uses
    ``InsecureSkipVerify`` for auto TLS). Without the flag, or with certificate files given
    (etcd warns "ignoring <side> auto TLS since certs given"; :func:`auto_tls_ignored` says
    when), ``info`` is returned unchanged."""
    if not info.auto_tls or not info.empty():
        return info
    folder = Path(data_dir) / "fixtures" / side
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    if not (cert_path.is_file() and key_path.is_file()):
        try:
            _self_cert(folder, cert_path, key_path, hosts)
        except OSError as exc:
            raise TLSError(f"{_flag(side, 'auto-tls')}: cannot create {folder}: {exc}") from None
    return replace(info, cert_file=str(cert_path), key_file=str(key_path), self_signed=True)


def auto_tls_ignored(info: TLSInfo, side: Side) -> str | None:
    """etcd's warning when auto TLS is asked for together with certificate files."""
    if info.auto_tls and not info.empty():
        return f"ignoring {side} auto TLS since certs given"
    return None


def _self_cert(folder: Path, cert_path: Path, key_path: Path, hosts: Sequence[str]) -> None:
    """Write a self-signed pair atomically (temp file + rename: a crash leaves no half pair
    that would be reused)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "keelson")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomic(key_path, key_pem, 0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
