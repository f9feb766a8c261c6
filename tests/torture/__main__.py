"""``python -m tests.torture --time 600 --seed S [--nodes 3|5]``: one long torture run.

Prints the fault log as it goes (stderr), then each anomaly with the seed and the command
that replays it, and ends with ``N operations, F faults, K anomalies``. Exit status 1 when
anything was found; the run's data dirs, logs and histories are then kept in the printed
directory (``--keep`` keeps them for a clean run too).
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
from pathlib import Path
from types import FrameType

from tests.torture.faults import ALL_KINDS
from tests.torture.runner import MEMBERSHIP_BY_DEFAULT, Config, run


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.torture", description=__doc__)
    p.add_argument("--time", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--seed", type=int, default=None, help="the run's seed (default: random)")
    p.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    p.add_argument(
        "--membership",
        action=argparse.BooleanOptionalAction,
        default=MEMBERSHIP_BY_DEFAULT,
        help="include membership changes (add learner, promote, remove) in the schedule",
    )
    p.add_argument("--faults", default="", help=f"comma-separated subset of: {','.join(ALL_KINDS)}")
    p.add_argument("--quiet", type=float, default=10.0, help="final quiet seconds (default 10)")
    p.add_argument("--dir", type=Path, default=None, help="where to keep data (default: a tmp dir)")
    p.add_argument("--keep", action="store_true", help="keep data dirs and logs of a clean run")
    p.add_argument(
        "--serializable-reads",
        action="store_true",
        help="self-test: register reads are serializable (may be stale); expect anomalies",
    )
    args = p.parse_args(argv)
    kinds = tuple(k for k in args.faults.split(",") if k)
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown:
        p.error(f"unknown fault kinds: {', '.join(unknown)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    config = Config(
        seed=seed,
        seconds=args.time,
        nodes=args.nodes,
        membership=args.membership,
        kinds=kinds,
        quiet_seconds=args.quiet,
        keep=args.keep,
        directory=args.dir,
        serializable_reads=args.serializable_reads,
    )
    # SIGTERM unwinds like Ctrl-C, so run()'s finally stops every member it started.
    signal.signal(signal.SIGTERM, _interrupt)
    result = run(config, verbose=True)
    print(result.report(), flush=True)
    return 1 if result.anomalies else 0


if __name__ == "__main__":
    sys.exit(main())
