"""The ``keelson`` command.

``keelson --version`` prints the version; ``keelson serve [flags]`` reads the member's
configuration (:mod:`keelson.cli.config`, etcd 3.4's flags) and hands it to
``keelson.server.member.serve``, imported only then so that ``--version``, ``--help`` and
configuration errors stay fast and work without the server's dependencies. Every refusal is
one line on stderr, ``keelson: <message>``, with exit status 2 for a usage or configuration
error and 1 when the server cannot be started; no traceback reaches the user for either.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import ssl
import sys
from typing import TYPE_CHECKING

import keelson
from keelson.cli import tls
from keelson.cli.config import ConfigError, Notice, ServeConfig, parse_serve_args, usage
from keelson.cli.tls import TLSError

if TYPE_CHECKING:
    from keelson.api.serving_tls import ServingTLS

__all__ = ["main"]

_HELP = ("-h", "-help", "--help")
_VERSION = ("-version", "--version")
_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}

_TOP_USAGE = """\
usage: keelson <command> [flags]

commands:
  serve       run a cluster member (etcd 3.4's flags; keelson serve --help lists them)

flags:
  --version   print the version and exit
  --help      print this help and exit
"""


def version() -> str:
    """keelson's version: ``keelson.__version__`` if set, else the installed package's."""
    declared = getattr(keelson, "__version__", None)
    if isinstance(declared, str):
        return declared
    try:
        return importlib.metadata.version("keelson")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Run the ``keelson`` command with ``argv`` (default ``sys.argv[1:]``); return the exit
    status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        sys.stderr.write(_TOP_USAGE)
        return 2
    command, rest = args[0], args[1:]
    if command in _HELP:
        sys.stdout.write(_TOP_USAGE)
        return 0
    if command in _VERSION:
        print(f"keelson {version()}")
        return 0
    if command == "serve":
        return _serve(rest)
    return _fail(f"unknown command \"{command}\" (see 'keelson --help')", 2)


def _serve(args: list[str]) -> int:
    flags = args[: args.index("--")] if "--" in args else args
    if any(arg in _HELP for arg in flags):
        sys.stdout.write(usage())
        return 0
    if any(arg in _VERSION for arg in flags):
        print(f"keelson {version()}")
        return 0
    notices: list[Notice] = []
    try:
        config = parse_serve_args(args, os.environ, notices=notices)
    except ConfigError as exc:
        return _fail(str(exc), 2)

    logging.basicConfig(
        level=_LOG_LEVELS[config.log_level],
        stream=sys.stderr,
        format="%(asctime)s %(levelname).1s | %(name)s: %(message)s",
    )
    log = logging.getLogger("keelson.cli")
    for notice in notices:
        log.log(logging.INFO if notice.level == "info" else logging.WARNING, notice.message)

    # Imported here so that --version and --help stay fast and work without grpc.
    from keelson.api.front_end import front_end_factory
    from keelson.server.member import StartError, serve

    # etcd's request timeout: 5 s plus two election timeouts
    request_timeout = 5.0 + 2 * config.election_timeout / 1000
    try:
        client_tls = _client_tls(config)
    except TLSError as exc:
        return _fail(str(exc), 2)
    front_end = front_end_factory(
        config.metrics_listen_addresses(),
        request_timeout,
        grpc_server=config.grpc_server,
        tls=client_tls,
        metrics_tls=config.secure_metrics_addresses(),
    )
    try:
        peer_ssl, peer_cert_check = _peer_tls(config)
    except TLSError as exc:
        return _fail(str(exc), 2)
    try:
        serve(config, client_server=front_end, peer_ssl=peer_ssl, peer_cert_check=peer_cert_check)
    except KeyboardInterrupt:
        return 130
    except StartError as exc:  # cannot join the cluster: one line, as etcd's fatal log
        return _fail(str(exc), 1)
    return 0


def _client_tls(config: ServeConfig) -> ServingTLS | None:
    """The client side's TLS for the front end, or None when no client or metrics URL is
    ``https://``. ``--auto-tls`` makes (or reuses) ``<data-dir>/fixtures/client`` with the
    client listen URLs' hosts, as etcd's ``ClientSelfCert``; the files are checked again
    after that (a TLSError is a configuration error, exit status 2)."""
    if not config.client_tls_used():
        return None
    from keelson.api.serving_tls import ServingTLS

    hosts = tls.hosts_of(config.listen_client_urls)
    info = tls.auto_tls(config.client_tls(), config.data_dir, "client", hosts)
    tls.check(info, "client")
    try:
        with open(info.cert_file, "rb") as f:
            chain = f.read()
        with open(info.key_file, "rb") as f:
            key = f.read()
        ca = None
        if info.trusted_ca_file:
            with open(info.trusted_ca_file, "rb") as f:
                ca = f.read()
    except OSError as exc:  # removed since check(): still one line
        raise TLSError(f"--cert-file/--key-file/--trusted-ca-file: {exc}") from None
    return ServingTLS(
        certificate_chain=chain,
        private_key=key,
        root_certificates=ca,
        require_client_auth=bool(info.trusted_ca_file) or info.client_cert_auth,
        context=tls.server_context(info, alpn=("h2",)),
        addresses=config.secure_client_addresses(),
        http_context=tls.server_context(info),
    )


def _peer_tls(
    config: ServeConfig,
) -> tuple[tuple[ssl.SSLContext | None, ssl.SSLContext | None], tls.PeerCertCheck | None]:
    """The peer transport's contexts (listener, dialer) and certificate check.

    Auto TLS makes (or reuses) ``<data-dir>/fixtures/peer``; files are checked again after
    that (a TLSError is a configuration error, exit status 2). The listener gets a context
    only when a ``--listen-peer-urls`` URL is ``https://``; the dialer always gets one, so a
    member can reach peers advertising ``https://`` URLs (without its own certificate it
    presents none, as etcd with an empty peer TLS info).
    """
    info = config.peer_tls()
    if info.enabled():
        info = tls.auto_tls(info, config.data_dir, "peer", tls.hosts_of(config.listen_peer_urls))
    tls.check(info, "peer")
    listens_tls = any(u.startswith("https://") for u in config.listen_peer_urls)
    server = tls.server_context(info) if listens_tls else None
    client = tls.client_context(info)
    return (server, client), tls.peer_cert_check(info) if server is not None else None


def _fail(message: str, status: int) -> int:
    print(f"keelson: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
