"""keelson.auth: users, roles, key-range permissions, tokens and password hashing.

The package receives identities from its caller (a token it is handed, a certificate's
common name) and never reads gRPC metadata. The server applies auth changes through the
raft log with :class:`AuthStore`'s mutating methods inside the apply's backend write
transaction, hashes passwords with :func:`hash_password` before proposing and checks them
with :meth:`AuthStore.check_password` (both in a thread), turns tokens into
:class:`AuthInfo` with :meth:`AuthStore.auth_info_from_token`, and checks every request
with the ``check_*`` methods. :class:`AuthBackoff` slows down password guessing.
"""

from keelson.auth._checks import ROOT_ROLE, LeaseKeys, PermissionChecks
from keelson.auth._ranges import KeyPermissions, covers, intersects, permission_interval
from keelson.auth.backoff import AuthBackoff
from keelson.auth.password import (
    DEFAULT_BCRYPT_COST,
    MAX_BCRYPT_COST,
    MIN_BCRYPT_COST,
    effective_bcrypt_cost,
    hash_password,
    password_matches,
)
from keelson.auth.store import (
    AUTH_BUCKET,
    AUTH_ROLES_BUCKET,
    AUTH_USERS_BUCKET,
    NO_PASSWORD_USER,
    ROOT_USER,
    AuthCorrupt,
    AuthStore,
)
from keelson.auth.tokens import (
    DEFAULT_JWT_TTL,
    DEFAULT_SIMPLE_TOKEN_TTL,
    JWT_SIGN_METHODS,
    VERIFY_ONLY,
    AuthInfo,
    AuthOptionsError,
    JwtTokenProvider,
    SimpleTokenProvider,
    TokenProvider,
    new_token_provider,
    parse_go_duration,
    parse_token_options,
    simple_token_index,
)

__all__ = [
    "AUTH_BUCKET",
    "AUTH_ROLES_BUCKET",
    "AUTH_USERS_BUCKET",
    "DEFAULT_BCRYPT_COST",
    "DEFAULT_JWT_TTL",
    "DEFAULT_SIMPLE_TOKEN_TTL",
    "JWT_SIGN_METHODS",
    "MAX_BCRYPT_COST",
    "MIN_BCRYPT_COST",
    "NO_PASSWORD_USER",
    "ROOT_ROLE",
    "ROOT_USER",
    "VERIFY_ONLY",
    "AuthBackoff",
    "AuthCorrupt",
    "AuthInfo",
    "AuthOptionsError",
    "AuthStore",
    "JwtTokenProvider",
    "KeyPermissions",
    "LeaseKeys",
    "PermissionChecks",
    "SimpleTokenProvider",
    "TokenProvider",
    "covers",
    "effective_bcrypt_cost",
    "hash_password",
    "intersects",
    "new_token_provider",
    "parse_go_duration",
    "parse_token_options",
    "password_matches",
    "permission_interval",
    "simple_token_index",
]
