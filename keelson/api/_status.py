"""Mapping server outcomes onto gRPC status, and extracting the caller's identity.

Theory of operation: every unary handler runs the server call through :func:`unary`.
An :class:`~keelson.proto.errors.EtcdError` becomes ``context.abort(code, message)`` with
etcd's exact message and nothing else. Any other exception is a bug or an outage: it is
logged with the method name and answered ``UNAVAILABLE`` (the client may retry) without a
traceback on the wire; the member keeps serving. Cancellation propagates untouched.

The identity hook: etcd clients send the auth token as the ``token`` metadata key;
:func:`token_of` returns it (or None) and handlers pass it to the server as
``identity=...`` only when present, so the server decides what an identity means.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from keelson.proto.errors import EtcdError

_log = logging.getLogger("keelson.api")

T = TypeVar("T")


def status_code(err: EtcdError) -> grpc.StatusCode:
    """The grpc.StatusCode with the same number as ``err.code``."""
    for sc in grpc.StatusCode:
        if sc.value[0] == int(err.code):
            return sc
    return grpc.StatusCode.UNKNOWN


def token_of(context: grpc.aio.ServicerContext) -> str | None:
    """The auth token the client sent in the ``token`` metadata, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == "token":
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def identity_kwargs(context: grpc.aio.ServicerContext) -> dict[str, Any]:
    """Keyword arguments carrying the caller's identity to the server (empty when none)."""
    token = token_of(context)
    return {} if token is None else {"identity": token}


async def abort_with(context: grpc.aio.ServicerContext, err: EtcdError) -> None:
    """End the RPC with etcd's code and exact message."""
    await context.abort(status_code(err), err.message)


async def unary(
    method: str,
    context: grpc.aio.ServicerContext,
    call: Callable[[], Awaitable[T]],
) -> T:
    """Await ``call()``; map EtcdError and unexpected failures onto the gRPC status."""
    try:
        return await call()
    except EtcdError as err:
        await abort_with(context, err)
        raise  # abort raises; unreachable
    except grpc.aio.AbortError:
        raise
    except Exception:
        _log.exception("%s failed with an unexpected error", method)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"keelson: internal error in {method}")
        raise
