"""Running seeds and reporting what they found.

``run_seed`` runs one schedule; ``report`` renders a failing run as the seed, each
violated rule (first occurrence), the last events before the first violation, and the
command that replays it. The command line in ``__main__`` is a thin loop over these.
"""

from __future__ import annotations

from collections.abc import Callable

from keelson.raft.sim.cluster import DEFAULT_STEPS, RunResult, SimOptions, Simulation
from keelson.raft.sim.trace import TAIL, Trace


def run_seed(
    seed: int,
    nodes: int = 3,
    steps: int = DEFAULT_STEPS,
    full_trace: bool = False,
    echo: Callable[[str], None] | None = None,
    parallel_append: bool = False,
) -> RunResult:
    """Run one seeded schedule; with ``full_trace`` the result keeps every trace line;
    ``parallel_append``: see ``SimOptions``."""
    trace = Trace(full=full_trace, echo=echo)
    options = SimOptions(nodes=nodes, steps=steps, parallel_append=parallel_append)
    sim = Simulation(seed, options, trace)
    return sim.run()


def replay_command(
    result: RunResult, default_steps: int = DEFAULT_STEPS, parallel_append: bool = False
) -> str:
    cmd = f"python -m keelson.raft.sim --seed {result.seed} --nodes {result.nodes}"
    if result.steps and default_steps != DEFAULT_STEPS:
        cmd += f" --steps {default_steps}"
    if parallel_append:
        cmd += " --parallel-append"
    return cmd + " --trace"


def report(result: RunResult, steps: int = DEFAULT_STEPS, parallel_append: bool = False) -> str:
    """A failing run, compactly: the rules broken (first occurrence of each), the events
    leading to the first violation, and the command that replays the run step by step."""
    lines = [f"seed {result.seed} ({result.nodes} nodes): {len(result.first)} rule(s) violated"]
    for name in sorted(result.first, key=lambda n: result.first[n].step):
        lines.append(f"  {result.first[name]}")
    extra = len(result.violations) - len(result.first)
    if extra > 0:
        lines.append(f"  (+{extra} further violations)")
    lines.append(f"  last {min(TAIL, len(result.trace))} events up to the first violation:")
    lines.extend("    " + line for line in result.trace[-TAIL:])
    lines.append(f"  replay: {replay_command(result, steps, parallel_append)}")
    return "\n".join(lines)
