"""Header lists: request/trailer validation (RFC 9113 section 8) and cacheable header blocks.

Validation: a request header list is *malformed* — a stream error PROTOCOL_ERROR — when a
field name is empty, has uppercase or characters RFC 9113 section 8.2.1 forbids, a value
has NUL/CR/LF or leading/trailing whitespace, a connection-specific field is present
(``connection``, ``keep-alive``, ``proxy-connection``, ``transfer-encoding``, ``upgrade``,
``te`` other than ``trailers``), pseudo-fields follow regular ones, repeat, are unknown or
are response pseudo-fields (``:status``), or the required ``:method``/``:scheme``/``:path``
(``:authority`` for CONNECT) are missing or empty. Trailers carry no pseudo-fields.

Cached header blocks — ``HeaderBlock.static(headers)`` — and why they are safe to reuse.
The block encodes every field as either an *indexed field* referring to the HPACK static
table (RFC 7541 section 6.1, index <= 61) or a *literal field without indexing* (section
6.2.2) whose name is a static-table index or a literal. Proof that the bytes are valid at
any point of any connection:
  1. Decoding them reads only the static table, which never changes: indices <= 61 mean
     the same entry whatever the dynamic table holds.
  2. Decoding them never changes the decoder's state: "without indexing" fields are not
     inserted into the dynamic table (section 6.2.2) and the block has no size update.
  3. Emitting them never changes our encoder's state either, so the encoder's model of the
     peer's dynamic table stays exact for the blocks it encodes later.
  4. The one state-dependent obligation is a pending dynamic table size update, which must
     start the first block after the peer changed SETTINGS_HEADER_TABLE_SIZE (section 4.2).
     ``H2Connection`` prepends it (from the encoder) whenever one is pending, so a cached
     block is never the block that should have carried it.
Hence the block decodes to exactly ``headers`` on every connection, at every moment, and
one ``HeaderBlock`` may be shared by all connections of a process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hpack.table import HeaderTable

from keelson.http2._events import Headers

# RFC 9113 section 8.2.1: no 0x00-0x20, no uppercase, no 0x7f-0xff, colon only as the first
# octet of a pseudo-field.
_VALID_NAME = re.compile(rb":?[^\x00-\x20A-Z:\x7f-\xff]+\Z")
_INVALID_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})


KNOWN_GOOD_LIMIT = 256


class MalformedHeaders(Exception):
    """A header list RFC 9113 calls malformed (the connection turns it into a stream error)."""


def _check_field(name: bytes, value: bytes) -> None:
    if _VALID_NAME.match(name) is None:
        raise MalformedHeaders(f"invalid field name {name[:64]!r}")
    if _INVALID_VALUE.search(value) is not None:
        raise MalformedHeaders(f"invalid value for field {name[:64]!r}")
    if name in _CONNECTION_SPECIFIC:
        raise MalformedHeaders(f"connection-specific field {name!r}")
    if name == b"te" and value != b"trailers":
        raise MalformedHeaders("te other than 'trailers'")


def validate_request(
    headers: Headers, known_good: set[tuple[bytes, bytes]]
) -> tuple[int | None, int]:
    """Raise ``MalformedHeaders`` unless ``headers`` is a well-formed request header list.

    Returns the declared ``content-length`` (None when absent), so the stream can check the
    body against it (RFC 9113 section 8.1.1), and the list's SETTINGS_MAX_HEADER_LIST_SIZE
    size. ``known_good`` memoizes fields that passed the per-field checks (a pure function
    of name and value): a client repeats the same fields on every call, so the hot path is a
    set lookup. It is capped at ``KNOWN_GOOD_LIMIT`` entries.
    """
    pseudo: dict[bytes, bytes] = {}
    regular = False
    content_length: int | None = None
    size = 0
    for field in headers:
        name, value = field
        size += 32 + len(name) + len(value)
        if field not in known_good:
            _check_field(name, value)
            if len(known_good) < KNOWN_GOOD_LIMIT:
                known_good.add(field)
        if name[0] == 0x3A:  # b":"
            if regular:
                raise MalformedHeaders(f"pseudo-field {name!r} after a regular field")
            if name not in _REQUEST_PSEUDO:
                raise MalformedHeaders(f"pseudo-field {name!r} not allowed in a request")
            if name in pseudo:
                raise MalformedHeaders(f"repeated pseudo-field {name!r}")
            pseudo[name] = value
        else:
            regular = True
            if name == b"content-length":
                if not value.isdigit() or content_length not in (None, int(value)):
                    raise MalformedHeaders("invalid content-length")
                content_length = int(value)
    method = pseudo.get(b":method")
    if not method:
        raise MalformedHeaders("missing :method")
    if method == b"CONNECT":
        if b":scheme" in pseudo or b":path" in pseudo or not pseudo.get(b":authority"):
            raise MalformedHeaders("CONNECT needs :authority and no :scheme or :path")
    elif not pseudo.get(b":scheme") or not pseudo.get(b":path"):
        raise MalformedHeaders("missing or empty :scheme or :path")
    return content_length, size


def validate_trailers(headers: Headers) -> None:
    """Raise ``MalformedHeaders`` unless ``headers`` is a well-formed trailer section."""
    for name, value in headers:
        _check_field(name, value)
        if name[0] == 0x3A:
            raise MalformedHeaders(f"pseudo-field {name!r} in trailers")


def validate_response(headers: Headers, trailers: bool) -> None:
    """Raise ``ValueError`` unless we may send ``headers`` (our own output, checked cheaply).

    A response header list starts with ``:status`` and has no other pseudo-field; trailers
    have none; names are lowercase.
    """
    for i, (name, _) in enumerate(headers):
        if name[:1] == b":":
            if trailers or i != 0 or name != b":status":
                raise ValueError(f"pseudo-field {name!r} not allowed here")
        elif name.lower() != name or not name:
            raise ValueError(f"field name {name!r} must be non-empty lowercase")
    if not trailers and (not headers or headers[0][0] != b":status"):
        raise ValueError("a response must start with :status")


# ---------------------------------------------------------------- static-only encoding

_STATIC_FIELDS: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_FIELDS.setdefault((_name, _value), _index)
    _STATIC_NAMES.setdefault(_name, _index)


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 section 5.1 integer with an N-bit prefix, OR-ed into ``first``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    """RFC 7541 section 5.2 string literal, not Huffman-coded."""
    return _integer(len(data), 7, 0x00) + data


def encode_static_only(headers: Headers) -> bytes:
    """Encode using only the static table and literals without indexing (see module doc)."""
    out = []
    for name, value in headers:
        index = _STATIC_FIELDS.get((name, value))
        if index is not None:
            out.append(_integer(index, 7, 0x80))
            continue
        name_index = _STATIC_NAMES.get(name)
        if name_index is not None:
            out.append(_integer(name_index, 4, 0x00) + _string(value))
        else:
            out.append(b"\x00" + _string(name) + _string(value))
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """A header list with its precomputed, state-independent HPACK encoding.

    Build once per process with ``HeaderBlock.static(...)`` and pass it to
    ``send_headers``/``send_trailers`` instead of a list: the encoder is skipped.
    """

    headers: Headers
    block: bytes
    trailers: bool

    @classmethod
    def static(cls, headers: Headers, trailers: bool = False) -> HeaderBlock:
        """Validate ``headers`` as a response (or trailers) and encode it state-free."""
        headers = tuple((bytes(n), bytes(v)) for n, v in headers)
        validate_response(headers, trailers)
        return cls(headers, encode_static_only(headers), trailers)
