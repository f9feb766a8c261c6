"""``python -m keelson.raft.sim``: run seeded cluster schedules and check Raft's invariants.

    python -m keelson.raft.sim --seeds 500 [--start 0] [--nodes 3|5] [--steps K]
                               [--parallel-append]
    python -m keelson.raft.sim --seed 17 --trace

Prints each failing seed (rule, detail, last events, replay command) and ends with
``N seeds, V violations``; exits 1 if any seed violated a rule, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from keelson.raft.sim.cluster import DEFAULT_STEPS
from keelson.raft.sim.run import replay_command, report, run_seed


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m keelson.raft.sim",
        description="Deterministic simulation of a keelson raft cluster under faults.",
    )
    p.add_argument("--seeds", type=int, default=100, help="number of seeds to run")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--seed", type=int, help="run this one seed only")
    p.add_argument("--nodes", type=int, choices=(3, 5), default=3, help="initial voters")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="steps of the faulty phase")
    p.add_argument("--trace", action="store_true", help="print every event of each run")
    p.add_argument(
        "--parallel-append",
        action="store_true",
        help="leaders send appends before persisting; crashes in between (SimOptions)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.seeds < 1:
        print("--seeds must be at least 1", file=sys.stderr)
        return 2
    if args.steps < 1:
        print("--steps must be at least 1", file=sys.stderr)
        return 2
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    failed = 0
    violations = 0
    for seed in seeds:
        echo = print if args.trace else None
        result = run_seed(
            seed, args.nodes, args.steps, full_trace=args.trace, echo=echo,
            parallel_append=args.parallel_append,
        )
        if result.ok:
            if args.trace:
                print(f"seed {seed}: ok ({result.steps} steps) {result.stats}")
            continue
        failed += 1
        violations += len(result.violations)
        if args.trace:
            print(f"seed {seed}: rules violated: {', '.join(sorted(result.first))}")
            print(f"replay: {replay_command(result, args.steps, args.parallel_append)}")
        else:
            print(report(result, args.steps, args.parallel_append))
        sys.stdout.flush()
    tail = f" in {failed} seeds" if failed else ""
    print(f"{len(seeds)} seeds, {violations} violations{tail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
