"""The durability checker: every acknowledged write is in the final state, unless overwritten.

Input: the :class:`~.history.Op` list and ``final_kv`` (key -> (value, mod_revision)), the
key space read once every fault healed; it must cover every key the register and append
workloads touch (a key absent from it is taken as absent from the store).

- Registers (``write``, ``cas``): the final value of a key must be one some non-``fail``
  write/cas wrote (else ``final-value-never-written``), and each ok write/cas whose value is
  not the final one must have a possible overwriter: another non-``fail`` write/cas of the
  key not known to complete before it was invoked (else ``lost-write``). Values are compared
  as strings (``str(value)``), the form the harness stores.
- Appends (``txn`` with ``("append", k, v)``): the final value of ``k`` is decoded as a list
  (a JSON array, or comma-separated values; ``decode`` overrides) and every ok append must be
  in it (``lost-append``); every element must have been appended by a non-``fail`` txn
  (``final-value-never-written``). Elements are compared as strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping

from .history import Anomaly, Op

CHECKER = "durability"

Decoder = Callable[[str], list[str]]


def decode_list(raw: str) -> list[str]:
    """A list stored as a JSON array or as comma-separated values ("" is the empty list)."""
    raw = raw.strip()
    if raw.startswith("["):
        return [str(v) for v in json.loads(raw)]
    return [p.strip() for p in raw.split(",") if p.strip()]


def check_durability(
    ops: Iterable[Op],
    final_kv: Mapping[str, tuple[str, int]],
    decode: Decoder = decode_list,
) -> list[Anomaly]:
    """Check ok writes/cas/appends of ``ops`` against ``final_kv``."""
    writes: dict[str, list[Op]] = {}
    appends: dict[str, list[tuple[str, Op]]] = {}
    for op in ops:
        if op.status == "fail":
            continue
        if op.f in ("write", "cas"):
            if op.f == "cas" and op.status == "ok" and op.result is not True:
                continue
            writes.setdefault(op.key, []).append(op)
        elif op.f == "txn":
            for m in op.value:
                if m[0] == "append":
                    appends.setdefault(str(m[1]), []).append((str(m[2]), op))
    out: list[Anomaly] = []
    for key in sorted(writes):
        out.extend(_check_register(key, writes[key], final_kv.get(key)))
    for key in sorted(appends):
        out.extend(_check_list(key, appends[key], final_kv.get(key), decode))
    return out


def _written(op: Op) -> str:
    return str(op.value[1] if op.f == "cas" else op.value)


def _check_register(key: str, ws: list[Op], final: tuple[str, int] | None) -> list[Anomaly]:
    out: list[Anomaly] = []
    final_value = None if final is None else final[0]
    if final_value is not None and not any(_written(w) == final_value for w in ws):
        out.append(
            Anomaly(
                CHECKER,
                "final-value-never-written",
                f"key {key!r}: final value {final_value!r} was written by no write/cas",
            )
        )
    for w in ws:
        if w.status != "ok" or _written(w) == final_value:
            continue
        # the register workload never deletes: an absent key lost every write
        overwriter = final_value is not None and any(
            o is not w and (o.complete is None or o.complete >= w.invoke) for o in ws
        )
        if not overwriter:
            out.append(
                Anomaly(
                    CHECKER,
                    "lost-write",
                    f"key {key!r}: acknowledged write of {_written(w)!r} is not the final "
                    f"value {final_value!r} and no later write could have overwritten it",
                    (w,),
                )
            )
    return out


def _check_list(
    key: str, appended: list[tuple[str, Op]], final: tuple[str, int] | None, decode: Decoder
) -> list[Anomaly]:
    out: list[Anomaly] = []
    try:
        values = decode(final[0]) if final is not None else []
    except ValueError as e:
        return [Anomaly(CHECKER, "undecodable", f"key {key!r}: final value {final!r}: {e}")]
    have = set(values)
    known = {v for v, _ in appended}
    lost = [(v, op) for v, op in appended if op.status == "ok" and v not in have]
    if lost:
        shown = ", ".join(v for v, _ in lost[:10])
        out.append(
            Anomaly(
                CHECKER,
                "lost-append",
                f"key {key!r}: {len(lost)} acknowledged appends missing from the final list "
                f"({len(values)} values): {shown}",
                tuple(op for _, op in lost[:10]),
            )
        )
    garbage = [v for v in values if v not in known]
    if garbage:
        out.append(
            Anomaly(
                CHECKER,
                "final-value-never-written",
                f"key {key!r}: final list holds values no txn appended: {garbage[:10]}",
            )
        )
    return out
