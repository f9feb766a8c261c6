"""``keelson serve`` configuration: etcd 3.4's flags from argv, ETCD_* variables and YAML.

Expected messages were taken from etcd 3.4.23 (Debian's etcd-server) run with the same flags.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from keelson.cli.config import (
    FLAGS,
    ConfigError,
    Notice,
    ServeConfig,
    parse_go_duration,
    parse_serve_args,
    usage,
)
from keelson.cli.identity import compute_cluster_id, compute_member_id, format_id
from keelson.testing.etcd import free_port

C2 = ["--advertise-client-urls", "http://127.0.0.1:3379"]


def parse(argv: list[str], env: dict[str, str] | None = None) -> ServeConfig:
    return parse_serve_args(argv, env or {})


def refused(argv: list[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(argv, env)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_are_etcds_except_data_dir_and_url_hosts() -> None:
    config = parse([])
    assert config == ServeConfig()
    assert config.name == "default"
    assert config.data_dir == "default.keelson"  # etcd: default.etcd
    assert config.wal_dir == ""
    assert config.listen_client_urls == ("http://127.0.0.1:2379",)  # etcd: localhost
    assert config.advertise_client_urls == ("http://127.0.0.1:2379",)
    assert config.listen_peer_urls == ("http://127.0.0.1:2380",)
    assert config.initial_advertise_peer_urls == ("http://127.0.0.1:2380",)
    assert config.initial_cluster == "default=http://127.0.0.1:2380"
    assert config.initial_cluster_state == "new"
    assert config.initial_cluster_token == "etcd-cluster"
    assert config.heartbeat_interval == 100
    assert config.election_timeout == 1000
    assert config.snapshot_count == 100000
    assert config.quota_backend_bytes == 0
    assert config.max_request_bytes == 1572864
    assert config.max_txn_ops == 128
    assert config.auto_compaction_mode == "periodic"
    assert config.auto_compaction_retention == "0"
    assert config.log_level == "info"
    assert config.config_file == ""


def test_data_dir_and_initial_cluster_default_from_name_and_advertised_urls() -> None:
    config = parse(
        ["--name", "n1", "--initial-advertise-peer-urls", "http://10.0.0.2:2380,http://10.0.0.1:2380"]
    )
    assert config.data_dir == "n1.keelson"
    assert config.initial_cluster == "n1=http://10.0.0.1:2380,n1=http://10.0.0.2:2380"
    assert config.initial_cluster_members() == {
        "n1": ["http://10.0.0.1:2380", "http://10.0.0.2:2380"]
    }


# --- every flag, from each source -------------------------------------------------------------

# (flag, command-line value, YAML value, attribute, expected, extra argv needed)
CASES: list[tuple[str, str, Any, str, Any, list[str]]] = [
    ("name", "n1", "n1", "name", "n1", []),
    ("data-dir", "/srv/k", "/srv/k", "data_dir", "/srv/k", []),
    ("wal-dir", "/srv/w", "/srv/w", "wal_dir", "/srv/w", []),
    (
        "listen-peer-urls", "http://127.0.0.1:3380,http://10.0.0.1:3380,http://127.0.0.1:3380",
        "http://127.0.0.1:3380,http://10.0.0.1:3380", "listen_peer_urls",
        ("http://10.0.0.1:3380", "http://127.0.0.1:3380"), [],
    ),
    (
        "listen-client-urls", "http://127.0.0.1:3379", "http://127.0.0.1:3379",
        "listen_client_urls", ("http://127.0.0.1:3379",), C2,
    ),
    (
        "listen-metrics-urls", "http://127.0.0.1:3381,http://127.0.0.1:3382",
        "http://127.0.0.1:3381,http://127.0.0.1:3382",
        "listen_metrics_urls", ("http://127.0.0.1:3381", "http://127.0.0.1:3382"), [],
    ),
    ("grpc-server", "native", "native", "grpc_server", "native", []),
    (
        "initial-advertise-peer-urls", "http://10.0.0.1:2380", "http://10.0.0.1:2380",
        "initial_cluster", "default=http://10.0.0.1:2380", [],
    ),
    (
        "advertise-client-urls", "http://10.0.0.1:2379,http://10.0.0.2:2379",
        "http://10.0.0.1:2379,http://10.0.0.2:2379", "advertise_client_urls",
        ("http://10.0.0.1:2379", "http://10.0.0.2:2379"), [],
    ),
    (
        "initial-cluster", "default=http://127.0.0.1:2380,b=http://10.0.0.2:2380",
        "default=http://127.0.0.1:2380,b=http://10.0.0.2:2380", "initial_cluster",
        "b=http://10.0.0.2:2380,default=http://127.0.0.1:2380", [],
    ),
    ("initial-cluster-state", "existing", "existing", "initial_cluster_state", "existing", []),
    ("initial-cluster-token", "tok-1", "tok-1", "initial_cluster_token", "tok-1", []),
    ("heartbeat-interval", "150", 150, "heartbeat_interval", 150, []),
    ("election-timeout", "3000", 3000, "election_timeout", 3000, []),
    ("snapshot-count", "5000", 5000, "snapshot_count", 5000, []),
    (
        "experimental-snapshot-catchup-entries", "10", 10,
        "experimental_snapshot_catchup_entries", 10, [],
    ),
    (  # etcd's YAML holds a time.Duration as integer nanoseconds
        "experimental-watch-progress-notify-interval", "1m30s", 90_000_000_000,
        "watch_progress_notify_interval_s", 90.0, [],
    ),
    ("backend-batch-interval", "250ms", 250_000_000, "backend_batch_interval_s", 0.25, []),
    ("backend-batch-limit", "500", 500, "backend_batch_limit", 500, []),
    ("quota-backend-bytes", "1048576", 1048576, "quota_backend_bytes", 1048576, []),
    ("max-request-bytes", "2097152", 2097152, "max_request_bytes", 2097152, []),
    ("max-txn-ops", "256", 256, "max_txn_ops", 256, []),
    ("auth-token", "jwt,sign-method=RS256", "jwt,sign-method=RS256", "auth_token",
     "jwt,sign-method=RS256", []),
    ("auth-token-ttl", "60", 60, "auth_token_ttl", 60, []),
    ("bcrypt-cost", "4", 4, "bcrypt_cost", 4, []),
    ("auto-compaction-mode", "revision", "revision", "auto_compaction_mode", "revision", []),
    ("auto-compaction-retention", "1h30m", "1h30m", "auto_compaction_retention", "1h30m", []),
    ("log-level", "debug", "debug", "log_level", "debug", []),
]


def test_cases_cover_every_supported_flag() -> None:
    covered = {case[0] for case in CASES} | {"config-file"}
    assert covered == {f.name for f in FLAGS if not f.security}


@pytest.mark.parametrize(("flag", "raw", "yaml_value", "attr", "expected", "extra"), CASES)
def test_flag_from_argv_in_every_form(
    flag: str, raw: str, yaml_value: Any, attr: str, expected: Any, extra: list[str]
) -> None:
    for argv in ([f"--{flag}", raw], [f"--{flag}={raw}"], [f"-{flag}", raw], [f"-{flag}={raw}"]):
        assert getattr(parse(argv + extra), attr) == expected, argv


@pytest.mark.parametrize(("flag", "raw", "yaml_value", "attr", "expected", "extra"), CASES)
def test_flag_from_environment(
    flag: str, raw: str, yaml_value: Any, attr: str, expected: Any, extra: list[str]
) -> None:
    key = "ETCD_" + flag.upper().replace("-", "_")
    notices: list[Notice] = []
    config = parse_serve_args(extra, {key: raw, "PATH": "/bin"}, notices=notices)
    assert getattr(config, attr) == expected
    assert Notice("info", f"recognized and used environment variable {key}={raw}") in notices


@pytest.mark.parametrize(("flag", "raw", "yaml_value", "attr", "expected", "extra"), CASES)
def test_flag_from_config_file(
    tmp_path: Path, flag: str, raw: str, yaml_value: Any, attr: str, expected: Any, extra: list[str]
) -> None:
    path = tmp_path / "keelson.yml"
    path.write_text(yaml.safe_dump({flag: yaml_value}))
    config = parse(["--config-file", str(path)])
    assert getattr(config, attr) == expected
    assert config.config_file == str(path)


def test_last_occurrence_of_a_flag_wins() -> None:
    assert parse(["--name", "a", "--name=b"]).name == "b"


def test_double_dash_ends_flags() -> None:
    assert parse(["--name", "a", "--"]).name == "a"
    assert refused(["--", "x"]) == "'x' is not a valid flag"


# --- precedence -------------------------------------------------------------------------------


def test_environment_fills_flags_not_on_the_command_line() -> None:
    config = parse(["--name", "flag"], {"ETCD_INITIAL_CLUSTER_TOKEN": "env-token"})
    assert config.name == "flag"
    assert config.initial_cluster_token == "env-token"


def test_flag_set_both_ways_is_refused_as_etcd_34_does() -> None:
    # etcd 3.4.23 exits: the variable is shadowed by the flag; even an empty one.
    expected = (
        'conflicting environment variable "ETCD_NAME" is shadowed by corresponding '
        "command-line flag (either unset environment variable or disable flag)"
    )
    assert refused(["--name", "flag"], {"ETCD_NAME": "env"}) == expected
    assert refused(["--name", "flag"], {"ETCD_NAME": ""}) == expected


def test_empty_environment_variable_is_ignored() -> None:
    assert parse([], {"ETCD_NAME": ""}).name == "default"


def test_unknown_etcd_variable_is_a_warning_and_others_are_ignored() -> None:
    notices: list[Notice] = []
    parse_serve_args([], {"ETCD_FOO": "1", "HOME": "/root"}, notices=notices)
    assert notices == [Notice("warn", "unrecognized environment variable ETCD_FOO=1")]


def test_control_characters_are_escaped_in_messages() -> None:
    assert refused(["a\nb"]) == "'a\\nb' is not a valid flag"
    notices: list[Notice] = []
    parse_serve_args([], {"ETCD_FOO": "x\ny"}, notices=notices)
    assert notices == [Notice("warn", "unrecognized environment variable ETCD_FOO=x\\ny")]


def test_bad_environment_value_names_the_variable() -> None:
    assert (
        refused([], {"ETCD_HEARTBEAT_INTERVAL": "abc"})
        == 'invalid value "abc" for ETCD_HEARTBEAT_INTERVAL: parse error'
    )


def test_config_file_wins_over_flags_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("name: fromfile\nheartbeat-interval: 50\n")
    notices: list[Notice] = []
    config = parse_serve_args(
        ["--config-file", str(path), "--name", "flag", "--max-txn-ops", "7"],
        {"ETCD_NAME": "env", "ETCD_SNAPSHOT_COUNT": "9"},
        notices=notices,
    )
    assert config.name == "fromfile"
    assert config.heartbeat_interval == 50
    assert config.max_txn_ops == 128
    assert config.snapshot_count == 100000
    assert notices[0].level == "info"
    assert "Other configuration command line flags and environment variables will be ignored" in (
        notices[0].message
    )


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("name: fromfile\n")
    config = parse([], {"ETCD_CONFIG_FILE": str(path), "ETCD_NAME": "env"})
    assert config.name == "fromfile"
    assert config.config_file == str(path)


def test_keelson_grpc_server_variable_is_only_a_default(tmp_path: Path) -> None:
    env = {"KEELSON_GRPC_SERVER": "grpcio"}
    assert parse([]).grpc_server == "native"
    assert parse([], env).grpc_server == "grpcio"
    assert parse([], {"KEELSON_GRPC_SERVER": ""}).grpc_server == "native"
    # Every etcd-style source wins over it, and none conflicts with it.
    assert parse(["--grpc-server", "native"], env).grpc_server == "native"
    assert parse([], {**env, "ETCD_GRPC_SERVER": "native"}).grpc_server == "native"
    path = tmp_path / "c.yml"
    path.write_text("name: fromfile\n")
    assert parse(["--config-file", str(path)], env).grpc_server == "grpcio"
    path.write_text("grpc-server: native\n")
    assert parse(["--config-file", str(path)], env).grpc_server == "native"
    assert refused([], {"KEELSON_GRPC_SERVER": "h2o"}) == (
        'invalid value "h2o" for KEELSON_GRPC_SERVER: valid values are "grpcio" or "native"'
    )
    assert "KEELSON_GRPC_SERVER" in usage()


def test_config_file_full_etcd_style(tmp_path: Path) -> None:
    path = tmp_path / "etcd.conf.yml"
    path.write_text(
        """
name: 'infra1'
data-dir: /var/lib/k
wal-dir:
snapshot-count: 10000
heartbeat-interval: 100
election-timeout: 1000
quota-backend-bytes: 0
listen-peer-urls: http://10.0.0.1:2380
listen-client-urls: http://10.0.0.1:2379,http://127.0.0.1:2379
max-txn-ops: 128
max-request-bytes: 1572864
initial-advertise-peer-urls: http://10.0.0.1:2380
advertise-client-urls: http://10.0.0.1:2379
initial-cluster: infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380
initial-cluster-token: 'etcd-cluster-1'
initial-cluster-state: 'new'
auto-compaction-mode: periodic
auto-compaction-retention: 1
log-level: warn
enable-v2: true
client-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  auto-tls: false
peer-transport-security:
  cert-file: ''
  auto-tls: false
"""
    )
    notices: list[Notice] = []
    config = parse_serve_args(["--config-file", str(path)], {}, notices=notices)
    assert config.name == "infra1"
    assert config.data_dir == "/var/lib/k"
    assert config.wal_dir == ""
    assert config.listen_client_urls == ("http://10.0.0.1:2379", "http://127.0.0.1:2379")
    assert config.initial_cluster_members() == {
        "infra1": ["http://10.0.0.1:2380"],
        "infra2": ["http://10.0.0.2:2380"],
    }
    assert config.auto_compaction_retention == "1"
    assert config.auto_compaction_retention_seconds == 3600.0
    assert config.log_level == "warn"
    assert Notice("warn", 'config file: ignoring unknown key "enable-v2"') in notices


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("heartbeat-interval: '100'", "\"heartbeat-interval\" must be an integer"),
        ("heartbeat-interval: true", "\"heartbeat-interval\" must be an integer"),
        ("name: [a, b]", '"name" must be a string'),
        ("listen-client-urls: [http://a:1]", '"listen-client-urls" must be a string of comma'),
        ("- a\n- b", "must hold a mapping of etcd's keys"),
        ("name: [unclosed", "is not valid YAML"),
        ("heartbeat-interval: 300", "--election-timeout[1000ms] should be at least as 5 times"),
        (
            "client-transport-security:\n  cert-file: /c.pem",
            "--cert-file given but no --listen-client-urls URL is https://",
        ),
        (
            "peer-transport-security:\n  auto-tls: true",
            "--peer-auto-tls given but no --listen-peer-urls URL is https://",
        ),
        (
            "peer-transport-security:\n  auto-tls: 'yes'",
            '"peer-transport-security.auto-tls" must be true or false',
        ),
        ("peer-transport-security: yes", "\"peer-transport-security\" must be a mapping"),
        (
            "experimental-watch-progress-notify-interval: 10m",
            '"experimental-watch-progress-notify-interval" must be an integer (nanoseconds)',
        ),
        (
            "listen-peer-urls: https://127.0.0.1:2380",
            "--peer-cert-file, --peer-key-file: cannot listen on TLS for 127.0.0.1:2380: "
            "KeyFile and CertFile are not presented",
        ),
    ],
)
def test_config_file_refusals(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(text + "\n")
    assert message in refused(["--config-file", str(path)])


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent.yml"
    assert refused(["--config-file", str(path)]) == (
        f'--config-file: cannot read "{path}": No such file or directory'
    )


def test_unreadable_config_file_paths_are_refused(tmp_path: Path) -> None:
    assert refused(["--config-file", "a\x00b"]).startswith('--config-file: cannot read "a\\u0000b"')
    binary = tmp_path / "c.yml"
    binary.write_bytes(b"name: \xff\xfe\n")
    message = refused(["--config-file", str(binary)])
    assert message.startswith(f'--config-file: cannot read "{binary}"')
    assert refused(["--config-file", str(tmp_path)]).startswith("--config-file: cannot read")


def test_empty_config_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("")
    assert parse(["--config-file", str(path)]) == ServeConfig(config_file=str(path))


# --- refusals ---------------------------------------------------------------------------------

SECURITY = [f.name for f in FLAGS if f.security]


def test_security_flags_refused_with_only_http_urls() -> None:
    # etcd 3.4 warns and ignores them; keelson refuses, as issue 5 asks.
    for flag in SECURITY:
        kind = next(f.kind for f in FLAGS if f.name == flag)
        argv = [f"--{flag}"] if kind == "bool" else [f"--{flag}", "/etc/k/x.pem"]
        side = "peer" if flag.startswith("peer-") else "client"
        listen = "--listen-peer-urls" if side == "peer" else "--listen-client-urls"
        expected = (
            f"--{flag} given but no {listen} URL is https:// (etcd 3.4 would ignore the "
            f"{side} TLS settings; keelson refuses)"
        )
        assert refused(argv) == expected
        env_value = "true" if kind == "bool" else "/etc/k/x.pem"
        assert refused([], {"ETCD_" + flag.upper().replace("-", "_"): env_value}) == expected


def _pki(tmp_path: Path) -> tuple[str, str, str, str]:
    """(ca, cert, key, another key) files of a test CA and a server certificate."""
    from keelson.testing.certs import make_ca

    ca = make_ca(tmp_path, "ca")
    pair = ca.issue(tmp_path, "server", cn="server")
    other = ca.issue(tmp_path, "other", cn="other")
    return ca.cert_file, pair.cert_file, pair.key_file, other.key_file


_HTTPS_CLIENT = [
    "--listen-client-urls", "https://127.0.0.1:3379",
    "--advertise-client-urls", "https://127.0.0.1:3379",
]
_HTTPS_PEER = [
    "--listen-peer-urls", "https://127.0.0.1:3380",
    "--initial-advertise-peer-urls", "https://127.0.0.1:3380",
]


def test_client_and_peer_tls_from_flags(tmp_path: Path) -> None:
    ca, cert, key, _ = _pki(tmp_path)
    config = parse(
        [
            *_HTTPS_CLIENT, *_HTTPS_PEER,
            "--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth",
            "--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", ca,
            "--peer-client-cert-auth",
        ]
    )
    assert config.listen_client_urls == ("https://127.0.0.1:3379",)
    assert config.initial_cluster == "default=https://127.0.0.1:3380"
    client, peer = config.client_tls(), config.peer_tls()
    assert (client.cert_file, client.key_file, client.trusted_ca_file) == (cert, key, ca)
    assert client.client_cert_auth and not client.auto_tls
    assert (peer.cert_file, peer.key_file, peer.trusted_ca_file) == (cert, key, ca)
    assert peer.client_cert_auth
    assert config.secure_client_addresses() == frozenset({"127.0.0.1:3379"})


def test_tls_from_environment_and_config_file(tmp_path: Path) -> None:
    ca, cert, key, _ = _pki(tmp_path)
    env = {
        "ETCD_LISTEN_CLIENT_URLS": "https://127.0.0.1:3379,http://127.0.0.1:3378",
        "ETCD_ADVERTISE_CLIENT_URLS": "https://127.0.0.1:3379",
        "ETCD_CERT_FILE": cert, "ETCD_KEY_FILE": key, "ETCD_TRUSTED_CA_FILE": ca,
        "ETCD_CLIENT_CERT_AUTH": "true",
    }
    from_env = parse([], env)
    assert from_env.client_tls() == replace(
        from_env.client_tls(), cert_file=cert, key_file=key, trusted_ca_file=ca,
        client_cert_auth=True,
    )
    assert from_env.secure_client_addresses() == frozenset({"127.0.0.1:3379"})
    path = tmp_path / "c.yml"
    path.write_text(
        f"""
listen-client-urls: https://127.0.0.1:3379
advertise-client-urls: https://127.0.0.1:3379
listen-peer-urls: https://127.0.0.1:3380
initial-advertise-peer-urls: https://127.0.0.1:3380
cert-file: /ignored/at/top/level.pem
client-transport-security:
  cert-file: {cert}
  key-file: {key}
  trusted-ca-file: {ca}
  client-cert-auth: true
  crl-file: ''
peer-transport-security:
  auto-tls: true
"""
    )
    notices: list[Notice] = []
    config = parse_serve_args(["--config-file", str(path)], {}, notices=notices)
    assert from_env.client_tls() == config.client_tls()
    assert config.peer_tls().auto_tls and config.peer_tls().empty()
    assert Notice(
        "warn",
        'config file: ignoring key "cert-file" (etcd reads it from the '
        '"client-transport-security" section)',
    ) in notices
    assert Notice(
        "warn", 'config file: ignoring unknown key "client-transport-security.crl-file"'
    ) in notices


def test_auto_tls_with_certs_is_ignored_with_etcds_warning(tmp_path: Path) -> None:
    _, cert, key, _ = _pki(tmp_path)
    notices: list[Notice] = []
    parse_serve_args(
        [*_HTTPS_CLIENT, "--cert-file", cert, "--key-file", key, "--auto-tls"], {},
        notices=notices,
    )
    assert Notice("warn", "ignoring client auto TLS since certs given") in notices


def test_tls_refusals(tmp_path: Path) -> None:
    ca, cert, key, other_key = _pki(tmp_path)
    missing = str(tmp_path / "absent.pem")
    assert refused(_HTTPS_CLIENT) == (
        "TLS key/cert (--cert-file, --key-file) must be provided for client url "
        "https://127.0.0.1:3379 with HTTPS scheme"
    )
    assert refused(_HTTPS_PEER) == (
        "--peer-cert-file, --peer-key-file: cannot listen on TLS for 127.0.0.1:3380: "
        "KeyFile and CertFile are not presented"
    )
    assert refused([*_HTTPS_CLIENT, "--cert-file", cert]) == (
        f"--cert-file/--key-file: KeyFile and CertFile must both be present[key: , cert: {cert}]"
    )
    assert refused([*_HTTPS_CLIENT, "--cert-file", missing, "--key-file", key]) == (
        f"--cert-file: open {missing}: no such file or directory"
    )
    assert refused([*_HTTPS_PEER, "--peer-cert-file", cert, "--peer-key-file", other_key]) == (
        "--peer-cert-file/--peer-key-file: tls: private key does not match public key"
    )
    assert refused([*_HTTPS_CLIENT, "--cert-file", cert, "--key-file", key,
                    "--client-cert-auth"]).startswith(
        "--client-cert-auth requires --trusted-ca-file"
    )
    assert refused([*_HTTPS_CLIENT, "--auto-tls", "--trusted-ca-file", missing]) == (
        f"--trusted-ca-file: open {missing}: no such file or directory"
    )
    # https on the client side does not make peer TLS flags acceptable on http peer URLs
    assert refused([*_HTTPS_CLIENT, "--auto-tls", "--peer-auto-tls"]).startswith(
        "--peer-auto-tls given but no --listen-peer-urls URL is https://"
    )
    assert parse([*_HTTPS_CLIENT, "--auto-tls"]).client_tls().auto_tls


def test_security_booleans_set_false_are_accepted() -> None:
    assert parse(["--auto-tls=false", "--client-cert-auth=0"]) == ServeConfig()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "flag provided but not defined: --bogus"),
        (["--bogus=1"], "flag provided but not defined: --bogus"),
        (["stray"], "'stray' is not a valid flag"),
        (["--name", "a", "stray"], "'stray' is not a valid flag"),
        (["--auto-tls=false", "false"], "'false' is not a valid flag"),
        (["---name=x"], "bad flag syntax: ---name=x"),
        (["--=x"], "bad flag syntax: --=x"),
        (["--heartbeat-interval"], "flag needs an argument: --heartbeat-interval"),
        (
            ["--heartbeat-interval=abc"],
            'invalid value "abc" for flag --heartbeat-interval: parse error',
        ),
        (["--snapshot-count=-5"], 'invalid value "-5" for flag --snapshot-count: parse error'),
        (["--max-txn-ops= 5"], 'invalid value " 5" for flag --max-txn-ops: parse error'),
        (["--auth-token=oauth"], '--auth-token: unknown token type "oauth"'),
        (["--auth-token=jwt,ttl"], "invalid --auth-token option 'ttl'"),
        (["--bcrypt-cost=-1"], 'invalid value "-1" for flag --bcrypt-cost: parse error'),
        (
            ["--quota-backend-bytes=1e9"],
            'invalid value "1e9" for flag --quota-backend-bytes: parse error',
        ),
        (
            ["--client-cert-auth=maybe"],
            'invalid value "maybe" for flag --client-cert-auth: parse error',
        ),
        (
            ["--listen-peer-urls", "ftp://127.0.0.1:1"],
            'invalid value "ftp://127.0.0.1:1" for flag --listen-peer-urls: '
            "URL scheme must be http or https: ftp://127.0.0.1:1",
        ),
        (
            ["--listen-peer-urls", "http://127.0.0.1"],
            'invalid value "http://127.0.0.1" for flag --listen-peer-urls: URL address does not '
            'have the form "host:port" with a numeric port: http://127.0.0.1',
        ),
        (
            ["--listen-peer-urls", "http://127.0.0.1:abc"],
            'URL address does not have the form "host:port" with a numeric port',
        ),
        (
            ["--listen-peer-urls", "http://127.0.0.1:70000"],
            'URL address does not have the form "host:port" with a numeric port',
        ),
        (["--listen-peer-urls", "http://:2380"], 'does not have the form "host:port"'),
        (["--listen-peer-urls", "127.0.0.1:2380"], "URL scheme must be http"),
        (["--listen-peer-urls", "http://::1:2380"], 'does not have the form "host:port"'),
        (
            ["--listen-peer-urls", "http://a b:2380"],
            "URL host is not a host name or IP address: http://a b:2380",
        ),
        (["--listen-peer-urls", "http://a/b:2380"], 'does not have the form "host:port"'),
        (["--listen-peer-urls", ""], "URL scheme must be http"),
        (
            ["--listen-peer-urls", "http://127.0.0.1:2380/x"],
            "URL must not contain a path: http://127.0.0.1:2380/x",
        ),
        (["--listen-peer-urls", "http://127.0.0.1:2380?a=b"], "URL must not contain a path"),
        (["--listen-peer-urls", "http://u:p@127.0.0.1:2380"], "must not contain user information"),
        (
            ["--advertise-client-urls", "unixs://127.0.0.1:2379"],
            "--advertise-client-urls: unixs:// URLs are not supported (only http:// and "
            "https://): unixs://127.0.0.1:2379",
        ),
        (["--listen-peer-urls", "unix://sock:1"], "unix:// URLs are not supported"),
        (
            ["--listen-client-urls", "http://127.0.0.1:3379"],
            "--advertise-client-urls is required when --listen-client-urls is set explicitly",
        ),
        (
            ["--heartbeat-interval", "300"],
            "--election-timeout[1000ms] should be at least as 5 times as "
            "--heartbeat-interval[300ms]",
        ),
        (["--heartbeat-interval", "0"], "--heartbeat-interval must be >0 (set to 0ms)"),
        (["--election-timeout", "0"], "--election-timeout must be >0 (set to 0ms)"),
        (
            ["--election-timeout", "60000"],
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms",
        ),
        (
            ["--log-level", "bad"],
            '--log-level: unknown level "bad" (want one of debug, info, warn, error, panic, fatal)',
        ),
        (
            ["--auto-compaction-mode", "x"],
            'unknown auto-compaction-mode "x" (want periodic or revision)',
        ),
        (
            ["--auto-compaction-retention", "1x"],
            'invalid --auto-compaction-retention "1x": time: unknown unit "x" in duration "1x"',
        ),
        (
            ["--auto-compaction-retention", "-1"],
            'invalid --auto-compaction-retention "-1": time: missing unit in duration "-1"',
        ),
        (
            ["--auto-compaction-retention", "-1h"],
            'invalid --auto-compaction-retention "-1h": negative duration',
        ),
        (
            ["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"],
            'invalid --auto-compaction-retention "1h": revision mode needs a non-negative '
            "integer number of revisions",
        ),
        (
            ["--initial-cluster-state", "old"],
            'invalid value "old" for flag --initial-cluster-state: valid values are "new" or '
            '"existing"',
        ),
        (
            ["--grpc-server", "h2o"],
            'invalid value "h2o" for flag --grpc-server: valid values are "grpcio" or "native"',
        ),
        (["--name", ""], "--name must not be empty"),
        (["--name", "a,b"], "--name \"a,b\" must not contain ',' or '='"),
        (
            ["--initial-cluster", "foo"],
            'invalid value "foo" for --initial-cluster: entry "foo" is not name=url',
        ),
        (
            ["--initial-cluster", "=http://127.0.0.1:2380"],
            'entry "=http://127.0.0.1:2380" is not name=url',
        ),
        (["--initial-cluster", ","], "--initial-cluster is empty"),
        (
            ["--initial-cluster", "default=http://127.0.0.1"],
            'invalid value "default=http://127.0.0.1" for --initial-cluster: URL address does '
            'not have the form "host:port" with a numeric port: http://127.0.0.1',
        ),
        (
            ["--name", "foo", "--initial-cluster", "bar=http://127.0.0.1:2380"],
            'couldn\'t find local name "foo" in the initial cluster configuration',
        ),
        (
            ["--name", "foo", "--initial-cluster", "foo=http://127.0.0.1:2390"],
            "--initial-cluster has foo=http://127.0.0.1:2390 but missing from "
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
        ),
        (
            [
                "--initial-advertise-peer-urls", "http://127.0.0.1:2380,http://10.0.0.1:2380",
                "--initial-cluster", "default=http://127.0.0.1:2380",
            ],
            "--initial-advertise-peer-urls has http://10.0.0.1:2380 but missing from "
            "--initial-cluster=default=http://10.0.0.1:2380,default=http://127.0.0.1:2380",
        ),
        (
            ["--initial-cluster", "default=http://127.0.0.1:2380,b=http://127.0.0.1:2380"],
            "initial cluster b=http://127.0.0.1:2380,default=http://127.0.0.1:2380 "
            "has duplicate url",
        ),
    ],
)
def test_refusals_are_one_line_naming_the_flag(argv: list[str], message: str) -> None:
    assert message in refused(argv)


def test_url_scheme_is_lower_cased_and_ipv6_accepted() -> None:
    config = parse(["--listen-peer-urls", "HTTP://[fe80::1%eth0]:2380,http://my-host.example:1"])
    assert config.listen_peer_urls == ("http://[fe80::1%eth0]:2380", "http://my-host.example:1")
    assert config.peer_listen_addresses() == [("fe80::1%eth0", 2380), ("my-host.example", 1)]


def test_a_config_built_directly_is_checked_too() -> None:
    base = parse(["--data-dir", "/srv/k"])
    assert replace(base, heartbeat_interval=200).heartbeat_interval == 200
    with pytest.raises(ConfigError, match="couldn't find local name \"n9\""):
        replace(base, name="n9")
    with pytest.raises(ConfigError, match="--max-txn-ops must not be negative"):
        replace(base, max_txn_ops=-1)
    with pytest.raises(ConfigError, match="URL scheme must be http"):
        replace(base, listen_client_urls=("127.0.0.1:2379",))
    with pytest.raises(ConfigError, match="--advertise-client-urls must be a non-empty tuple"):
        replace(base, advertise_client_urls=())
    with pytest.raises(ConfigError, match="should be at least as 5 times"):
        replace(base, election_timeout=400)


def test_zero_counts_are_accepted_as_etcd_accepts_them() -> None:
    config = parse(["--snapshot-count=0", "--max-request-bytes=0", "--max-txn-ops=0"])
    assert (config.snapshot_count, config.max_request_bytes, config.max_txn_ops) == (0, 0, 0)


def test_cluster_state_is_checked_in_every_source(tmp_path: Path) -> None:
    assert refused([], {"ETCD_INITIAL_CLUSTER_STATE": "old"}) == (
        'invalid value "old" for ETCD_INITIAL_CLUSTER_STATE: valid values are "new" or "existing"'
    )
    path = tmp_path / "c.yml"
    path.write_text("initial-cluster-state: old\n")
    assert refused(["--config-file", str(path)]) == (
        'invalid value "old" for config key "initial-cluster-state": valid values are "new" or '
        '"existing"'
    )


def test_existing_cluster_skips_the_advertise_match_but_needs_the_local_name() -> None:
    config = parse(
        ["--initial-cluster-state", "existing", "--initial-cluster", "default=http://10.0.0.9:2380"]
    )
    assert config.initial_cluster_members() == {"default": ["http://10.0.0.9:2380"]}
    assert "couldn't find local name" in refused(
        ["--initial-cluster-state", "existing", "--initial-cluster", "x=http://10.0.0.9:2380"]
    )


def test_compaction_retention_forms() -> None:
    assert parse(["--auto-compaction-retention", "2"]).auto_compaction_retention_seconds == 7200
    assert parse(["--auto-compaction-retention", "30m"]).auto_compaction_retention_seconds == 1800
    assert parse(["--auto-compaction-retention", "90s"]).auto_compaction_retention_seconds == 90
    assert parse(["--auto-compaction-retention=1h30m"]).auto_compaction_retention_seconds == 5400
    revision = parse(["--auto-compaction-mode=revision", "--auto-compaction-retention=1000"])
    assert revision.auto_compaction_retention_revisions == 1000
    assert revision.auto_compaction_retention_seconds is None
    assert parse([]).auto_compaction_retention_revisions is None
    assert parse([]).auto_compaction_retention_seconds == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0), ("1h", 3600.0), ("1h30m", 5400.0), ("90s", 90.0), ("1.5h", 5400.0),
        ("500ms", 0.5), ("2us", 2e-6), ("3\u00b5s", 3e-6), ("10ns", 1e-8), ("-1m", -60.0),
        ("+2s", 2.0), (".5s", 0.5), ("1.s", 1.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("-", 'time: invalid duration "-"'),
        ("1", 'time: missing unit in duration "1"'),
        ("1h2", 'time: missing unit in duration "1h2"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        (".s", 'time: invalid duration ".s"'),
        ("h", 'time: invalid duration "h"'),
    ],
)
def test_go_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_go_duration(text)
    assert str(info.value) == message


# --- derived values ---------------------------------------------------------------------------


def test_directories() -> None:
    config = parse(["--data-dir", "/srv/k"])
    assert config.member_dir == Path("/srv/k/member")
    assert config.wal_dir_path == Path("/srv/k/member/wal")
    assert config.snap_dir == Path("/srv/k/member/snap")
    assert parse(["--data-dir", "/srv/k", "--wal-dir", "/fast/wal"]).wal_dir_path == Path(
        "/fast/wal"
    )


def test_ids_match_etcd_for_etcds_own_defaults() -> None:
    # etcd 3.4 with no flags reports member 8e9e05c52164694d in cluster cdf818194e3a8c32.
    config = parse(
        [
            "--initial-advertise-peer-urls", "http://localhost:2380",
            "--initial-cluster", "default=http://localhost:2380",
        ]
    )
    assert format_id(config.member_id) == "8e9e05c52164694d"
    assert format_id(config.cluster_id) == "cdf818194e3a8c32"


def test_ids_of_a_three_member_cluster() -> None:
    cluster = "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380,c=http://10.0.0.3:2380"
    configs = [
        parse(
            [
                "--name", n, "--initial-cluster", cluster, "--initial-cluster-token", "t",
                "--initial-advertise-peer-urls", f"http://10.0.0.{i}:2380",
            ]
        )
        for i, n in enumerate("abc", start=1)
    ]
    ids = [compute_member_id([f"http://10.0.0.{i}:2380"], "t") for i in (1, 2, 3)]
    assert [c.member_id for c in configs] == ids
    assert {c.cluster_id for c in configs} == {compute_cluster_id(ids)}


def test_listen_addresses_election_ticks_and_quota() -> None:
    config = parse(
        [
            "--listen-client-urls", "http://127.0.0.1:0,http://[::1]:2379",
            "--advertise-client-urls", "http://127.0.0.1:2379",
            "--listen-peer-urls", "http://localhost:2380",
            "--heartbeat-interval", "50", "--election-timeout", "525",
            "--quota-backend-bytes", "-1",
        ]
    )
    assert config.client_listen_addresses() == [("127.0.0.1", 0), ("::1", 2379)]
    assert config.peer_listen_addresses() == [("localhost", 2380)]
    assert config.election_ticks == 10
    assert config.backend_quota is None
    assert parse([]).backend_quota == 2 * 1024**3
    assert parse(["--quota-backend-bytes", "1000"]).backend_quota == 1000


def test_usage_lists_every_flag() -> None:
    text = usage()
    for flag in FLAGS:
        assert f"--{flag.name}" in text


# --- no input crashes the parser --------------------------------------------------------------

_FLAG_WORDS = [f"--{f.name}" for f in FLAGS] + [f"-{f.name}=" for f in FLAGS]
_VALUES = ["", "0", "-1", "100", "1h", "x=y", "http://127.0.0.1:1", "https://h:1", "default="]
_argv_item = st.one_of(st.sampled_from(_FLAG_WORDS), st.sampled_from(_VALUES), st.text(max_size=12))


@settings(derandomize=True, max_examples=400, deadline=None)
@given(
    argv=st.lists(
        st.one_of(
            _argv_item, st.builds(lambda a, b: a + b, st.sampled_from(_FLAG_WORDS), _argv_item)
        ),
        max_size=6,
    ),
    env=st.dictionaries(
        st.sampled_from([f.env_key for f in FLAGS] + ["ETCD_X"]), st.text(max_size=12), max_size=3
    ),
)
def test_any_input_gives_a_config_or_a_one_line_error(argv: list[str], env: dict[str, str]) -> None:
    try:
        config = parse(argv, env)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(config, ServeConfig)


# --- the same refusals from a real etcd 3.4 ---------------------------------------------------

ETCD = shutil.which("etcd")

_TLS_PORTS = (free_port(), free_port())  # etcd refuses these before it binds them

# (argv, environment, text that must appear in both keelson's and etcd's message). Only
# refusals etcd makes before it opens a port or a data dir.
DIFFERENTIAL: list[tuple[list[str], dict[str, str], str]] = [
    (["--bogus"], {}, "flag provided but not defined: --bogus"),
    (
        ["--heartbeat-interval=abc"], {},
        'invalid value "abc" for flag --heartbeat-interval: parse error',
    ),
    (["--heartbeat-interval"], {}, "flag needs an argument: --heartbeat-interval"),
    (["--auto-tls=false", "false"], {}, "'false' is not a valid flag"),
    (
        ["--initial-cluster-state", "old"], {},
        'invalid value "old" for flag --initial-cluster-state',
    ),
    (
        ["--heartbeat-interval", "300"], {},
        "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]",
    ),
    (["--heartbeat-interval", "0"], {}, "--heartbeat-interval must be >0 (set to 0ms)"),
    (
        ["--election-timeout", "60000"], {},
        "--election-timeout[60000ms] is too long, and should be set less than 50000ms",
    ),
    (
        ["--listen-client-urls", "http://127.0.0.1:23999"], {},
        "--advertise-client-urls is required when --listen-client-urls is set explicitly",
    ),
    (
        ["--name", "a"], {"ETCD_NAME": "b"},
        'conflicting environment variable "ETCD_NAME" is shadowed by corresponding '
        "command-line flag (either unset environment variable or disable flag)",
    ),
    (
        [], {"ETCD_HEARTBEAT_INTERVAL": "abc"},
        'invalid value "abc" for ETCD_HEARTBEAT_INTERVAL: parse error',
    ),
    (["--auto-compaction-mode", "x"], {}, 'unknown auto-compaction-mode "x"'),
    (
        ["--experimental-watch-progress-notify-interval", "10"], {},
        'invalid value "10" for flag --experimental-watch-progress-notify-interval: parse error',
    ),
    (
        [
            "--listen-client-urls", f"https://127.0.0.1:{_TLS_PORTS[0]}",
            "--advertise-client-urls", f"https://127.0.0.1:{_TLS_PORTS[0]}",
            "--listen-peer-urls", f"http://127.0.0.1:{_TLS_PORTS[1]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{_TLS_PORTS[1]}",
            "--initial-cluster", f"default=http://127.0.0.1:{_TLS_PORTS[1]}",
        ], {},
        "TLS key/cert (--cert-file, --key-file) must be provided for client url "
        f"https://127.0.0.1:{_TLS_PORTS[0]} with HTTPS scheme",
    ),
    (
        [
            "--listen-peer-urls", f"https://127.0.0.1:{_TLS_PORTS[1]}",
            "--initial-advertise-peer-urls", f"https://127.0.0.1:{_TLS_PORTS[1]}",
            "--initial-cluster", f"default=https://127.0.0.1:{_TLS_PORTS[1]}",
        ], {},
        f"cannot listen on TLS for 127.0.0.1:{_TLS_PORTS[1]}: KeyFile and CertFile are not "
        "presented",
    ),
]


def _single_dash(text: str) -> str:
    return re.sub(r"(?<![\w-])--(?=[a-z])", "-", text)


@pytest.mark.skipif(ETCD is None, reason="etcd is not installed (make deps-system)")
@pytest.mark.parametrize(("argv", "env", "common"), DIFFERENTIAL)
def test_refusal_matches_etcd(
    tmp_path: Path, argv: list[str], env: dict[str, str], common: str
) -> None:
    assert ETCD is not None
    assert common in refused(argv, env)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    proc = subprocess.run(
        [ETCD, "--data-dir", str(tmp_path / "data"), *argv],
        env={**environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode != 0
    assert _single_dash(common) in _single_dash(proc.stderr + proc.stdout)
