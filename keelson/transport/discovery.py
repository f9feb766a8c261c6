"""The dialing side of the DISCOVERY channel: ask a running member for the cluster.

Theory of operation. A member started with ``--initial-cluster-state existing`` and an empty
data dir knows neither the cluster id (it came from the original members) nor its own member
id (``member add`` chose it). Before it starts raft it calls ``discover`` with the peer URLs
of the other members named in ``--initial-cluster``; each URL is dialled in turn with a
DISCOVERY handshake (see ``frames``) and the first valid DISCOVERY_INFO answer wins, as etcd's
``GetClusterFromRemotePeers`` takes the first ``/members`` answer. Every step is bounded:
``timeout`` per URL for connect, handshake and answer, and the answer by
``MAX_DISCOVERY_BYTES``. The member list inside the answer is opaque here (the server
encodes and decodes it); this module only moves bytes and never raises anything but
``DiscoveryError`` for network trouble or a malformed answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence

from keelson.transport.codec import CodecError
from keelson.transport.frames import (
    MAGIC,
    MAX_DISCOVERY_BYTES,
    PROTOCOL_VERSION,
    Channel,
    DiscoveryInfo,
    FrameError,
    FrameKind,
    Handshake,
    decode_discovery_info,
    decode_rejection,
    encode_handshake,
    read_frame,
)
from keelson.transport.transport import TLSClosed, _parse_url

__all__ = ["DiscoveryError", "DiscoveryInfo", "discover", "discover_one"]

log = logging.getLogger(__name__)


class DiscoveryError(Exception):
    """No URL answered with a valid member list; the message says what each one did."""


async def discover_one(
    url: str, *, timeout: float = 2.0, ssl_client: ssl.SSLContext | None = None
) -> DiscoveryInfo:
    """Ask the member listening on peer URL ``url``; DiscoveryError on any failure."""
    try:
        host, port, tls = _parse_url(url)
    except ValueError as exc:
        raise DiscoveryError(str(exc)) from None
    ctx = ssl_client if tls else None
    if tls and ctx is None:
        raise DiscoveryError(f"{url}: https peer URL but no client TLS context")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=host if ctx is not None else None
            )
            writer.write(
                encode_handshake(Handshake(MAGIC, PROTOCOL_VERSION, Channel.DISCOVERY, 0, 0, 0))
            )
            await writer.drain()
            kind, body = await read_frame(reader, MAX_DISCOVERY_BYTES)
        if kind == FrameKind.REJECTED:
            raise DiscoveryError(f"{url}: refused: {decode_rejection(body).text}")
        if kind != FrameKind.DISCOVERY_INFO:
            raise FrameError(f"unexpected frame kind {kind} in a discovery answer")
        return decode_discovery_info(body)
    except TimeoutError:
        raise DiscoveryError(f"{url}: no answer within {timeout}s") from None
    except asyncio.IncompleteReadError as exc:
        if ctx is not None and not exc.partial:  # TLS 1.3: our certificate was refused
            raise DiscoveryError(f"{url}: {TLSClosed()}") from None
        raise DiscoveryError(f"{url}: {exc!r}") from None
    except ssl.SSLCertVerificationError as exc:
        raise DiscoveryError(f"{url}: certificate verify failed: {exc.verify_message}") from None
    except (OSError, CodecError) as exc:
        raise DiscoveryError(f"{url}: {exc!r}") from None
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()


async def discover(
    urls: Sequence[str], *, timeout: float = 2.0, ssl_client: ssl.SSLContext | None = None
) -> DiscoveryInfo:
    """The first valid answer among ``urls``, tried in order; DiscoveryError naming what
    each URL did when none answers (or ``urls`` is empty)."""
    problems: list[str] = []
    for url in urls:
        try:
            return await discover_one(url, timeout=timeout, ssl_client=ssl_client)
        except DiscoveryError as exc:
            log.warning("failed to get cluster response from %s: %s", url, exc)
            problems.append(str(exc))
    detail = "; ".join(problems) if problems else "no peer URLs to ask"
    raise DiscoveryError(f"could not retrieve cluster information from the given URLs ({detail})")
