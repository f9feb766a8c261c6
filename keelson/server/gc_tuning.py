"""The garbage collector's settings for a member process (``keelson serve`` only).

A member allocates a few hundred container objects per request, so with Python's default
first-generation threshold (700) the collector runs a young collection every few requests
and, every 100 of those, a full one that walks every tracked object: the key index, the
raft log in memory, the watchers. Measured at put 16/256 on 3 members: 18-21 µs of
collection per put on each member, mostly full collections (a sixth of a member's CPU
per put). A first-generation threshold of 10,000 makes full collections about 14 times
rarer; ``gc.freeze()`` once the member serves moves what start-up built (the restored key
index above all) out of every later collection's walk. Cyclic garbage is still collected,
just in larger, rarer steps; objects frozen at start-up that later become cyclic garbage
are not (start-up builds long-lived state, freed by reference counting).

``KEELSON_GC_GEN0`` sets the threshold (default 10000); ``0`` leaves Python's defaults and
freezes nothing. Test processes that run members in-process never call this.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping

from keelson.server import envvars

log = logging.getLogger(__name__)

GC_GEN0_ENV = "KEELSON_GC_GEN0"
DEFAULT_GEN0 = 10_000


def gen0_from_env(environ: Mapping[str, str]) -> int:
    """The first-generation threshold ``KEELSON_GC_GEN0`` asks for (0: Python's defaults);
    a value that is not a whole number from 0 to 10,000,000 is ignored with a warning."""
    return envvars.number(environ, GC_GEN0_ENV, int, 0, 10_000_000, DEFAULT_GEN0,
                          "a whole number from 0 to 10000000")


def tune(environ: Mapping[str, str]) -> bool:
    """Set the collector's thresholds for a member process; True when tuned (then call
    ``freeze_startup`` once the member serves)."""
    gen0 = gen0_from_env(environ)
    if gen0 == 0:
        return False
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
    return True


def freeze_startup() -> None:
    """Move every object start-up made out of the collector's walks (``gc.freeze``)."""
    gc.collect()
    gc.freeze()
    log.debug("gc: froze %d start-up objects", gc.get_freeze_count())
