"""The configuration of ``keelson serve``, read the way etcd 3.4 reads its own.

A member's configuration comes from exactly one of two places, as in etcd 3.4:

* the command line plus ``ETCD_<FLAG>`` environment variables (``--initial-cluster`` is
  ``ETCD_INITIAL_CLUSTER``). An environment variable fills a flag not given on the command
  line; a flag given both ways is refused, as etcd 3.4 refuses it ("conflicting environment
  variable ... is shadowed by corresponding command-line flag"). Empty variables are ignored;
  unknown ``ETCD_*`` variables only earn a warning. keelson's own ``KEELSON_GRPC_SERVER`` is
  not a flag variable: it changes the *default* of ``--grpc-server`` whichever source is used.
* a YAML file named by ``--config-file`` (or ``ETCD_CONFIG_FILE``) with etcd's keys (the flag
  names without dashes). Then every other flag and environment variable is ignored, with a
  notice saying so, exactly as etcd does. Unknown keys are ignored with a warning (etcd ignores
  them silently).

Flags are spelt as in etcd and parsed with Go's ``flag`` rules: ``-flag`` or ``--flag``,
``--flag value`` or ``--flag=value``; boolean flags take no separate value (``--flag`` or
``--flag=false``); parsing stops at the first argument that is not a flag, which is refused.
Defaults are etcd's, except that the data dir defaults to ``<name>.keelson`` and every default
URL uses ``127.0.0.1`` rather than ``localhost``.

Every refusal is a :class:`ConfigError` whose message is one line naming the flag, ready to be
printed after ``keelson: ``. :func:`parse_serve_args` reads only the arguments, the mapping
of environment variables it is given, the config file (and the certificate files it names)
and whether the WAL dir holds a segment; what etcd would log while reading its
configuration is returned through ``notices`` for the caller to log.

Transport security. The client side (``--cert-file --key-file --trusted-ca-file
--client-cert-auth --auto-tls``) and the peer side (the same with ``--peer-``) are read from
flags, ``ETCD_*`` variables or the config file's ``client-transport-security`` /
``peer-transport-security`` sections (etcd's keys: ``cert-file``, ``key-file``,
``trusted-ca-file``, ``client-cert-auth``, ``auto-tls``; top-level TLS keys are ignored with
a warning, as etcd ignores them). ``https://`` URLs are accepted for client and peer URLs;
``unix://`` and ``unixs://`` are refused. :meth:`ServeConfig.client_tls` and
:meth:`ServeConfig.peer_tls` hand each side to :mod:`keelson.cli.tls`. Refused at start,
one line each (etcd's wording where it has one): an ``https://`` listen URL without a
certificate and key (or auto TLS); TLS settings for a side whose listen URLs are all
``http://`` (etcd 3.4 warns and ignores them; the issue asks keelson to refuse them); and,
through :func:`keelson.cli.tls.check`, a certificate without a key or the reverse,
unreadable files, a key not matching its certificate, client-certificate authentication
without a trusted CA.

Once the member is bootstrapped (its WAL exists), etcd ignores ``--initial-cluster`` and
``--initial-cluster-state``: the data dir wins. So the bootstrap checks on those flags (local
name present, advertised peer URLs matching) run only while the WAL dir is empty, and a
notice says they are ignored otherwise; their syntax is still checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import yaml

from keelson.auth.tokens import AuthOptionsError, parse_token_options
from keelson.cli.identity import compute_cluster_id, compute_member_id

if TYPE_CHECKING:
    from keelson.cli.tls import TLSInfo

__all__ = [
    "FLAGS",
    "ConfigError",
    "Flag",
    "Notice",
    "ServeConfig",
    "parse_go_duration",
    "parse_serve_args",
    "usage",
]

ENV_PREFIX = "ETCD"
DEFAULT_NAME = "default"
DEFAULT_QUOTA_BACKEND_BYTES = 2 * 1024 * 1024 * 1024
MAX_ELECTION_TIMEOUT_MS = 50000
LOG_LEVELS = ("debug", "info", "warn", "error", "panic", "fatal")
CLUSTER_STATES = ("new", "existing")
COMPACTION_MODES = ("periodic", "revision")
GRPC_SERVERS = ("grpcio", "native")
#: Environment variable giving the default of ``--grpc-server`` (see _default_grpc_server).
GRPC_SERVER_ENV = "KEELSON_GRPC_SERVER"


class ConfigError(Exception):
    """A configuration keelson refuses; ``str(error)`` is one line naming the flag.

    Control characters a user typed (a newline in a flag value) are escaped, so the message
    stays on one line whatever the input.
    """

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


def _one_line(text: str) -> str:
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


Kind = Literal["string", "urls", "uint", "int", "bool", "duration"]


@dataclass(frozen=True, slots=True)
class Flag:
    """One ``keelson serve`` flag, spelt and defaulted as etcd 3.4 spells and defaults it.

    ``security``: a transport-security flag, which etcd's config file keeps in a
    ``*-transport-security`` section rather than at the top level.
    """

    name: str
    kind: Kind
    default: str
    help: str
    security: bool = False
    choices: tuple[str, ...] = ()

    @property
    def env_key(self) -> str:
        return f"{ENV_PREFIX}_{self.name.upper().replace('-', '_')}"


@dataclass(frozen=True, slots=True)
class Notice:
    """A line etcd would log while reading its configuration (``level``: info or warn)."""

    level: Literal["info", "warn"]
    message: str


_C = "http://127.0.0.1:2379"
_P = "http://127.0.0.1:2380"

FLAGS: tuple[Flag, ...] = (
    Flag("name", "string", DEFAULT_NAME, "Human-readable name for this member."),
    Flag("data-dir", "string", "", "Path to the data directory (default: ${name}.keelson)."),
    Flag("wal-dir", "string", "", "Path to the dedicated wal directory."),
    Flag("listen-peer-urls", "urls", _P, "List of URLs to listen on for peer traffic."),
    Flag("listen-client-urls", "urls", _C, "List of URLs to listen on for client traffic."),
    Flag(
        "listen-metrics-urls", "urls", "",
        "List of URLs to listen on for the /metrics and /health endpoints.",
    ),
    Flag(
        "grpc-server", "string", "native",
        "The client-facing gRPC implementation: native (keelson's own HTTP/2), or grpcio.",
        choices=GRPC_SERVERS,
    ),
    Flag(
        "initial-advertise-peer-urls", "urls", _P,
        "List of this member's peer URLs to advertise to the rest of the cluster.",
    ),
    Flag(
        "advertise-client-urls", "urls", _C,
        "List of this member's client URLs to advertise to the public.",
    ),
    Flag(
        "initial-cluster", "string", "",
        "Initial cluster configuration for bootstrapping "
        "(default: ${name}=<advertised peer URLs>).",
    ),
    Flag(
        "initial-cluster-state", "string", "new", "Initial cluster state ('new' or 'existing').",
        choices=CLUSTER_STATES,
    ),
    Flag(
        "initial-cluster-token", "string", "etcd-cluster",
        "Initial cluster token for the etcd cluster during bootstrap.",
    ),
    Flag("heartbeat-interval", "uint", "100", "Time (in milliseconds) of a heartbeat interval."),
    Flag("election-timeout", "uint", "1000", "Time (in milliseconds) for an election to timeout."),
    Flag(
        "snapshot-count", "uint", "100000",
        "Number of committed transactions to trigger a snapshot to disk.",
    ),
    Flag(
        "experimental-snapshot-catchup-entries", "uint", "5000",
        "Number of entries for a slow follower to catch up after compacting the raft "
        "storage entries.",
    ),
    Flag(
        "experimental-watch-progress-notify-interval", "duration", "10m",
        "Duration of periodical watch progress notification.",
    ),
    Flag(
        "backend-batch-interval", "duration", "0",
        "The longest time before the backend transaction is committed (0: 100ms).",
    ),
    Flag(
        "backend-batch-limit", "int", "0",
        "The most operations before the backend transaction is committed (0: 10000).",
    ),
    Flag(
        "quota-backend-bytes", "int", "0",
        "Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB).",
    ),
    Flag(
        "max-request-bytes", "uint", "1572864",
        "Maximum client request size in bytes the server will accept.",
    ),
    Flag(
        "max-txn-ops", "uint", "128",
        "Maximum number of operations permitted in a transaction.",
    ),
    Flag(
        "auth-token", "string", "simple",
        "Specify auth token specific options ('simple' or "
        "'jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...').",
    ),
    Flag("auth-token-ttl", "uint", "300", "The lifetime in seconds of the auth token."),
    Flag(
        "bcrypt-cost", "uint", "10",
        "Specify bcrypt algorithm cost factor for auth password hashing.",
    ),
    Flag(
        "auto-compaction-mode", "string", "periodic",
        "Interpret 'auto-compaction-retention' one of: periodic|revision.",
    ),
    Flag(
        "auto-compaction-retention", "string", "0",
        "Auto compaction retention: hours or a duration such as 1h30m for periodic, "
        "a revision count for revision. 0 means disable auto compaction.",
    ),
    Flag(
        "log-level", "string", "info",
        "Configures log level. Only supports debug, info, warn, error, panic, or fatal.",
    ),
    Flag("config-file", "string", "", "Path to the server configuration file."),
    Flag("cert-file", "string", "", "Path to the client server TLS cert file.", True),
    Flag("key-file", "string", "", "Path to the client server TLS key file.", True),
    Flag("trusted-ca-file", "string", "", "Path to the client server TLS trusted CA file.", True),
    Flag("client-cert-auth", "bool", "false", "Enable client cert authentication.", True),
    Flag("auto-tls", "bool", "false", "Client TLS using generated certificates.", True),
    Flag("peer-cert-file", "string", "", "Path to the peer server TLS cert file.", True),
    Flag("peer-key-file", "string", "", "Path to the peer server TLS key file.", True),
    Flag(
        "peer-trusted-ca-file", "string", "", "Path to the peer server TLS trusted CA file.", True
    ),
    Flag("peer-client-cert-auth", "bool", "false", "Enable peer client cert authentication.", True),
    Flag("peer-auto-tls", "bool", "false", "Peer TLS using generated certificates.", True),
    # A flag only in etcd 3.4 (no *-transport-security key); checked by keelson.cli.tls.
    Flag("peer-cert-allowed-cn", "string", "", "Allowed CN for inter peer authentication.", True),
)

_BY_NAME: dict[str, Flag] = {f.name: f for f in FLAGS}

# Config-file sections holding the security settings, and the flag each key stands for.
_TLS_SECTIONS: dict[str, dict[str, str]] = {
    "client-transport-security": {
        "cert-file": "cert-file",
        "key-file": "key-file",
        "trusted-ca-file": "trusted-ca-file",
        "client-cert-auth": "client-cert-auth",
        "auto-tls": "auto-tls",
    },
    "peer-transport-security": {
        "cert-file": "peer-cert-file",
        "key-file": "peer-key-file",
        "trusted-ca-file": "peer-trusted-ca-file",
        "client-cert-auth": "peer-client-cert-auth",
        "auto-tls": "peer-auto-tls",
    },
}

Value = str | int | bool | tuple[str, ...]
_ErrorFactory = Callable[[str], ConfigError]


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """A validated ``keelson serve`` configuration.

    URL lists are sorted (listen URLs also de-duplicated), as etcd keeps them;
    ``initial_cluster`` is normalised to ``name=url`` pairs sorted by name, then URL.
    Durations are in milliseconds; ``quota_backend_bytes`` is as given (0 = default,
    negative = no quota; see :attr:`backend_quota`).
    """

    name: str = DEFAULT_NAME
    data_dir: str = f"{DEFAULT_NAME}.keelson"
    wal_dir: str = ""
    listen_peer_urls: tuple[str, ...] = (_P,)
    listen_client_urls: tuple[str, ...] = (_C,)
    listen_metrics_urls: tuple[str, ...] = ()
    grpc_server: str = "native"
    initial_advertise_peer_urls: tuple[str, ...] = (_P,)
    advertise_client_urls: tuple[str, ...] = (_C,)
    initial_cluster: str = f"{DEFAULT_NAME}={_P}"
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    heartbeat_interval: int = 100
    election_timeout: int = 1000
    snapshot_count: int = 100000
    experimental_snapshot_catchup_entries: int = 5000
    experimental_watch_progress_notify_interval: str = "10m"  # a Go duration, as given
    backend_batch_interval: str = "0"  # a Go duration, as given; 0: 100ms
    backend_batch_limit: int = 0  # 0: 10000
    quota_backend_bytes: int = 0
    max_request_bytes: int = 1572864
    max_txn_ops: int = 128
    auth_token: str = "simple"
    auth_token_ttl: int = 300
    bcrypt_cost: int = 10
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    log_level: str = "info"
    config_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    auto_tls: bool = False
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_trusted_ca_file: str = ""
    peer_client_cert_auth: bool = False
    peer_auto_tls: bool = False
    peer_cert_allowed_cn: str = ""

    def __post_init__(self) -> None:
        """Refuse an inconsistent configuration however it was built (also under -O)."""
        for flag_name in (
            "listen-peer-urls",
            "listen-client-urls",
            "initial-advertise-peer-urls",
            "advertise-client-urls",
        ):
            urls = getattr(self, flag_name.replace("-", "_"))
            if not isinstance(urls, tuple) or not urls:
                raise ConfigError(f"--{flag_name} must be a non-empty tuple of URLs")
            _parse_urls(_BY_NAME[flag_name], ",".join(urls), _bad_value(flag_name, urls))
        _validate(self, _parse_initial_cluster(self.initial_cluster))

    def client_tls(self) -> TLSInfo:
        """The client side's TLS settings (``--cert-file`` ... ``--auto-tls``), as given:
        auto-TLS certificates are made later, by :func:`keelson.cli.tls.auto_tls`."""
        from keelson.cli.tls import TLSInfo

        return TLSInfo(
            cert_file=self.cert_file,
            key_file=self.key_file,
            trusted_ca_file=self.trusted_ca_file,
            client_cert_auth=self.client_cert_auth,
            auto_tls=self.auto_tls,
        )

    def peer_tls(self) -> TLSInfo:
        """The peer side's TLS settings (``--peer-cert-file`` ... ``--peer-auto-tls``)."""
        from keelson.cli.tls import TLSInfo

        return TLSInfo(
            cert_file=self.peer_cert_file,
            key_file=self.peer_key_file,
            trusted_ca_file=self.peer_trusted_ca_file,
            client_cert_auth=self.peer_client_cert_auth,
            auto_tls=self.peer_auto_tls,
            allowed_cn=self.peer_cert_allowed_cn,  # added by TLS-P (peer side)
        )

    def client_tls_used(self) -> bool:
        """True when some ``--listen-client-urls`` or ``--listen-metrics-urls`` URL is
        ``https://`` (etcd serves https metrics URLs with the client side's TLS)."""
        urls = self.listen_client_urls + self.listen_metrics_urls
        return any(u.startswith("https://") for u in urls)

    def peer_tls_used(self) -> bool:
        """True when some ``--listen-peer-urls`` URL is ``https://``."""
        return any(u.startswith("https://") for u in self.listen_peer_urls)

    def secure_client_addresses(self) -> frozenset[str]:
        """``host:port`` (as the member formats its listen addresses) of every ``https://``
        client listen URL: the front end serves TLS there and plain HTTP/2 elsewhere."""
        return frozenset(
            _address(_host_port(u)) for u in self.listen_client_urls if u.startswith("https://")
        )

    @property
    def member_dir(self) -> Path:
        return Path(self.data_dir) / "member"

    @property
    def wal_dir_path(self) -> Path:
        """``--wal-dir`` if given, else ``<data-dir>/member/wal``."""
        return Path(self.wal_dir) if self.wal_dir else self.member_dir / "wal"

    @property
    def snap_dir(self) -> Path:
        return self.member_dir / "snap"

    @property
    def watch_progress_notify_interval_s(self) -> float:
        """``--experimental-watch-progress-notify-interval`` in seconds (the server applies
        etcd's rules: not positive means the 10 minute default, below 100 ms means 100 ms)."""
        return parse_go_duration(self.experimental_watch_progress_notify_interval)

    @property
    def backend_batch_interval_s(self) -> float:
        """``--backend-batch-interval`` in seconds (not positive: the server's default)."""
        return parse_go_duration(self.backend_batch_interval)

    def is_bootstrapped(self) -> bool:
        """True when the WAL dir holds a segment: the member restarts from its data dir and,
        as in etcd, ``--initial-cluster`` and ``--initial-cluster-state`` are ignored."""
        path = self.wal_dir_path
        return path.is_dir() and any(path.glob("*.wal"))

    def initial_cluster_members(self) -> dict[str, list[str]]:
        """The bootstrap members: name -> sorted peer URLs, names in sorted order."""
        return _parse_initial_cluster(self.initial_cluster)

    @property
    def member_id(self) -> int:
        """This member's ID when the cluster is bootstrapped from ``--initial-cluster``.

        A member added at runtime (``member add``) gets its ID from the cluster instead.
        """
        return compute_member_id(
            self.initial_cluster_members()[self.name], self.initial_cluster_token
        )

    @property
    def cluster_id(self) -> int:
        """The cluster ID etcd derives from ``--initial-cluster`` and the token."""
        members = self.initial_cluster_members()
        return compute_cluster_id(
            compute_member_id(urls, self.initial_cluster_token) for urls in members.values()
        )

    def client_listen_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` for each ``--listen-client-urls`` entry (IPv6 without brackets)."""
        return [_host_port(u) for u in self.listen_client_urls]

    def metrics_listen_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` for each ``--listen-metrics-urls`` entry (none by default)."""
        return [_host_port(u) for u in self.listen_metrics_urls]

    def secure_metrics_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of the ``https://`` ``--listen-metrics-urls`` entries."""
        return [_host_port(u) for u in self.listen_metrics_urls if u.startswith("https://")]

    def peer_listen_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` for each ``--listen-peer-urls`` entry (IPv6 without brackets)."""
        return [_host_port(u) for u in self.listen_peer_urls]

    @property
    def election_ticks(self) -> int:
        return self.election_timeout // self.heartbeat_interval

    @property
    def backend_quota(self) -> int | None:
        """The backend size quota in bytes, or None when disabled (a negative flag)."""
        if self.quota_backend_bytes < 0:
            return None
        return self.quota_backend_bytes or DEFAULT_QUOTA_BACKEND_BYTES

    @property
    def auto_compaction_retention_seconds(self) -> float | None:
        """Periodic mode: how far back to keep history, in seconds (0 = no auto compaction).

        None in revision mode.
        """
        if self.auto_compaction_mode != "periodic":
            return None
        return _periodic_retention_seconds(self.auto_compaction_retention)

    @property
    def auto_compaction_retention_revisions(self) -> int | None:
        """Revision mode: how many revisions to keep (0 = no auto compaction); else None."""
        if self.auto_compaction_mode != "revision":
            return None
        return int(self.auto_compaction_retention)


def parse_serve_args(
    argv: list[str],
    environ: Mapping[str, str],
    *,
    notices: list[Notice] | None = None,
) -> ServeConfig:
    """Read ``keelson serve``'s configuration from ``argv`` (without ``serve``), ``environ``
    and the config file they may name; raise :class:`ConfigError` on anything wrong.

    Lines etcd would log while doing so are appended to ``notices`` when it is given.
    ``--help`` is not handled here (the caller checks for it first).
    """
    log: list[Notice] = notices if notices is not None else []
    cmdline = _parse_argv(argv)
    config_file = str(cmdline.get("config-file", "")) or environ.get(
        _BY_NAME["config-file"].env_key, ""
    )
    if config_file:
        log.append(
            Notice(
                "info",
                f"Loading server configuration from {_q(config_file)}. Other configuration "
                "command line flags and environment variables will be ignored if provided.",
            )
        )
        values = _read_config_file(config_file, log)
        values["config-file"] = config_file
    else:
        values = dict(cmdline)
        values.update(_from_environ(environ, cmdline, log))
        if "listen-client-urls" in values and "advertise-client-urls" not in values:
            raise ConfigError(
                "--advertise-client-urls is required when --listen-client-urls is set explicitly"
            )
    _default_grpc_server(values, environ)
    config = _build(values)
    _check_tls(config, log)
    if config.is_bootstrapped():
        log.append(
            Notice(
                "info",
                f"the server is already initialized (WAL in {str(config.wal_dir_path)!r}): "
                "--initial-cluster, --initial-cluster-state and --initial-cluster-token "
                "are ignored",
            )
        )
    return config


def _check_tls(config: ServeConfig, log: list[Notice]) -> None:
    """Read each side's certificate files with :func:`keelson.cli.tls.check`: unreadable
    files, a certificate without its key (or the reverse), a key not matching its
    certificate, client-certificate authentication without a trusted CA are refused here,
    at start, rather than at the first connection. (URLs: :func:`_validate_tls_urls`.)"""
    from keelson.cli.tls import Side, TLSError, TLSInfo, auto_tls_ignored, check

    sides: tuple[tuple[Side, TLSInfo], ...] = (
        ("client", config.client_tls()),
        ("peer", config.peer_tls()),
    )
    for side, info in sides:
        if info == TLSInfo():
            continue
        prefix = "--peer-" if side == "peer" else "--"
        for name in ("cert_file", "key_file", "trusted_ca_file"):
            path = getattr(info, name)
            if "\x00" in path:  # open(2) cannot take it; Go's os.Open says so this way
                flag = prefix + name.replace("_", "-")
                raise ConfigError(f"{flag}: open {path}: invalid argument")
        try:
            check(info, side)
        except TLSError as exc:
            raise ConfigError(str(exc)) from None
        ignored = auto_tls_ignored(info, side)
        if ignored:
            log.append(Notice("warn", ignored))


def _default_grpc_server(values: dict[str, Value], environ: Mapping[str, str]) -> None:
    """``KEELSON_GRPC_SERVER`` is the default of ``--grpc-server`` when no source set it.

    keelson's own switch, not an etcd flag variable: it is read whichever source the
    configuration came from (command line, ``ETCD_GRPC_SERVER``, config file), and any of those
    wins over it, so a test run can pick the front end of every member it starts without
    conflicting with launchers that pass ``--grpc-server`` themselves.
    """
    raw = environ.get(GRPC_SERVER_ENV, "")
    if raw and "grpc-server" not in values:
        if raw not in GRPC_SERVERS:
            raise ConfigError(
                f"invalid value {_q(raw)} for {GRPC_SERVER_ENV}: valid values are "
                + " or ".join(_q(c) for c in GRPC_SERVERS)
            )
        values["grpc-server"] = raw


def usage() -> str:
    """The ``keelson serve --help`` text: every flag with its default."""
    lines = ["usage: keelson serve [flags]", "", "flags:"]
    for flag in FLAGS:
        default = "" if flag.kind == "bool" and flag.default == "false" else flag.default
        quoted = default if flag.kind in ("uint", "int") else _q(default)
        shown = f" (default {quoted})" if default else ""
        lines.append(f"  --{flag.name}{shown}")
        lines.append(f"      {flag.help}")
    lines.append("")
    lines.append("Every flag may also be set by ETCD_<FLAG> (e.g. ETCD_INITIAL_CLUSTER).")
    lines.append(f"{GRPC_SERVER_ENV} (grpcio or native) changes the default of --grpc-server.")
    return "\n".join(lines) + "\n"


# --- reading the sources ---------------------------------------------------------------------


def _parse_argv(argv: list[str]) -> dict[str, Value]:
    """Go's ``flag.Parse``: returns the flags given, converted, last occurrence winning."""
    values: dict[str, Value] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            if i < len(argv):
                raise ConfigError(f"'{argv[i]}' is not a valid flag")
            break
        if len(arg) < 2 or not arg.startswith("-"):
            raise ConfigError(f"'{arg}' is not a valid flag")
        body = arg[2:] if arg.startswith("--") else arg[1:]
        if not body or body.startswith("-") or body.startswith("="):
            raise ConfigError(f"bad flag syntax: {arg}")
        name, has_value, raw = body.partition("=")
        flag = _BY_NAME.get(name)
        if flag is None:
            raise ConfigError(f"flag provided but not defined: --{name}")
        if not has_value:
            if flag.kind == "bool":
                raw = "true"
            elif i < len(argv):
                raw = argv[i]
                i += 1
            else:
                raise ConfigError(f"flag needs an argument: --{name}")
        values[name] = _convert(flag, raw, f"flag --{name}")
    return values


def _from_environ(
    environ: Mapping[str, str], cmdline: Mapping[str, Value], log: list[Notice]
) -> dict[str, Value]:
    """etcd's ``SetFlagsFromEnv``: fill unset flags from ``ETCD_*``; refuse shadowed ones."""
    values: dict[str, Value] = {}
    known = {flag.env_key: flag for flag in FLAGS}
    for key in sorted(environ):
        raw = environ[key]
        flag = known.get(key)
        if flag is None:
            if key.startswith(ENV_PREFIX + "_"):
                log.append(
                    Notice("warn", _one_line(f"unrecognized environment variable {key}={raw}"))
                )
            continue
        if flag.name in cmdline:
            raise ConfigError(
                f"conflicting environment variable {_q(key)} is shadowed by corresponding "
                "command-line flag (either unset environment variable or disable flag)"
            )
        if raw == "" or flag.name == "config-file":
            continue
        values[flag.name] = _convert(flag, raw, key)
        log.append(
            Notice("info", _one_line(f"recognized and used environment variable {key}={raw}"))
        )
    return values


def _read_config_file(path: str, log: list[Notice]) -> dict[str, Value]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:  # ValueError: undecodable text, a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"--config-file: cannot read {_q(path)}: {reason}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise ConfigError(f"--config-file: {_q(path)} is not valid YAML: {first}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"--config-file: {_q(path)} must hold a mapping of etcd's keys")
    values: dict[str, Value] = {}
    for key in sorted(doc, key=str):
        item = doc[key]
        if not isinstance(key, str):
            log.append(Notice("warn", f"config file: ignoring unknown key {_q(key)}"))
        elif key in _TLS_SECTIONS:
            values.update(_read_tls_section(key, item, log))
        elif key in _BY_NAME and _BY_NAME[key].security:
            section = "peer-transport-security" if key.startswith("peer-") else (
                "client-transport-security"
            )
            log.append(
                Notice(
                    "warn",
                    f"config file: ignoring key {_q(key)} (etcd reads it from the "
                    f"{_q(section)} section)",
                )
            )
        elif key in _BY_NAME and key != "config-file":
            if item is not None:
                flag = _BY_NAME[key]
                values[key] = _convert(flag, _yaml_scalar(flag, key, item), f"config key {_q(key)}")
        else:
            log.append(Notice("warn", f"config file: ignoring unknown key {_q(key)}"))
    return values


def _read_tls_section(section: str, item: object, log: list[Notice]) -> dict[str, Value]:
    """A ``*-transport-security`` section as the flags its keys stand for; unknown keys
    are ignored with a warning (etcd ignores them silently)."""
    if item is None:
        return {}
    if not isinstance(item, dict):
        raise ConfigError(f"--config-file: {_q(section)} must be a mapping")
    values: dict[str, Value] = {}
    for key in sorted(item, key=str):
        value = item[key]
        flag_name = _TLS_SECTIONS[section].get(str(key))
        if flag_name is None:
            dotted = f"{section}.{key}"
            log.append(Notice("warn", f"config file: ignoring unknown key {_q(dotted)}"))
            continue
        if value is None:
            continue
        flag = _BY_NAME[flag_name]
        dotted = f"{section}.{key}"
        raw = _yaml_scalar(flag, dotted, value)
        values[flag_name] = _convert(flag, raw, f"config key {_q(dotted)}")
    return values


def _yaml_scalar(flag: Flag, key: str, item: object) -> str:
    """A YAML value as the string the flag would have been given."""
    if flag.kind in ("uint", "int"):
        if isinstance(item, int) and not isinstance(item, bool):
            return str(item)
        raise ConfigError(f"--config-file: {_q(key)} must be an integer, not {_q(item)}")
    if flag.kind == "bool":
        if isinstance(item, bool):
            return "true" if item else "false"
        raise ConfigError(f"--config-file: {_q(key)} must be true or false, not {_q(item)}")
    if flag.kind == "duration":  # etcd's YAML holds a time.Duration as integer nanoseconds
        if isinstance(item, int) and not isinstance(item, bool):
            return f"{item}ns"
        raise ConfigError(
            f"--config-file: {_q(key)} must be an integer (nanoseconds), not {_q(item)}"
        )
    if isinstance(item, bool):
        raise ConfigError(f"--config-file: {_q(key)} must be a string, not {_q(item)}")
    if isinstance(item, str | int):
        return str(item)
    what = "a string of comma-separated URLs" if flag.kind == "urls" else "a string"
    raise ConfigError(f"--config-file: {_q(key)} must be {what}, not {_q(item)}")


# --- values ----------------------------------------------------------------------------------

_UINT = re.compile(r"[0-9]+")
_INT = re.compile(r"[-+]?[0-9]+")
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_UINT64_MAX = 2**64 - 1


def _q(value: object) -> str:
    """Quote as Go's ``%q`` does, so messages read as etcd's do."""
    return json.dumps(value if isinstance(value, str) else str(value), ensure_ascii=False)


def _convert(flag: Flag, raw: str, source: str) -> Value:
    """Convert one raw value the way Go's flag.Value for this flag would; refuse bad ones."""

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"invalid value {_q(raw)} for {source}: {reason}")

    value: Value
    if flag.kind == "bool":
        if raw in _TRUE:
            value = True
        elif raw in _FALSE:
            value = False
        else:
            raise bad("parse error")
    elif flag.kind == "uint":
        if not _UINT.fullmatch(raw) or int(raw) > _UINT64_MAX:
            raise bad("parse error")
        value = int(raw)
    elif flag.kind == "int":
        if not _INT.fullmatch(raw) or not -(2**63) <= int(raw) < 2**63:
            raise bad("parse error")
        value = int(raw)
    elif flag.kind == "urls":
        value = _parse_urls(flag, raw, bad) if raw or flag.default else ()
    elif flag.kind == "duration":  # Go's time.ParseDuration; kept as given
        try:
            parse_go_duration(raw)
        except ValueError:
            raise bad("parse error") from None
        value = raw
    else:
        if flag.choices and raw not in flag.choices:
            raise bad("valid values are " + " or ".join(_q(c) for c in flag.choices))
        value = raw
    return value


def _bad_value(flag_name: str, value: object) -> _ErrorFactory:
    def bad(reason: str) -> ConfigError:
        return ConfigError(f"invalid value {_q(value)} for --{flag_name}: {reason}")

    return bad


def _parse_urls(flag: Flag, raw: str, bad: _ErrorFactory) -> tuple[str, ...]:
    urls = [_check_url(flag.name, part.strip(), bad) for part in raw.split(",")]
    if flag.name.startswith("listen-"):
        urls = list(dict.fromkeys(urls))
    return tuple(sorted(urls))


def _check_url(flag_name: str, url: str, bad: _ErrorFactory) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise bad(
            f'URL address does not have the form "host:port" with a numeric port: {url}'
        ) from None
    if parts.scheme in ("unix", "unixs"):
        raise ConfigError(
            f"--{flag_name}: {parts.scheme}:// URLs are not supported (only http:// and "
            f"https://): {url}"
        )
    if parts.scheme not in ("http", "https"):
        raise bad(f"URL scheme must be http or https: {url}")
    if port is None or not parts.hostname or parts.netloc.rsplit(":", 1)[-1] == "":
        raise bad(f'URL address does not have the form "host:port" with a numeric port: {url}')
    if parts.username is not None or parts.password is not None:
        raise bad(f"URL must not contain user information: {url}")
    if parts.path or parts.query or parts.fragment or url.endswith(("?", "#")):
        raise bad(f"URL must not contain a path: {url}")
    host = parts.netloc.rsplit(":", 1)[0]
    if not (_HOST_NAME.fullmatch(host) or _IPV6_LITERAL.fullmatch(host)):
        raise bad(f"URL host is not a host name or IP address: {url}")
    return f"{parts.scheme}://{parts.netloc}"  # the scheme lower-cased, as Go's url.URL does


_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_IPV6_LITERAL = re.compile(r"\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?\]")


def _address(host_port: tuple[str, int]) -> str:
    return f"{host_port[0]}:{host_port[1]}"


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:  # checked when parsed; kept under -O
        raise ConfigError(f'URL address does not have the form "host:port": {url}')
    return parts.hostname, parts.port


def _parse_initial_cluster(text: str) -> dict[str, list[str]]:
    """``name=url,name=url`` -> name -> sorted URLs (names sorted). Raises ConfigError."""
    members: dict[str, list[str]] = {}
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, eq, url = entry.partition("=")
        if not eq or not name:
            raise ConfigError(
                f"invalid value {_q(text)} for --initial-cluster: entry {_q(entry)} is not name=url"
            )
        members.setdefault(name, []).append(url.strip())
    if not members:
        raise ConfigError("--initial-cluster is empty: it must name at least one member=url")
    flag = _BY_NAME["initial-cluster"]

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"invalid value {_q(text)} for --initial-cluster: {reason}")

    return {
        name: sorted(_check_url(flag.name, url, bad) for url in members[name])
        for name in sorted(members)
    }


def _format_cluster(members: Mapping[str, list[str]]) -> str:
    return ",".join(f"{name}={url}" for name in sorted(members) for url in members[name])


_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3,
    "s": 1.0, "m": 60.0, "h": 3600.0,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.Duration`` string (``1h30m``, ``90s``, ``-1.5h``) into seconds.

    Raises ValueError with Go's message (``time: unknown unit "x" in duration "1x"``).
    """
    quoted = '"' + text + '"'
    rest = text
    sign = 1.0
    if rest[:1] in ("-", "+"):
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"time: invalid duration {quoted}")
    total = 0.0
    while rest:
        match = _DURATION_PART.match(rest)
        assert match is not None  # the pattern matches the empty string
        number, unit = match.group(1), match.group(2)
        if number in ("", "."):
            raise ValueError(f"time: invalid duration {quoted}")
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        scale = _DURATION_UNITS.get(unit)
        if scale is None:
            # Go takes the unit up to the next digit or dot; the pattern does the same.
            raise ValueError(f'time: unknown unit "{unit}" in duration {quoted}')
        total += float(number) * scale
        rest = rest[match.end() :]
    return sign * total


def _periodic_retention_seconds(retention: str) -> float:
    if _UINT.fullmatch(retention):
        return int(retention) * 3600.0
    return parse_go_duration(retention)


# --- building and checking the whole ---------------------------------------------------------


def _build(values: Mapping[str, Value]) -> ServeConfig:
    def get(name: str) -> Value:
        if name in values:
            return values[name]
        flag = _BY_NAME[name]
        return _convert(flag, flag.default, f"--{name}") if flag.kind != "string" else flag.default

    def text(name: str) -> str:
        value = get(name)
        assert isinstance(value, str)
        return value

    def number(name: str) -> int:
        value = get(name)
        assert isinstance(value, int) and not isinstance(value, bool)
        return value

    def urls(name: str) -> tuple[str, ...]:
        value = get(name)
        assert isinstance(value, tuple)
        return value

    def flag(name: str) -> bool:
        value = get(name)
        assert isinstance(value, bool)
        return value

    name = text("name")
    if not name:
        raise ConfigError("--name must not be empty")
    if "," in name or "=" in name:
        raise ConfigError(f"--name {_q(name)} must not contain ',' or '='")
    advertise_peer = urls("initial-advertise-peer-urls")
    cluster_text = text("initial-cluster") or _format_cluster({name: list(advertise_peer)})
    members = _parse_initial_cluster(cluster_text)

    return ServeConfig(
        name=name,
        data_dir=text("data-dir") or f"{name}.keelson",
        wal_dir=text("wal-dir"),
        listen_peer_urls=urls("listen-peer-urls"),
        listen_client_urls=urls("listen-client-urls"),
        listen_metrics_urls=urls("listen-metrics-urls"),
        grpc_server=text("grpc-server"),
        initial_advertise_peer_urls=advertise_peer,
        advertise_client_urls=urls("advertise-client-urls"),
        initial_cluster=_format_cluster(members),
        initial_cluster_state=text("initial-cluster-state"),
        initial_cluster_token=text("initial-cluster-token"),
        heartbeat_interval=number("heartbeat-interval"),
        election_timeout=number("election-timeout"),
        snapshot_count=number("snapshot-count"),
        experimental_snapshot_catchup_entries=number("experimental-snapshot-catchup-entries"),
        experimental_watch_progress_notify_interval=text(
            "experimental-watch-progress-notify-interval"
        ),
        backend_batch_interval=text("backend-batch-interval"),
        backend_batch_limit=number("backend-batch-limit"),
        quota_backend_bytes=number("quota-backend-bytes"),
        max_request_bytes=number("max-request-bytes"),
        max_txn_ops=number("max-txn-ops"),
        auth_token=text("auth-token"),
        auth_token_ttl=number("auth-token-ttl"),
        bcrypt_cost=number("bcrypt-cost"),
        auto_compaction_mode=text("auto-compaction-mode"),
        auto_compaction_retention=text("auto-compaction-retention"),
        log_level=text("log-level"),
        config_file=text("config-file"),
        cert_file=text("cert-file"),
        key_file=text("key-file"),
        trusted_ca_file=text("trusted-ca-file"),
        client_cert_auth=flag("client-cert-auth"),
        auto_tls=flag("auto-tls"),
        peer_cert_file=text("peer-cert-file"),
        peer_key_file=text("peer-key-file"),
        peer_trusted_ca_file=text("peer-trusted-ca-file"),
        peer_client_cert_auth=flag("peer-client-cert-auth"),
        peer_auto_tls=flag("peer-auto-tls"),
        peer_cert_allowed_cn=text("peer-cert-allowed-cn"),
    )


def _validate(config: ServeConfig, members: Mapping[str, list[str]]) -> None:
    """etcd's ``Config.Validate`` and bootstrap checks, in etcd's order where it matters."""
    if not config.name:
        raise ConfigError("--name must not be empty")
    for flag in FLAGS:
        if flag.kind == "uint" and getattr(config, flag.name.replace("-", "_")) < 0:
            raise ConfigError(f"--{flag.name} must not be negative")
    tick, election = config.heartbeat_interval, config.election_timeout
    if tick == 0:
        raise ConfigError(f"--heartbeat-interval must be >0 (set to {tick}ms)")
    if election == 0:
        raise ConfigError(f"--election-timeout must be >0 (set to {election}ms)")
    if 5 * tick > election:
        raise ConfigError(
            f"--election-timeout[{election}ms] should be at least as 5 times as "
            f"--heartbeat-interval[{tick}ms]"
        )
    if election > MAX_ELECTION_TIMEOUT_MS:
        raise ConfigError(
            f"--election-timeout[{election}ms] is too long, and should be set less than "
            f"{MAX_ELECTION_TIMEOUT_MS}ms"
        )
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(
            f"--log-level: unknown level {_q(config.log_level)} "
            f"(want one of {', '.join(LOG_LEVELS)})"
        )
    _validate_compaction(config.auto_compaction_mode, config.auto_compaction_retention)
    _validate_auth_token(config.auth_token)
    _validate_tls_urls(config)
    if not config.is_bootstrapped():
        _validate_bootstrap(config, members)


_TLS_FIELDS = ("cert-file", "key-file", "trusted-ca-file", "client-cert-auth", "auto-tls")


def _validate_tls_urls(config: ServeConfig) -> None:
    """Each side's TLS settings against its listen URLs (no file is read here).

    An ``https://`` listen URL needs a certificate and key, or auto TLS (etcd's refusals,
    in its words); TLS settings for a side with no ``https://`` listen URL are refused too,
    as the issue asks: etcd 3.4 only warns ("scheme is HTTP while key and cert files are
    present; ignoring key and cert files") and serves plain text, which an operator who gave
    certificates almost certainly did not mean.
    """
    for side, prefix, listen_flag in (
        ("client", "", "listen-client-urls"),
        ("peer", "peer-", "listen-peer-urls"),
    ):
        names = [prefix + f for f in _TLS_FIELDS]
        if side == "peer":
            names.append("peer-cert-allowed-cn")  # the peer-only flag (added by TLS-P)
        given = [n for n in names if getattr(config, n.replace("-", "_")) not in ("", False)]
        listen = getattr(config, listen_flag.replace("-", "_"))
        secure = [u for u in listen if u.startswith("https://")]
        metrics = [u for u in config.listen_metrics_urls if u.startswith("https://")]
        if side == "client" and metrics and not secure:
            secure, listen_flag = metrics, "listen-metrics-urls"
        cert = getattr(config, f"{prefix}cert_file".replace("-", "_"))
        key = getattr(config, f"{prefix}key_file".replace("-", "_"))
        auto = getattr(config, f"{prefix}auto_tls".replace("-", "_"))
        if not secure:
            if given:
                raise ConfigError(
                    f"{', '.join('--' + n for n in given)} given but no --{listen_flag} URL is "
                    f"https:// (etcd 3.4 would ignore the {side} TLS settings; keelson refuses)"
                )
            continue
        if not cert and not key and not auto:
            if listen_flag == "listen-client-urls":
                raise ConfigError(
                    f"TLS key/cert (--cert-file, --key-file) must be provided for client url "
                    f"{secure[0]} with HTTPS scheme"
                )
            flags = "--peer-cert-file, --peer-key-file" if side == "peer" else (
                "--cert-file, --key-file"
            )
            raise ConfigError(
                f"{flags}: cannot listen on TLS for {_address(_host_port(secure[0]))}: "
                "KeyFile and CertFile are not presented"
            )


def _validate_auth_token(spec: str) -> None:
    """``--auth-token``: its type and option syntax (key files are read at start)."""
    try:
        kind, _ = parse_token_options(spec)
    except AuthOptionsError as e:
        raise ConfigError(str(e)) from None
    if kind not in ("simple", "jwt"):
        raise ConfigError(f"--auth-token: unknown token type {_q(kind)} (want simple or jwt)")


def _validate_compaction(mode: str, retention: str) -> None:
    if mode not in COMPACTION_MODES:
        raise ConfigError(f"unknown auto-compaction-mode {_q(mode)} (want periodic or revision)")
    if mode == "revision":
        if not _UINT.fullmatch(retention):
            raise ConfigError(
                f"invalid --auto-compaction-retention {_q(retention)}: revision mode needs a "
                "non-negative integer number of revisions"
            )
        return
    try:
        seconds = _periodic_retention_seconds(retention)
    except ValueError as exc:
        raise ConfigError(f"invalid --auto-compaction-retention {_q(retention)}: {exc}") from None
    if seconds < 0:
        raise ConfigError(f"invalid --auto-compaction-retention {_q(retention)}: negative duration")


def _validate_bootstrap(config: ServeConfig, members: Mapping[str, list[str]]) -> None:
    """etcd's ``VerifyBootstrap`` / ``VerifyJoinExisting`` checks on ``--initial-cluster``."""
    if config.name not in members:
        raise ConfigError(
            f"couldn't find local name {_q(config.name)} in the initial cluster configuration"
        )
    seen: dict[str, str] = {}
    for name in sorted(members):
        for url in members[name]:
            if url in seen:
                raise ConfigError(f"initial cluster {config.initial_cluster} has duplicate url")
            seen[url] = name
    if config.initial_cluster_state != "new":
        return
    in_cluster = members[config.name]
    advertised = list(config.initial_advertise_peer_urls)
    missing = [u for u in in_cluster if u not in advertised]
    if missing:
        has = ",".join(f"{config.name}={u}" for u in missing)
        raise ConfigError(
            f"--initial-cluster has {has} but missing from "
            f"--initial-advertise-peer-urls={','.join(advertised)}"
        )
    extra = [u for u in advertised if u not in in_cluster]
    if extra:
        umap = ",".join(f"{config.name}={u}" for u in advertised)
        raise ConfigError(
            f"--initial-advertise-peer-urls has {','.join(extra)} but missing from "
            f"--initial-cluster={umap}"
        )
