"""The ``keelson`` command: version, help, one-line refusals, and handing off to the server."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import ssl
import subprocess
import sys
import types
from pathlib import Path

import pytest

from keelson.cli.config import FLAGS, ServeConfig
from keelson.cli.main import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_etcd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in sorted(os.environ):
        if key.startswith("ETCD_"):
            monkeypatch.delenv(key)


class _FakeStartError(Exception):
    """Stands for keelson.server.member.StartError in the fake server module."""


def _fake_server(monkeypatch: pytest.MonkeyPatch, serve: object) -> None:
    module = types.ModuleType("keelson.server.member")
    module.serve = serve  # type: ignore[attr-defined]
    module.StartError = _FakeStartError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keelson.server.member", module)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"keelson {importlib.metadata.version('keelson')}\n"


def test_serve_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--version"]) == 0
    assert capsys.readouterr().out.startswith("keelson ")


def test_help_and_no_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out
    assert main([]) == 2
    assert "usage: keelson" in capsys.readouterr().err


def test_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err == "keelson: unknown command \"frobnicate\" (see 'keelson --help')\n"


@pytest.mark.parametrize("flag", ["--help", "-h", "-help"])
def test_serve_help_lists_every_flag(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    assert main(["serve", "--name", "x", flag]) == 0
    out = capsys.readouterr().out
    for f in FLAGS:
        assert f"--{f.name}" in out


def test_serve_refuses_bad_flag_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--bogus"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "keelson: flag provided but not defined: --bogus\n"
    assert captured.out == ""


def test_serve_refuses_bad_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETCD_ELECTION_TIMEOUT", "10")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == (
        "keelson: --election-timeout[10ms] should be at least as 5 times as "
        "--heartbeat-interval[100ms]\n"
    )


def test_serve_hands_the_config_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ServeConfig] = []

    def serve(
        config: ServeConfig,
        client_server: object = None,
        peer_ssl: tuple[object, object] = (None, None),
        peer_cert_check: object = None,
    ) -> None:
        assert callable(client_server)
        assert client_server.__qualname__.startswith("front_end_factory")  # type: ignore[attr-defined]
        # http peer URLs: no TLS listener; a dialer context for peers advertising https
        assert peer_ssl[0] is None and isinstance(peer_ssl[1], ssl.SSLContext)
        assert peer_cert_check is None
        seen.append(config)

    _fake_server(monkeypatch, serve)
    monkeypatch.setenv("ETCD_INITIAL_CLUSTER_TOKEN", "from-env")
    assert main(["serve", "--name", "n1", "--log-level", "error"]) == 0
    assert [(c.name, c.initial_cluster_token) for c in seen] == [("n1", "from-env")]


def test_configuration_notices_are_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_server(monkeypatch, lambda config, client_server=None, **peer: None)
    monkeypatch.setenv("ETCD_FOO", "1")
    monkeypatch.setenv("ETCD_NAME", "n2")
    with caplog.at_level(logging.INFO, logger="keelson.cli"):
        assert main(["serve"]) == 0
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "keelson.cli"]
    assert messages == [
        (logging.WARNING, "unrecognized environment variable ETCD_FOO=1"),
        (logging.INFO, "recognized and used environment variable ETCD_NAME=n2"),
    ]


def test_serve_interrupted_exits_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    def serve(config: ServeConfig, client_server: object = None, **peer: object) -> None:
        raise KeyboardInterrupt

    _fake_server(monkeypatch, serve)
    assert main(["serve", "--log-level", "error"]) == 130


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    return subprocess.run(
        [sys.executable, "-m", "keelson.cli.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_python_m_serve_bogus_exits_2_with_one_line() -> None:
    proc = _run("serve", "--bogus")
    assert proc.returncode == 2
    assert proc.stderr == "keelson: flag provided but not defined: --bogus\n"
    assert proc.stdout == ""


def test_python_m_version() -> None:
    proc = _run("--version")
    assert proc.returncode == 0
    assert proc.stdout == f"keelson {importlib.metadata.version('keelson')}\n"


def test_a_member_that_cannot_start_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def serve(config: ServeConfig, client_server: object = None, **peer: object) -> None:
        raise _FakeStartError("member 8e9e05c52164694d has already been bootstrapped")

    _fake_server(monkeypatch, serve)
    assert main(["serve", "--name", "n1", "--log-level", "error"]) == 1
    assert capsys.readouterr().err == (
        "keelson: member 8e9e05c52164694d has already been bootstrapped\n"
    )


def test_restart_ignores_initial_cluster_flags(tmp_path: Path) -> None:
    """Once the WAL exists the data dir wins: a stale --initial-cluster is not refused."""
    from keelson.cli.config import Notice, parse_serve_args

    stale = ["--name", "m1", "--data-dir", str(tmp_path / "m1"),
             "--initial-cluster", "other=http://127.0.0.1:1", "--initial-cluster-state", "new"]
    with pytest.raises(Exception, match="couldn't find local name"):
        parse_serve_args(stale, {})
    wal = tmp_path / "m1" / "member" / "wal"
    wal.mkdir(parents=True)
    (wal / "0000000000000000-0000000000000000.wal").write_bytes(b"")
    notices: list[Notice] = []
    config = parse_serve_args(stale, {}, notices=notices)
    assert config.is_bootstrapped()
    assert [n.message for n in notices if "ignored" in n.message] == [
        f"the server is already initialized (WAL in {str(wal)!r}): --initial-cluster, "
        "--initial-cluster-state and --initial-cluster-token are ignored"
    ]


def test_serve_client_auto_tls_and_tls_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--auto-tls makes <data-dir>/fixtures/client before the member starts and the front end
    factory gets the TLS; a missing certificate file is one line and exit status 2."""
    served: list[ServeConfig] = []

    def serve(config: ServeConfig, client_server: object = None, **peer: object) -> None:
        served.append(config)

    _fake_server(monkeypatch, serve)
    url = "https://127.0.0.1:23791"
    https = ["--listen-client-urls", url, "--advertise-client-urls", url]
    data = tmp_path / "d"
    assert main(["serve", *https, "--auto-tls", "--data-dir", str(data), "--log-level",
                 "error"]) == 0
    assert len(served) == 1
    assert sorted(p.name for p in (data / "fixtures" / "client").iterdir()) == [
        "cert.pem", "key.pem",
    ]
    missing = tmp_path / "absent.crt"
    assert main(["serve", *https, "--cert-file", str(missing), "--key-file", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"keelson: --cert-file: open {missing}: no such file or directory\n"
    )
    assert len(served) == 1
