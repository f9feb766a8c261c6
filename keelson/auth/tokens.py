"""Auth tokens: etcd's ``simple`` and ``jwt`` providers and the ``--auth-token`` option.

Theory of operation. ``Authenticate`` checks the password on the member that receives it,
then proposes the user name (and, for simple tokens, a random prefix); when the entry is
applied, every member calls :meth:`TokenProvider.assign`, so every member can later turn the
token back into an identity with :meth:`TokenProvider.info`.

``simple`` (etcd's default, not signed): the token is ``<16 random letters>.<raft index of
the Authenticate entry>``. Each member keeps token -> user in memory; a token lives
``ttl`` seconds (``--auth-token-ttl``, default 300) after its last use: every successful
``info`` pushes its deadline back. Tokens of a user are dropped when the user is deleted or
its password changes (``invalidate_user``) and all of them when auth is disabled; other
auth changes keep them (``info`` reports the store's current revision, as etcd does). A
member that has not yet applied the token's index does not know it: the server waits until
its applied index reaches :func:`simple_token_index` before asking, as etcd's indexWaiter.

``jwt``: a signed token with the claims ``username``, ``revision`` (the auth revision when
it was issued) and ``exp``; nothing is stored, any member with the key verifies it. Since
``info`` returns the issuing revision, any later auth change makes the server answer
``etcdserver: revision of auth store is old`` and etcd clients re-authenticate.

Time: every provider takes a ``clock`` (seconds; monotonic for ``simple``, Unix time for
``jwt`` since ``exp`` is absolute) so tests control expiry. Providers are thread-safe.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keelson.proto.errors import INVALID_AUTH_TOKEN, Code, EtcdError

log = logging.getLogger(__name__)

Clock = Callable[[], float]

DEFAULT_SIMPLE_TOKEN_TTL = 300.0
"""etcd's --auth-token-ttl default, seconds."""
DEFAULT_JWT_TTL = 300.0
"""etcd's jwt ``ttl`` default (5 minutes)."""
SIMPLE_TOKEN_PREFIX_LENGTH = 16
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SWEEP_INTERVAL = 1.0

VERIFY_ONLY = EtcdError(
    Code.UNKNOWN, "auth: token signing attempted with verify-only key", "VERIFY_ONLY"
)
"""Authenticate with a jwt provider that has only a public key (etcd: codes.Unknown)."""


class AuthOptionsError(ValueError):
    """The ``--auth-token`` option string is unusable; the message names the bad part."""


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """Who a request comes from, and the auth revision its credentials were valid at."""

    username: str
    revision: int


class TokenProvider(Protocol):
    """What the auth store needs from a token mechanism."""

    def gen_token_prefix(self) -> str:
        """A random prefix for a simple token, chosen by the proposing member ("" for jwt)."""
        ...

    def assign(self, username: str, revision: int, *, prefix: str = "", index: int = 0) -> str:
        """Issue a token for ``username`` (called when an Authenticate entry is applied at
        raft ``index``, with the proposer's ``prefix``)."""
        ...

    def info(self, token: str, revision: int) -> AuthInfo:
        """The identity behind ``token``; ``revision`` is the store's current auth revision.
        Raises INVALID_AUTH_TOKEN for an unknown, expired, tampered or malformed token."""
        ...

    def enable(self) -> None: ...

    def disable(self) -> None: ...

    def invalidate_user(self, username: str) -> None: ...


# ---- simple tokens -----------------------------------------------------------------------


def simple_token_index(token: str) -> int | None:
    """The raft index a simple token was assigned at, or None if it is not one."""
    prefix, sep, index = token.rpartition(".")
    if not sep or "." in prefix or not index.isdigit() or not index.isascii():
        return None
    return int(index)


class SimpleTokenProvider:
    """etcd's ``simple`` tokens; see the module docstring."""

    def __init__(self, ttl: float = DEFAULT_SIMPLE_TOKEN_TTL, clock: Clock | None = None) -> None:
        self.ttl = ttl if ttl > 0 else DEFAULT_SIMPLE_TOKEN_TTL
        self._clock: Clock = clock if clock is not None else time.monotonic
        self._lock = threading.Lock()
        self._enabled = False
        # token -> (user name, deadline); only while enabled.
        self._tokens: dict[str, tuple[str, float]] = {}
        self._next_sweep = 0.0

    def gen_token_prefix(self) -> str:
        return "".join(secrets.choice(_LETTERS) for _ in range(SIMPLE_TOKEN_PREFIX_LENGTH))

    def assign(self, username: str, revision: int, *, prefix: str = "", index: int = 0) -> str:
        if not prefix or "." in prefix:
            raise ValueError("a simple token needs the proposer's prefix (no dots)")
        token = f"{prefix}.{index}"
        now = self._clock()
        with self._lock:
            if self._enabled:  # etcd hands the token out but does not keep it when disabled
                self._sweep(now)
                self._tokens[token] = (username, now + self.ttl)
        return token

    def info(self, token: str, revision: int) -> AuthInfo:
        if simple_token_index(token) is None:
            raise INVALID_AUTH_TOKEN
        now = self._clock()
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None:
                raise INVALID_AUTH_TOKEN
            username, deadline = entry
            if now > deadline:
                del self._tokens[token]
                raise INVALID_AUTH_TOKEN
            self._tokens[token] = (username, now + self.ttl)
        return AuthInfo(username, revision)

    def enable(self) -> None:
        with self._lock:
            self._enabled = True

    def disable(self) -> None:
        with self._lock:
            self._enabled = False
            self._tokens.clear()

    def invalidate_user(self, username: str) -> None:
        with self._lock:
            for token in [t for t, (u, _) in self._tokens.items() if u == username]:
                del self._tokens[token]

    def sweep(self) -> int:
        """Forget expired tokens now; returns how many are left. ``assign`` also sweeps at
        most once a second, so memory stays bounded by the tokens issued within a TTL."""
        with self._lock:
            self._next_sweep = 0.0
            self._sweep(self._clock())
            return len(self._tokens)

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_INTERVAL
        for token in [t for t, (_, deadline) in self._tokens.items() if now > deadline]:
            del self._tokens[token]


# ---- jwt -----------------------------------------------------------------------------------

_RSA_METHODS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_METHODS = frozenset({"ES256", "ES384", "ES512"})
_HMAC_METHODS = frozenset({"HS256", "HS384", "HS512"})
JWT_SIGN_METHODS = tuple(sorted(_RSA_METHODS | _EC_METHODS | _HMAC_METHODS))


class JwtTokenProvider:
    """etcd's ``jwt`` tokens; see the module docstring. Build it with
    :func:`new_token_provider` from the option string, or directly with loaded keys."""

    def __init__(
        self,
        sign_method: str,
        *,
        signing_key: Any | None,
        verifying_key: Any,
        ttl: float = DEFAULT_JWT_TTL,
        clock: Clock | None = None,
    ) -> None:
        if sign_method not in JWT_SIGN_METHODS:
            raise AuthOptionsError(f"unknown jwt sign-method {sign_method!r}")
        self.sign_method = sign_method
        self._signing_key = signing_key
        self._verifying_key = verifying_key
        self.ttl = ttl
        self._clock: Clock = clock if clock is not None else time.time

    @property
    def verify_only(self) -> bool:
        return self._signing_key is None

    def gen_token_prefix(self) -> str:
        return ""

    def assign(self, username: str, revision: int, *, prefix: str = "", index: int = 0) -> str:
        if self._signing_key is None:
            raise VERIFY_ONLY
        claims = {
            "username": username,
            "revision": revision,
            "exp": int(self._clock() + self.ttl),
        }
        return jwt.encode(claims, self._signing_key, algorithm=self.sign_method)

    def info(self, token: str, revision: int) -> AuthInfo:
        try:
            claims = jwt.decode(
                token,
                self._verifying_key,
                algorithms=[self.sign_method],
                options={"verify_exp": False, "require": ["exp"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            raise INVALID_AUTH_TOKEN from None
        username = claims.get("username")
        token_revision = claims.get("revision")
        exp = claims.get("exp")
        if (
            not isinstance(username, str)
            or not isinstance(token_revision, int | float)
            or isinstance(token_revision, bool)
            or token_revision < 0
            or not isinstance(exp, int | float)
        ):
            raise INVALID_AUTH_TOKEN
        # golang-jwt: valid while now (whole seconds) <= exp.
        if int(self._clock()) > exp:
            raise INVALID_AUTH_TOKEN
        return AuthInfo(username, int(token_revision))

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass

    def invalidate_user(self, username: str) -> None:
        pass  # jwt tokens carry their revision; changes show up as an old revision


# ---- the --auth-token option ----------------------------------------------------------------

_KNOWN_JWT_OPTIONS = frozenset({"sign-method", "pub-key", "priv-key", "ttl"})


def parse_token_options(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``--auth-token`` into its type and ``name=value`` options, as etcd does:
    ``jwt,pub-key=a.pem,priv-key=b.pem,sign-method=RS256,ttl=10m``."""
    parts = spec.split(",")
    options: dict[str, str] = {}
    for part in parts[1:]:
        pair = part.split("=")
        if len(pair) != 2:
            raise AuthOptionsError(f"invalid --auth-token option {part!r} (want name=value)")
        name, value = pair
        if name in options:
            raise AuthOptionsError(f"duplicate --auth-token option {name!r}")
        options[name] = value
    return parts[0], options


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string (``300s``, ``5m``, ``1h30m``, ``1.5h``, ``0``)."""
    s = text.strip()
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def _read_key_file(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise AuthOptionsError(f"--auth-token {option}={path}: {e.strerror or e}") from None


def _load_private(option: str, path: str, pem: bytes) -> Any:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise AuthOptionsError(
            f"--auth-token {option}={path}: not a PEM private key ({e})"
        ) from None


def _load_public(option: str, path: str, pem: bytes) -> Any:
    try:
        return serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        pass
    try:  # etcd also accepts a certificate here
        from cryptography import x509

        return x509.load_pem_x509_certificate(pem).public_key()
    except ValueError as e:
        raise AuthOptionsError(
            f"--auth-token {option}={path}: not a PEM public key ({e})"
        ) from None


def _jwt_keys(method: str, options: dict[str, str]) -> tuple[Any | None, Any]:
    """(signing key or None when verify-only, verifying key) for ``method``."""
    priv_path = options.get("priv-key", "")
    pub_path = options.get("pub-key", "")
    if method in _HMAC_METHODS:
        if not priv_path:
            raise AuthOptionsError(
                f"--auth-token: sign-method {method} needs priv-key=<secret file>"
            )
        secret = _read_key_file("priv-key", priv_path)
        if not secret:
            raise AuthOptionsError(f"--auth-token priv-key={priv_path}: the file is empty")
        return secret, secret
    family = rsa if method in _RSA_METHODS else ec
    kind = "RSA" if method in _RSA_METHODS else "EC"
    want_priv = rsa.RSAPrivateKey if family is rsa else ec.EllipticCurvePrivateKey
    want_pub = rsa.RSAPublicKey if family is rsa else ec.EllipticCurvePublicKey
    priv: Any | None = None
    pub: Any | None = None
    if priv_path:
        priv = _load_private("priv-key", priv_path, _read_key_file("priv-key", priv_path))
        if not isinstance(priv, want_priv):
            raise AuthOptionsError(
                f"--auth-token priv-key={priv_path}: sign-method {method} needs an {kind} key"
            )
    if pub_path:
        pub = _load_public("pub-key", pub_path, _read_key_file("pub-key", pub_path))
        if not isinstance(pub, want_pub):
            raise AuthOptionsError(
                f"--auth-token pub-key={pub_path}: sign-method {method} needs an {kind} key"
            )
    if priv is None and pub is None:
        raise AuthOptionsError(f"--auth-token: sign-method {method} needs priv-key= or pub-key=")
    if priv is None:
        return None, pub
    if pub is not None and pub.public_numbers() != priv.public_key().public_numbers():
        raise AuthOptionsError(
            f"--auth-token: pub-key={pub_path} does not match priv-key={priv_path}"
        )
    return priv, priv.public_key()


def new_token_provider(
    spec: str,
    *,
    simple_ttl: float = DEFAULT_SIMPLE_TOKEN_TTL,
    monotonic: Clock | None = None,
    wall_clock: Clock | None = None,
) -> SimpleTokenProvider | JwtTokenProvider:
    """The provider ``--auth-token`` describes (``simple`` or ``jwt,...``); raises
    AuthOptionsError naming the bad option. ``simple_ttl`` is ``--auth-token-ttl``."""
    kind, options = parse_token_options(spec)
    if kind == "simple":
        log.warning("simple token is not cryptographically signed")
        return SimpleTokenProvider(simple_ttl, monotonic)
    if kind != "jwt":
        raise AuthOptionsError(f"unknown --auth-token type {kind!r} (want simple or jwt)")
    unknown = sorted(set(options) - _KNOWN_JWT_OPTIONS)
    if unknown:
        log.warning("ignoring unknown jwt options: %s", ", ".join(unknown))
    method = options.get("sign-method", "")
    if method not in JWT_SIGN_METHODS:
        raise AuthOptionsError(
            f"--auth-token sign-method={method!r} is not one of {', '.join(JWT_SIGN_METHODS)}"
        )
    ttl = DEFAULT_JWT_TTL
    if options.get("ttl"):
        try:
            ttl = parse_go_duration(options["ttl"])
        except ValueError:
            raise AuthOptionsError(
                f"--auth-token ttl={options['ttl']!r} is not a duration (e.g. 5m, 300s)"
            ) from None
    signing, verifying = _jwt_keys(method, options)
    provider = JwtTokenProvider(
        method, signing_key=signing, verifying_key=verifying, ttl=ttl, clock=wall_clock
    )
    if signing is not None:
        # Refuse at start what would fail every Authenticate (e.g. ES384 with a P-256 key).
        try:
            provider.info(provider.assign("keelson-self-test", 1), 1)
        except (EtcdError, jwt.PyJWTError, ValueError, TypeError) as e:
            raise AuthOptionsError(
                f"--auth-token: sign-method={method} cannot sign and verify with"
                f" priv-key={options.get('priv-key', '')} ({e})"
            ) from None
    return provider
