"""Password hashing with bcrypt, as etcd does it (``--bcrypt-cost``, default 10).

Theory of operation. Both functions are CPU-bound (about 2**cost rounds of Blowfish key
setup, ~50-100 ms at cost 10), so the server calls them in a thread, never on the event
loop. The member that receives ``UserAdd``/``UserChangePassword`` hashes the password
*before* proposing, so the raft log, the WAL, snapshots and the backend only ever hold the
hash; the clear password lives only in the request being handled.

Compatibility: hashes are ``$2a$`` hashes like Go's ``x/crypto/bcrypt``. The etcd 3.4 build
(x/crypto of April 2022) silently uses only the first 72 bytes of a password, as every
classic bcrypt does; the ``bcrypt`` package refuses longer input instead, so both functions
cut the encoded password at 72 bytes first, which gives the same hash and the same
acceptance as etcd.
"""

from __future__ import annotations

import bcrypt

DEFAULT_BCRYPT_COST = 10
"""etcd's --bcrypt-cost default (Go's bcrypt.DefaultCost)."""
MIN_BCRYPT_COST = 4
MAX_BCRYPT_COST = 31
_MAX_PASSWORD_BYTES = 72


def effective_bcrypt_cost(cost: int) -> int:
    """The cost etcd would use for ``cost``: out of [4, 31] it falls back to the default
    (etcd logs a warning and carries on rather than refusing to start)."""
    if MIN_BCRYPT_COST <= cost <= MAX_BCRYPT_COST:
        return cost
    return DEFAULT_BCRYPT_COST


def _secret(password: str) -> bytes:
    return password.encode("utf-8")[:_MAX_PASSWORD_BYTES]


def hash_password(password: str, cost: int = DEFAULT_BCRYPT_COST) -> bytes:
    """A fresh bcrypt hash (random salt) of ``password`` at ``cost``; raises ValueError for
    a cost outside [4, 31] (pass it through :func:`effective_bcrypt_cost` first)."""
    if not MIN_BCRYPT_COST <= cost <= MAX_BCRYPT_COST:
        raise ValueError(f"bcrypt cost {cost} is outside [{MIN_BCRYPT_COST}, {MAX_BCRYPT_COST}]")
    return bcrypt.hashpw(_secret(password), bcrypt.gensalt(rounds=cost, prefix=b"2a"))


def password_matches(hashed: bytes, password: str) -> bool:
    """Whether ``password`` hashes to ``hashed``; False (never an exception) for an empty
    or malformed hash, so a user without a usable hash simply cannot log in."""
    if not hashed:
        return False
    try:
        return bcrypt.checkpw(_secret(password), hashed)
    except ValueError:
        return False
