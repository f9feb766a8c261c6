"""Simple and jwt tokens, with a virtual clock, and the --auth-token option string."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keelson.auth import (
    VERIFY_ONLY,
    AuthInfo,
    AuthOptionsError,
    JwtTokenProvider,
    SimpleTokenProvider,
    new_token_provider,
    parse_go_duration,
    parse_token_options,
    simple_token_index,
)
from keelson.proto.errors import INVALID_AUTH_TOKEN, EtcdError


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def invalid(fn: object) -> None:
    with pytest.raises(EtcdError) as info:
        fn()  # type: ignore[operator]
    assert info.value == INVALID_AUTH_TOKEN


# ---- simple ----------------------------------------------------------------------------------


def test_simple_token_shape_and_index() -> None:
    p = SimpleTokenProvider(300, Clock())
    prefix = p.gen_token_prefix()
    assert len(prefix) == 16 and prefix.isalpha() and prefix.isascii()
    assert p.gen_token_prefix() != prefix
    assert simple_token_index(f"{prefix}.17") == 17
    for bad in ("nodot", "a.b.3", "abc.", "abc.x1", "abc.-1"):
        assert simple_token_index(bad) is None
    with pytest.raises(ValueError):
        p.assign("u", 1, prefix="", index=1)


def test_simple_token_expires_after_ttl_and_use_refreshes() -> None:
    clock = Clock(0.0)
    p = SimpleTokenProvider(300, clock)
    p.enable()
    token = p.assign("alice", 5, prefix="abcdefgh", index=3)
    assert token == "abcdefgh.3"
    clock.now = 299.0
    assert p.info(token, 9) == AuthInfo("alice", 9)  # current revision, refreshed deadline
    clock.now = 598.0
    assert p.info(token, 9).username == "alice"
    clock.now = 898.5
    invalid(lambda: p.info(token, 9))
    invalid(lambda: p.info(token, 9))  # and it is gone


def test_simple_tokens_invalidated_per_user_and_on_disable() -> None:
    p = SimpleTokenProvider(300, Clock(0.0))
    p.enable()
    a = p.assign("a", 1, prefix="pa", index=1)
    b = p.assign("b", 1, prefix="pb", index=2)
    p.invalidate_user("a")
    invalid(lambda: p.info(a, 1))
    assert p.info(b, 1).username == "b"
    p.disable()
    invalid(lambda: p.info(b, 1))
    # While disabled a token is handed out but not kept (etcd does the same).
    c = p.assign("c", 1, prefix="pc", index=3)
    invalid(lambda: p.info(c, 1))
    invalid(lambda: p.info("garbage", 1))


def test_simple_sweep_bounds_memory() -> None:
    clock = Clock(0.0)
    p = SimpleTokenProvider(10, clock)
    p.enable()
    for i in range(50):
        p.assign("u", 1, prefix="p", index=i)
    assert p.sweep() == 50
    clock.now = 11.0
    p.assign("u", 1, prefix="q", index=99)  # assign sweeps the expired ones
    assert p.sweep() == 1


def test_default_ttl_when_not_positive() -> None:
    assert SimpleTokenProvider(0).ttl == 300.0
    assert SimpleTokenProvider(-5).ttl == 300.0


# ---- jwt ---------------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _pem_private(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def rsa_files(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> tuple[str, str]:
    return (
        _write(tmp_path / "rsa.pem", _pem_private(rsa_key)),
        _write(tmp_path / "rsa.pub", _pem_public(rsa_key)),
    )


def _tamper(token: str) -> str:
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["username"] = "root"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{sig}"


@pytest.mark.parametrize("method", ["RS256", "PS384", "ES256", "HS256"])
def test_jwt_sign_verify_tamper(
    tmp_path: Path,
    method: str,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if method.startswith("HS"):
        priv = _write(tmp_path / "secret", b"0123456789abcdef0123456789abcdef")
        spec = f"jwt,priv-key={priv},sign-method={method}"
    else:
        key = ec_key if method.startswith("ES") else rsa_key
        priv = _write(tmp_path / "k.pem", _pem_private(key))
        pub = _write(tmp_path / "k.pub", _pem_public(key))
        spec = f"jwt,pub-key={pub},priv-key={priv},sign-method={method}"
    clock = Clock()
    p = new_token_provider(spec, wall_clock=clock)
    assert isinstance(p, JwtTokenProvider) and p.sign_method == method
    assert p.gen_token_prefix() == ""
    token = p.assign("alice", 7)
    assert p.info(token, 99) == AuthInfo("alice", 7)  # the revision in the token
    claims = pyjwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] == int(clock.now) + 300
    invalid(lambda: p.info(_tamper(token), 99))
    invalid(lambda: p.info(token[:-4] + "AAAA", 99))
    invalid(lambda: p.info("not.a.jwt", 99))


def test_jwt_expiry_and_ttl_option(rsa_files: tuple[str, str]) -> None:
    priv, pub = rsa_files
    clock = Clock()
    p = new_token_provider(f"jwt,priv-key={priv},sign-method=RS256,ttl=1m", wall_clock=clock)
    assert isinstance(p, JwtTokenProvider) and p.ttl == 60.0
    token = p.assign("u", 3)
    clock.now += 60
    assert p.info(token, 3).username == "u"  # valid while now <= exp
    clock.now += 1
    invalid(lambda: p.info(token, 3))


def test_jwt_rejects_other_key_and_other_algorithm(
    tmp_path: Path, rsa_files: tuple[str, str], ec_key: ec.EllipticCurvePrivateKey
) -> None:
    priv, pub = rsa_files
    mine = new_token_provider(f"jwt,priv-key={priv},sign-method=RS256")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_priv = _write(tmp_path / "other.pem", _pem_private(other_key))
    other = new_token_provider(f"jwt,priv-key={other_priv},sign-method=RS256")
    invalid(lambda: mine.info(other.assign("root", 1), 1))
    # A token whose header says another algorithm (here HS256 keyed with the public key).
    forged = pyjwt.encode(
        {"username": "root", "revision": 1, "exp": 2**40}, "k" * 32, algorithm="HS256"
    )
    invalid(lambda: mine.info(forged, 1))
    # Valid signature but claims of the wrong shape.
    bad = pyjwt.encode({"username": 5, "revision": 1, "exp": 2**40}, other_key, algorithm="RS256")
    invalid(lambda: other.info(bad, 1))
    no_exp = pyjwt.encode({"username": "u", "revision": 1}, other_key, algorithm="RS256")
    invalid(lambda: other.info(no_exp, 1))


def test_jwt_verify_only(rsa_files: tuple[str, str]) -> None:
    priv, pub = rsa_files
    signer = new_token_provider(f"jwt,priv-key={priv},sign-method=RS256")
    verifier = new_token_provider(f"jwt,pub-key={pub},sign-method=RS256")
    assert isinstance(verifier, JwtTokenProvider) and verifier.verify_only
    assert verifier.info(signer.assign("bob", 2), 2) == AuthInfo("bob", 2)
    with pytest.raises(EtcdError) as info:
        verifier.assign("bob", 2)
    assert info.value == VERIFY_ONLY


# ---- option strings ---------------------------------------------------------------------------


def test_parse_token_options() -> None:
    assert parse_token_options("simple") == ("simple", {})
    assert parse_token_options("jwt,sign-method=RS256,ttl=5m") == (
        "jwt",
        {"sign-method": "RS256", "ttl": "5m"},
    )
    with pytest.raises(AuthOptionsError, match="'priv-key'"):
        parse_token_options("jwt,priv-key")
    with pytest.raises(AuthOptionsError, match="duplicate.*'ttl'"):
        parse_token_options("jwt,ttl=1s,ttl=2s")


def test_simple_spec_and_unknown_type() -> None:
    p = new_token_provider("simple", simple_ttl=42)
    assert isinstance(p, SimpleTokenProvider) and p.ttl == 42
    with pytest.raises(AuthOptionsError, match="'bogus'"):
        new_token_provider("bogus")


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ("sign-method=RS999,priv-key={priv}", "sign-method='RS999'"),
        ("priv-key={priv}", "sign-method=''"),
        ("sign-method=RS256", "needs priv-key= or pub-key="),
        ("sign-method=RS256,priv-key=/nonexistent/k.pem", "priv-key=/nonexistent/k.pem"),
        ("sign-method=RS256,priv-key={pub}", "priv-key=.*not a PEM private key"),
        ("sign-method=ES256,priv-key={priv}", "priv-key=.*needs an EC key"),
        ("sign-method=RS256,priv-key={priv},ttl=soon", "ttl='soon'"),
        ("sign-method=RS256,priv-key={priv},pub-key={otherpub}", "does not match"),
        ("sign-method=HS256", "needs priv-key="),
    ],
)
def test_bad_jwt_options_name_the_option(
    tmp_path: Path, rsa_files: tuple[str, str], options: str, names: str
) -> None:
    priv, pub = rsa_files
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    otherpub = _write(tmp_path / "other.pub", _pem_public(other))
    spec = "jwt," + options.format(priv=priv, pub=pub, otherpub=otherpub)
    with pytest.raises(AuthOptionsError, match=names):
        new_token_provider(spec)


def test_go_durations() -> None:
    assert parse_go_duration("300s") == 300
    assert parse_go_duration("5m") == 300
    assert parse_go_duration("1h30m") == 5400
    assert parse_go_duration("1.5h") == 5400
    assert parse_go_duration("250ms") == pytest.approx(0.25)
    assert parse_go_duration("0") == 0
    for bad in ("", "5", "m", "5 m", "5d"):
        with pytest.raises(ValueError):
            parse_go_duration(bad)


def test_jwt_curve_not_matching_method_is_refused_at_start(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    priv = _write(tmp_path / "p256.pem", _pem_private(ec_key))
    with pytest.raises(AuthOptionsError, match="sign-method=ES384"):
        new_token_provider(f"jwt,priv-key={priv},sign-method=ES384")
