"""keelson.raft.sim: a seeded, deterministic simulator of a keelson raft cluster.

In the manner of TigerBeetle's VOPR and FoundationDB's simulator: the network, the disks
(what each member persisted) and the clock are simulated, faults are injected from one
seed, Raft's safety rules are checked after every step and progress once faults heal,
and any failure replays exactly from its seed: ``python -m keelson.raft.sim --seed S
--trace``.

Modules: ``clock`` (virtual time, event agenda), ``network`` (loss, duplication, delay,
partitions), ``node`` (durable vs volatile state of one member), ``faults`` (the fault
schedule), ``checker`` (the invariants), ``trace``, ``cluster`` (one run), ``run``
(seeds and reports).
"""

from keelson.raft.sim.checker import INVARIANTS, Checker, Violation
from keelson.raft.sim.cluster import RunResult, SimOptions, Simulation
from keelson.raft.sim.run import report, run_seed

__all__ = [
    "INVARIANTS",
    "Checker",
    "RunResult",
    "SimOptions",
    "Simulation",
    "Violation",
    "report",
    "run_seed",
]
