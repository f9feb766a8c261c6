"""keelson's own environment variables (tuning switches and numbers), read one way: unset
or empty gives the default; a value that cannot be used is ignored with a warning saying
what is accepted, and the default stays."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

log = logging.getLogger(__name__)

N = TypeVar("N", int, float)


def switch(environ: Mapping[str, str], name: str, what: str) -> bool:
    """An on-by-default switch: ``0`` off, ``1`` or unset on (``what`` names it in the
    warning for any other value)."""
    raw = environ.get(name, "")
    if raw not in ("", "0", "1"):
        log.warning("ignoring %s=%r (0 or 1); %s stays on", name, raw, what)
    return raw != "0"


def number(environ: Mapping[str, str], name: str, parse: Callable[[str], N], low: N, high: N,
           default: N, accepted: str) -> N:
    """``parse`` of the variable when it lies in [``low``, ``high``], else ``default``
    (``accepted`` describes the valid values in the warning)."""
    raw = environ.get(name, "")
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        log.warning("ignoring %s=%r (%s); using %g", name, raw, accepted, default)
        return default
    return value
