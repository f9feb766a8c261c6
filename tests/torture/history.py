"""The history a torture run records and its checkers read.

Each client performs one operation at a time. An operation is recorded once, when it
completes (or is given up on), with both its invocation and completion times taken from
``time.monotonic_ns()`` in the harness process, so the real-time order of any two
operations is known exactly when one completed before the other was invoked.

``status`` follows Jepsen: ``ok`` means the operation took effect and ``result`` is what it
returned; ``fail`` means it certainly did not take effect (e.g. a CAS whose compare failed
or an error the server returns before proposing); ``info`` means we do not know (timeout,
connection lost after sending): the operation may have taken effect at any time after its
invocation, even after the end of the run, so checkers treat its completion as infinite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "fail", "info"]


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation.

    Register workload (``f`` in ``read``, ``write``, ``cas``) on ``key``:
      - read:  ``value`` None; ``result`` the value read, None when the key is absent.
      - write: ``value`` the value written; ``result`` None.
      - cas:   ``value`` ``(expected, new)``; ``result`` True when swapped. A cas whose
               compare failed is recorded with status ``fail``.
    Append workload (``f == "txn"``, ``key`` ""): ``value`` a tuple of micro-ops
      ``("append", k, v)`` / ``("r", k, None)``; ``result`` the same micro-ops with reads
      filled in as tuples of the values in the list under ``k`` (empty when absent).
    """

    client: int
    f: str
    key: str
    value: Any
    invoke: int
    complete: int | None
    status: Status
    result: Any = None
    index: int = field(default=-1, compare=False)

    def to_json(self) -> str:
        return json.dumps(
            {
                "client": self.client,
                "f": self.f,
                "key": self.key,
                "value": self.value,
                "invoke": self.invoke,
                "complete": self.complete,
                "status": self.status,
                "result": self.result,
            }
        )


def _tuplify(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_tuplify(v) for v in x)
    return x


def op_from_json(line: str, index: int = -1) -> Op:
    d = json.loads(line)
    return Op(
        client=d["client"],
        f=d["f"],
        key=d["key"],
        value=_tuplify(d["value"]),
        invoke=d["invoke"],
        complete=d["complete"],
        status=d["status"],
        result=_tuplify(d["result"]),
        index=index,
    )


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event as a watcher saw it: ``type`` is ``put`` or ``delete``."""

    revision: int
    key: str
    type: str
    value: str | None
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A violation a checker found: which checker, what, and the smallest failing history."""

    checker: str
    kind: str
    detail: str
    ops: tuple[Op, ...] = ()

    def __str__(self) -> str:
        lines = [f"[{self.checker}] {self.kind}: {self.detail}"]
        lines += [f"    {op}" for op in self.ops]
        return "\n".join(lines)
