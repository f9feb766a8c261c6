"""SETTINGS (RFC 9113 section 6.5): identifiers, defaults, validation, and both sides' values.

``RemoteSettings`` is what the client told us (it takes effect when its SETTINGS frame is
received); ``LocalSettings`` is what we advertise (RFC 9113: it binds the peer only once the
peer ACKs it, so the limits we *enforce* before the ACK are the more lenient of the old and
the new value — see ``LocalSettings.enforced``).

Invariant: every value stored in either object has passed ``validate``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from keelson.http2.errors import ErrorCode, ProtocolError


class SettingCode(enum.IntEnum):
    """Known SETTINGS identifiers; unknown identifiers are ignored (RFC 9113 section 6.5.2)."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6
    ENABLE_CONNECT_PROTOCOL = 0x8  # RFC 8441
    NO_RFC7540_PRIORITIES = 0x9  # RFC 9218


MAX_WINDOW_SIZE = (1 << 31) - 1
MIN_MAX_FRAME_SIZE = 1 << 14
MAX_MAX_FRAME_SIZE = (1 << 24) - 1
UNLIMITED = 1 << 32  # stands for "no limit" (MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE)

DEFAULTS: dict[int, int] = {
    SettingCode.HEADER_TABLE_SIZE: 4096,
    SettingCode.ENABLE_PUSH: 1,
    SettingCode.MAX_CONCURRENT_STREAMS: UNLIMITED,
    SettingCode.INITIAL_WINDOW_SIZE: 65535,
    SettingCode.MAX_FRAME_SIZE: MIN_MAX_FRAME_SIZE,
    SettingCode.MAX_HEADER_LIST_SIZE: UNLIMITED,
    SettingCode.ENABLE_CONNECT_PROTOCOL: 0,
    SettingCode.NO_RFC7540_PRIORITIES: 0,
}

_BOOLEAN = (
    SettingCode.ENABLE_PUSH,
    SettingCode.ENABLE_CONNECT_PROTOCOL,
    SettingCode.NO_RFC7540_PRIORITIES,
)


def validate(code: int, value: int) -> None:
    """Raise ``ProtocolError`` with the RFC's code when ``value`` is illegal for ``code``."""
    if code in _BOOLEAN and value not in (0, 1):
        raise ProtocolError(
            ErrorCode.PROTOCOL_ERROR, f"{SettingCode(code).name} must be 0 or 1, got {value}"
        )
    if code == SettingCode.INITIAL_WINDOW_SIZE and value > MAX_WINDOW_SIZE:
        raise ProtocolError(
            ErrorCode.FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE {value} exceeds 2^31-1"
        )
    if code == SettingCode.MAX_FRAME_SIZE and not MIN_MAX_FRAME_SIZE <= value <= MAX_MAX_FRAME_SIZE:
        raise ProtocolError(
            ErrorCode.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} outside [2^14, 2^24-1]"
        )


class RemoteSettings:
    """The peer's settings as last received (defaults until its first SETTINGS frame)."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values = dict(DEFAULTS)

    def __getitem__(self, code: int) -> int:
        return self._values[code]

    def apply(self, pairs: Iterable[tuple[int, int]]) -> dict[int, tuple[int, int]]:
        """Validate and apply one SETTINGS frame; return {code: (old, new)} of known changes.

        The whole frame is validated before anything is applied, so a refused frame leaves
        the settings as they were. Unknown identifiers are ignored; a repeated identifier
        takes its last value (RFC 9113 section 6.5: processed in order).
        """
        known: dict[int, int] = {}
        for code, value in pairs:
            if code in self._values:
                validate(code, value)
                known[code] = value
        changes: dict[int, tuple[int, int]] = {}
        for code, value in known.items():
            old = self._values[code]
            if old != value:
                changes[code] = (old, value)
                self._values[code] = value
        return changes


class LocalSettings:
    """What we advertise, the frames still awaiting the peer's ACK, and what we enforce."""

    __slots__ = ("_acked", "_pending")

    def __init__(self) -> None:
        self._acked = dict(DEFAULTS)
        self._pending: list[dict[int, int]] = []

    def propose(self, values: dict[int, int]) -> list[tuple[int, int]]:
        """Record a SETTINGS frame we are about to send; return its (code, value) pairs."""
        for code, value in values.items():
            validate(code, value)
        self._pending.append(dict(values))
        return sorted(values.items())

    def acknowledged(self) -> dict[int, int] | None:
        """The peer ACKed our oldest unacknowledged SETTINGS frame: apply and return it.

        Returns None for an ACK with nothing pending (ignored: nothing to apply).
        """
        if not self._pending:
            return None
        applied = self._pending.pop(0)
        self._acked.update(applied)
        return applied

    def enforced(self, code: int) -> int:
        """The most lenient of the acknowledged and every pending value (a size limit).

        Until the ACK the peer may legitimately still be using the older value, so limits
        are enforced at the maximum of the values it could be using.
        """
        value = self._acked[code]
        for frame in self._pending:
            value = max(value, frame.get(code, value))
        return value
