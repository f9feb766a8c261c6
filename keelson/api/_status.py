"""Mapping server outcomes onto gRPC status, and extracting the caller's identity.

Theory of operation: every unary handler runs the server call through :func:`unary`.
An :class:`~keelson.proto.errors.EtcdError` becomes ``context.abort(code, message)`` with
etcd's exact message and nothing else. Any other exception is a bug or an outage: it is
logged with the method name and answered ``UNAVAILABLE`` (the client may retry) without a
traceback on the wire; the member keeps serving. Cancellation propagates untouched.

The identity hook: etcd clients send the auth token as the ``token`` metadata key;
:func:`token_of` returns it (or None). A client on a TLS connection that presented a
verified certificate is also named by the certificate's Common Name (gRPC's
``auth_context()["x509_common_name"]``, which the native front end provides too):
:func:`identity_of` returns the token when one was sent (a token wins, as in etcd 3.4's
``AuthInfoFromCtx``), else a :class:`~keelson.server.auth.CertificateName`, else None.
Handlers pass it to the server as ``identity=...`` only when present, so the server
decides what an identity means (a certificate name counts only with
``--client-cert-auth``, as etcd's ``ClientCertAuthEnabled``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from keelson.proto.errors import EtcdError
from keelson.server.auth import CertificateName

_log = logging.getLogger("keelson.api")

T = TypeVar("T")


_STATUS_CODES = {sc.value[0]: sc for sc in grpc.StatusCode}


def status_code(err: EtcdError) -> grpc.StatusCode:
    """The grpc.StatusCode with the same number as ``err.code``."""
    return _STATUS_CODES.get(int(err.code), grpc.StatusCode.UNKNOWN)


def token_of(context: grpc.aio.ServicerContext) -> str | None:
    """The auth token the client sent in the ``token`` metadata, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == "token":
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def certificate_name_of(context: grpc.aio.ServicerContext) -> CertificateName | None:
    """The Common Name of the client's verified TLS certificate, if it presented one.

    A certificate without a Common Name gives ``CertificateName("")`` (etcd then answers
    "user name is empty" when auth is enabled); a plain-text connection gives None.
    """
    auth_context = context.auth_context()
    names = auth_context.get("x509_common_name")
    if names:
        return CertificateName(names[0].decode("utf-8", "replace"))
    if auth_context.get("x509_pem_cert"):
        return CertificateName("")
    return None


def identity_of(context: grpc.aio.ServicerContext) -> str | CertificateName | None:
    """The caller's identity: its token if it sent one, else its certificate's name."""
    token = token_of(context)
    if token is not None:
        return token
    return certificate_name_of(context)


def identity_kwargs(context: grpc.aio.ServicerContext) -> dict[str, Any]:
    """Keyword arguments carrying the caller's identity to the server (empty when none)."""
    identity = identity_of(context)
    return {} if identity is None else {"identity": identity}


async def abort_with(context: grpc.aio.ServicerContext, err: EtcdError) -> None:
    """End the RPC with etcd's code and exact message."""
    await context.abort(status_code(err), err.message)


async def forward(
    method: str, context: grpc.aio.ServicerContext, server: Any, name: str, request: Any
) -> Any:
    """``server.<name>(request[, identity=...])`` under :func:`unary`'s status mapping.

    The same as ``unary(method, context, lambda: getattr(server, name)(request,
    **identity_kwargs(context)))`` - the identity is taken before the call, the method
    looked up inside it - without building a closure and a keyword dict per call: the
    servicers of the hot path (KV) go through here.
    """
    identity = identity_of(context)
    try:
        if identity is None:
            return await getattr(server, name)(request)
        return await getattr(server, name)(request, identity=identity)
    except Exception as exc:
        await _fail(method, context, exc)
        raise


async def unary(
    method: str,
    context: grpc.aio.ServicerContext,
    call: Callable[[], Awaitable[T]],
) -> T:
    """Await ``call()``; map EtcdError and unexpected failures onto the gRPC status."""
    try:
        return await call()
    except Exception as exc:
        await _fail(method, context, exc)
        raise


async def _fail(method: str, context: grpc.aio.ServicerContext, exc: Exception) -> None:
    """End the call for ``exc`` (``forward``'s and ``unary``'s one error mapping): an
    EtcdError with its gRPC status, anything unexpected logged and UNAVAILABLE; an abort
    already under way passes through. The abort raises; the caller re-raises otherwise."""
    if isinstance(exc, EtcdError):
        await abort_with(context, exc)
    elif not isinstance(exc, grpc.aio.AbortError):
        _log.error("%s failed with an unexpected error", method, exc_info=exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"keelson: internal error in {method}")
