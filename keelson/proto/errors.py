"""The one table of errors a client can see, with etcd 3.4's gRPC code and exact message.

Theory of operation: every client-visible failure in keelson is an :class:`EtcdError`
carrying a :class:`Code` (the numeric gRPC status code, so this package needs no grpc
import) and the message etcd sends in the status details. Lower layers raise the
module-level instances (``raise LEASE_NOT_FOUND``); the api layer maps ``code`` and
``message`` onto the gRPC status and sends nothing else, never a traceback. Messages are
the wire contract: etcd clients (clientv3's ``rpctypes``, etcdctl, the Python clients)
recognise errors by these strings, so they must match etcd byte for byte.

Invariants: names are unique, messages are unique, and :func:`by_message` returns the
table entry for any message in it (the client side uses it to turn a status back into the
same error).
"""

from __future__ import annotations

import enum
from typing import Final


class Code(enum.IntEnum):
    """gRPC status codes (the numbers are fixed by the gRPC protocol)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class EtcdError(Exception):
    """A client-visible error: a gRPC status code and etcd's exact message.

    Instances in this module are shared constants; raising one is safe because they carry
    no per-request state. ``name`` is the table key (e.g. ``"LEASE_NOT_FOUND"``).
    """

    def __init__(self, code: Code, message: str, name: str = "") -> None:
        super().__init__(message)
        self.code: Final = code
        self.message: Final = message
        self.name: Final = name

    def __repr__(self) -> str:
        return f"EtcdError({self.code.name}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EtcdError):
            return NotImplemented
        return self.code == other.code and self.message == other.message

    def __hash__(self) -> int:
        return hash((self.code, self.message))


_TABLE: dict[str, EtcdError] = {}


def _define(name: str, code: Code, message: str) -> EtcdError:
    if name in _TABLE:
        raise ValueError(f"duplicate error name {name}")
    if any(e.message == message for e in _TABLE.values()):
        raise ValueError(f"duplicate error message {message!r}")
    err = EtcdError(code, message, name)
    _TABLE[name] = err
    return err


_I, _R, _F = Code.INVALID_ARGUMENT, Code.OUT_OF_RANGE, Code.FAILED_PRECONDITION
_U = Code.UNAVAILABLE

# --- keys and requests -------------------------------------------------------------
EMPTY_KEY = _define("EMPTY_KEY", _I, "etcdserver: key is not provided")
KEY_NOT_FOUND = _define("KEY_NOT_FOUND", _I, "etcdserver: key not found")
VALUE_PROVIDED = _define("VALUE_PROVIDED", _I, "etcdserver: value is provided")
LEASE_PROVIDED = _define("LEASE_PROVIDED", _I, "etcdserver: lease is provided")
TOO_MANY_OPS = _define("TOO_MANY_OPS", _I, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = _define("DUPLICATE_KEY", _I, "etcdserver: duplicate key given in txn request")
COMPACTED = _define("COMPACTED", _R, "etcdserver: mvcc: required revision has been compacted")
FUTURE_REV = _define("FUTURE_REV", _R, "etcdserver: mvcc: required revision is a future revision")
NO_SPACE = _define("NO_SPACE", Code.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")

# --- leases ------------------------------------------------------------------------
LEASE_NOT_FOUND = _define(
    "LEASE_NOT_FOUND", Code.NOT_FOUND, "etcdserver: requested lease not found"
)
LEASE_EXIST = _define("LEASE_EXIST", _F, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = _define("LEASE_TTL_TOO_LARGE", _R, "etcdserver: too large lease TTL")

# --- watch -------------------------------------------------------------------------
WATCH_CANCELED = _define("WATCH_CANCELED", Code.CANCELLED, "etcdserver: watch canceled")

# --- membership --------------------------------------------------------------------
MEMBER_EXIST = _define("MEMBER_EXIST", _F, "etcdserver: member ID already exist")
PEER_URL_EXIST = _define("PEER_URL_EXIST", _F, "etcdserver: Peer URLs already exists")
MEMBER_NOT_ENOUGH_STARTED = _define(
    "MEMBER_NOT_ENOUGH_STARTED",
    _F,
    "etcdserver: re-configuration failed due to not enough started members",
)
MEMBER_BAD_URLS = _define("MEMBER_BAD_URLS", _I, "etcdserver: given member URLs are invalid")
MEMBER_NOT_FOUND = _define("MEMBER_NOT_FOUND", Code.NOT_FOUND, "etcdserver: member not found")
MEMBER_NOT_LEARNER = _define(
    "MEMBER_NOT_LEARNER", _F, "etcdserver: can only promote a learner member"
)
LEARNER_NOT_READY = _define(
    "LEARNER_NOT_READY",
    _F,
    "etcdserver: can only promote a learner member which is in sync with leader",
)
TOO_MANY_LEARNERS = _define(
    "TOO_MANY_LEARNERS", _F, "etcdserver: too many learner members in cluster"
)
CLUSTER_ID_MISMATCH = _define("CLUSTER_ID_MISMATCH", _F, "etcdserver: cluster ID mismatch")

# --- request limits ----------------------------------------------------------------
REQUEST_TOO_LARGE = _define("REQUEST_TOO_LARGE", _I, "etcdserver: request is too large")
TOO_MANY_REQUESTS = _define(
    "TOO_MANY_REQUESTS", Code.RESOURCE_EXHAUSTED, "etcdserver: too many requests"
)

# --- auth --------------------------------------------------------------------------
ROOT_USER_NOT_EXIST = _define("ROOT_USER_NOT_EXIST", _F, "etcdserver: root user does not exist")
ROOT_ROLE_NOT_EXIST = _define(
    "ROOT_ROLE_NOT_EXIST", _F, "etcdserver: root user does not have root role"
)
USER_ALREADY_EXIST = _define("USER_ALREADY_EXIST", _F, "etcdserver: user name already exists")
USER_EMPTY = _define("USER_EMPTY", _I, "etcdserver: user name is empty")
USER_NOT_FOUND = _define("USER_NOT_FOUND", _F, "etcdserver: user name not found")
ROLE_ALREADY_EXIST = _define("ROLE_ALREADY_EXIST", _F, "etcdserver: role name already exists")
ROLE_NOT_FOUND = _define("ROLE_NOT_FOUND", _F, "etcdserver: role name not found")
ROLE_EMPTY = _define("ROLE_EMPTY", _I, "etcdserver: role name is empty")
AUTH_FAILED = _define(
    "AUTH_FAILED", _I, "etcdserver: authentication failed, invalid user ID or password"
)
PERMISSION_NOT_GIVEN = _define("PERMISSION_NOT_GIVEN", _I, "etcdserver: permission not given")
PERMISSION_DENIED = _define(
    "PERMISSION_DENIED", Code.PERMISSION_DENIED, "etcdserver: permission denied"
)
ROLE_NOT_GRANTED = _define("ROLE_NOT_GRANTED", _F, "etcdserver: role is not granted to the user")
PERMISSION_NOT_GRANTED = _define(
    "PERMISSION_NOT_GRANTED", _F, "etcdserver: permission is not granted to the role"
)
AUTH_NOT_ENABLED = _define("AUTH_NOT_ENABLED", _F, "etcdserver: authentication is not enabled")
INVALID_AUTH_TOKEN = _define(
    "INVALID_AUTH_TOKEN", Code.UNAUTHENTICATED, "etcdserver: invalid auth token"
)
INVALID_AUTH_MGMT = _define("INVALID_AUTH_MGMT", _I, "etcdserver: invalid auth management")
AUTH_OLD_REVISION = _define("AUTH_OLD_REVISION", _I, "etcdserver: revision of auth store is old")

# --- leadership and availability ---------------------------------------------------
NO_LEADER = _define("NO_LEADER", _U, "etcdserver: no leader")
NOT_LEADER = _define("NOT_LEADER", _F, "etcdserver: not leader")
LEADER_CHANGED = _define("LEADER_CHANGED", _U, "etcdserver: leader changed")
NOT_CAPABLE = _define("NOT_CAPABLE", _U, "etcdserver: not capable")
STOPPED = _define("STOPPED", _U, "etcdserver: server stopped")
TIMEOUT = _define("TIMEOUT", _U, "etcdserver: request timed out")
TIMEOUT_DUE_TO_LEADER_FAIL = _define(
    "TIMEOUT_DUE_TO_LEADER_FAIL",
    _U,
    "etcdserver: request timed out, possibly due to previous leader failure",
)
TIMEOUT_DUE_TO_CONNECTION_LOST = _define(
    "TIMEOUT_DUE_TO_CONNECTION_LOST",
    _U,
    "etcdserver: request timed out, possibly due to connection lost",
)
TIMEOUT_WAIT_APPLIED_INDEX = _define(
    "TIMEOUT_WAIT_APPLIED_INDEX",
    _U,
    "etcdserver: request timed out, waiting for the applied index took too long",
)
UNHEALTHY = _define("UNHEALTHY", _U, "etcdserver: unhealthy cluster")
CORRUPT = _define("CORRUPT", Code.DATA_LOSS, "etcdserver: corrupt cluster")
NOT_SUPPORTED_FOR_LEARNER = _define(
    "NOT_SUPPORTED_FOR_LEARNER", _U, "etcdserver: rpc not supported for learner"
)
BAD_LEADER_TRANSFEREE = _define("BAD_LEADER_TRANSFEREE", _F, "etcdserver: bad leader transferee")


def all_errors() -> list[EtcdError]:
    """Every error in the table, sorted by name."""
    return [_TABLE[name] for name in sorted(_TABLE)]


def by_name(name: str) -> EtcdError:
    """The table entry called ``name``; raises KeyError if there is none."""
    return _TABLE[name]


def by_message(message: str) -> EtcdError | None:
    """The table entry whose message is ``message`` (as a client receives it), or None."""
    for err in _TABLE.values():
        if err.message == message:
            return err
    return None
