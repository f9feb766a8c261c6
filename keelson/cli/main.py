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
import sys

import keelson
from keelson.cli.config import ConfigError, Notice, parse_serve_args, usage

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
    front_end = front_end_factory(
        config.metrics_listen_addresses(), request_timeout, grpc_server=config.grpc_server
    )
    try:
        serve(config, client_server=front_end)
    except KeyboardInterrupt:
        return 130
    except StartError as exc:  # cannot join the cluster: one line, as etcd's fatal log
        return _fail(str(exc), 1)
    return 0


def _fail(message: str, status: int) -> int:
    print(f"keelson: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
