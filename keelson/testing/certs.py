"""A throw-away public-key infrastructure for tests: certificate authorities and the
certificates they sign, written as PEM files.

Theory of operation: :func:`make_ca` creates a self-signed CA (ECDSA P-256: key generation
takes well under a millisecond, so a test may make several, e.g. a trusted CA and a *rogue*
CA whose certificates must be refused). :meth:`CA.issue` signs a leaf certificate for a
server, a peer (both server and client usage, as an etcd member dials and accepts) or a
client, with subject alternative names for every host given (IP literals become IP SANs,
anything else a DNS name). Files are written under the directory given, named after the
``name`` argument: ``<name>.crt`` / ``<name>.key`` (key mode 0600). Nothing here is secret
or durable; it is test support only and never imported by production code.

Invariants: every certificate is valid from one hour ago (tolerates clock skew between
processes) until ``days`` from now; a CA has ``BasicConstraints(ca=True)`` and ``keyCertSign``;
a leaf has ``ca=False``, ``digitalSignature`` and the extended key usages asked for, so
OpenSSL's purpose checks accept it exactly for the roles it was issued for.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA", "CertPair", "make_ca", "write_key"]

_DEFAULT_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True, slots=True)
class CertPair:
    """A certificate and its private key, as PEM file paths (strings, ready for flags)."""

    cert_file: str
    key_file: str


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``key`` unencrypted as PKCS#8 PEM, readable by the owner only."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


@dataclass(frozen=True)
class CA:
    """A certificate authority: its certificate file (the ``--trusted-ca-file``) and key."""

    cert_file: str
    key_file: str
    name: str
    _cert: x509.Certificate
    _key: ec.EllipticCurvePrivateKey

    def issue(
        self,
        dir: str | os.PathLike[str],
        name: str,
        *,
        cn: str,
        hosts: Sequence[str] = _DEFAULT_HOSTS,
        client: bool = True,
        server: bool = True,
        days: int = 30,
        not_after: datetime.datetime | None = None,
    ) -> CertPair:
        """Sign a leaf certificate for ``cn`` with SANs ``hosts``; write ``<dir>/<name>.crt``
        and ``<dir>/<name>.key``. ``client``/``server`` select the extended key usages
        (``clientAuth`` / ``serverAuth``). ``not_after`` overrides ``days`` (a date in the past
        makes an expired certificate)."""
        out = Path(dir)
        out.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(not_after or now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if hosts:
            builder = builder.add_extension(_san(hosts), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_path = out / f"{name}.crt"
        key_path = out / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key_path, key)
        return CertPair(str(cert_path), str(key_path))


def make_ca(dir: str | os.PathLike[str], name: str, *, days: int = 30) -> CA:
    """Create a self-signed CA named ``name`` (its CN); write ``<dir>/<name>.crt`` (the file
    to pass as ``--trusted-ca-file``) and ``<dir>/<name>.key``."""
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "keelson tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = out / f"{name}.crt"
    key_path = out / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(key_path, key)
    return CA(str(cert_path), str(key_path), name, cert, key)
