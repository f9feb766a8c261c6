"""Differential runs of the real etcdctl against keelson and against a real etcd 3.4.

Theory of operation. A :class:`Pair` starts two clusters of the same size with the same flags
(:class:`~keelson.testing.local_cluster.LocalCluster`: one of ``etcd``, one of ``keelson``),
runs every etcdctl command on both, and hands back both outcomes *normalized*: what differs
between any two clusters by design is replaced by a stable symbol, and nothing else is
touched, so a test compares the two outcomes with ``==``.

What is normalized, and why it legitimately differs:

* member ids and the cluster id: random per cluster; each becomes the member's name
  (``<m0>``), learned from ``member list``, or ``<cluster>``;
* lease ids (etcdctl 3.4 cannot grant with an explicit id) and ids of members the test
  adds: the test registers them (:meth:`Side.learn`) under a symbol of its choosing;
* runs of spaces and of dashes in text output, which etcdctl uses to pad ids and table
  columns to the width of the longest id;
* ports of the members' own URLs (``127.0.0.1:<port>`` becomes ``<m0:client>`` /
  ``<m0:peer>``);
* in JSON only: raft terms and indexes (etcd logs entries keelson does not, e.g. its
  cluster version), db sizes (bbolt and LMDB pages differ), a Status's server version,
  timings and snapshot sizes (:data:`VOLATILE_FIELDS`), dropped.

Revisions are not normalized: both clusters see the same command sequence, so they must
agree on every revision. Error outcomes keep etcdctl's exit code and its last stderr line
(etcdctl logs retries, with timestamps, before its final ``Error: ...`` line).

Invariant: a Side's symbol table only grows, and a value maps to one symbol, so the same
raw output always normalizes the same way.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keelson.testing.etcd import etcdctl
from keelson.testing.local_cluster import LocalCluster

KINDS = ("etcd", "keelson")

VOLATILE_FIELDS = frozenset({
    "raft_term", "raftTerm", "raftIndex", "raftAppliedIndex", "dbSize", "dbSizeInUse",
    "took", "totalSize",
})
"""JSON fields whose values differ between two clusters by design (see the module doc);
also ``version`` in a Status (the server's version; a key's ``version`` is compared)."""

COMMON_FLAGS = ("--command-timeout=15s", "--dial-timeout=5s")

_HEX = re.compile(r"\b[0-9a-f]{8,16}\b")
_DEC = re.compile(r"\b[0-9]{9,20}\b")
_ATTACHED = re.compile(r"attached keys\(\[([^\]]*)\]\)")
_TOOK = re.compile(r"took = [0-9.]+[a-zµ]*s")
_SPACES = re.compile(r" {2,}")
_DASHES = re.compile(r"-{2,}")
_HOSTPORT = re.compile(r"127\.0\.0\.1:([0-9]{2,5})")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What etcdctl did: exit code, normalized stdout, and its last stderr line on failure
    (or on a success with nothing on stdout), with timings replaced."""

    code: int
    out: Any
    err: str = ""


@dataclass
class Side:
    """One system under test: its cluster and the symbols its raw output is mapped through."""

    kind: str
    cluster: LocalCluster
    ints: dict[int, str] = field(default_factory=dict)
    ports: dict[str, str] = field(default_factory=dict)

    def endpoint(self, index: int | None = None) -> str:
        """All endpoints, or one member's."""
        return self.cluster.endpoints if index is None else self.cluster.members[index].endpoint

    def learn(self, value: int, symbol: str) -> str:
        """Map ``value`` (an id) to ``symbol`` in everything this side prints from now on."""
        known = self.ints.get(value)
        if known is not None and known != symbol:
            raise AssertionError(f"{self.kind}: {value:x} is already {known}, not {symbol}")
        self.ints[value] = symbol
        return symbol

    def learn_members(self) -> None:
        """Learn the cluster id, member ids (by name) and the members' ports."""
        for m in self.cluster.members:
            self.ports[str(m.client_port)] = f"<{m.name}:client>"
            self.ports[str(m.peer_port)] = f"<{m.name}:peer>"
        r = etcdctl(self.endpoint(), *COMMON_FLAGS, "member", "list", "-w", "json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        self.learn(int(doc["header"]["cluster_id"]), "<cluster>")
        for m in doc["members"]:
            if m.get("name"):
                self.learn(int(m["ID"]), f"<{m['name']}>")

    def member_id(self, name: str) -> int:
        for value, symbol in self.ints.items():
            if symbol == f"<{name}>":
                return value
        raise KeyError(name)

    def hex_id(self, symbol: str) -> str:
        """The id registered as ``symbol``, as etcdctl takes it on its command line."""
        for value, known in self.ints.items():
            if known == symbol:
                return f"{value:x}"
        raise KeyError(symbol)

    # -- running --------------------------------------------------------------------------

    def raw(self, *args: str, stdin: str | None = None, endpoint: int | None = None,
            timeout: float = 30) -> tuple[int, str, str]:
        r = etcdctl(self.endpoint(endpoint), *COMMON_FLAGS, *args, stdin=stdin, timeout=timeout)
        lines = [_TOOK.sub("took = <t>", ln) for ln in r.stderr.strip().splitlines()]
        # a failure's message is the last stderr line; a success that prints nothing on
        # stdout may still answer on stderr (``endpoint health``, a line per endpoint in the
        # order the checks finished): keep those lines (``run`` sorts them)
        if not lines or (r.returncode == 0 and r.stdout):
            return r.returncode, r.stdout, ""
        return r.returncode, r.stdout, lines[-1] if r.returncode else "\n".join(lines)

    def run(self, *args: str, stdin: str | None = None, endpoint: int | None = None) -> Outcome:
        code, out, err = self.raw(*args, stdin=stdin, endpoint=endpoint)
        as_json = "json" in args and ("-w" in args or "--write-out" in args)
        if code == 0 and as_json:
            return Outcome(code, self.normalize_json(out))
        err = self.normalize_text(err)
        if code == 0:  # success lines on stderr come in the order the checks finished
            err = "\n".join(sorted(err.splitlines()))
        return Outcome(code, self.normalize_text(out), err)

    # -- normalizing ----------------------------------------------------------------------

    def normalize_text(self, text: str) -> str:
        def port(m: re.Match[str]) -> str:
            return self.ports.get(m.group(1), m.group(0))

        def hexa(m: re.Match[str]) -> str:
            token = m.group(0)
            return self.ints.get(int(token, 16), token)

        def dec(m: re.Match[str]) -> str:
            token = m.group(0)
            return self.ints.get(int(token), token)

        # a lease's attached keys are listed in Go map order on etcd
        text = _ATTACHED.sub(lambda m: "attached keys([" + " ".join(sorted(m.group(1).split()))
                             + "])", text)
        text = _HOSTPORT.sub(port, text)
        text = _HEX.sub(hexa, text)
        text = _DEC.sub(dec, text)
        # etcdctl pads ids to 16 hex digits with spaces ("%16x") and sizes table columns to
        # the longest cell, so an id's length shows in the layout: collapse the padding
        return _DASHES.sub("-", _SPACES.sub(" ", text))

    def normalize_json(self, text: str) -> Any:
        """Parse one JSON document (or one per line, as ``watch -w json`` prints) and
        normalize it."""
        text = text.strip()
        try:
            return self._normalize_node(json.loads(text))
        except json.JSONDecodeError:
            return [self._normalize_node(json.loads(line)) for line in text.splitlines()]

    def _normalize_node(self, node: Any) -> Any:
        if isinstance(node, dict):
            is_status = "dbSize" in node
            out = {k: self._normalize_node(v) for k, v in node.items()
                   if k not in VOLATILE_FIELDS and not (is_status and k == "version")}
            if isinstance(out.get("keys"), list):  # a lease's keys, in Go map order on etcd
                out["keys"] = sorted(out["keys"])
            if isinstance(out.get("members"), list):
                # listed in id order, and ids are random: order by what the ids stand for
                out["members"] = sorted(out["members"], key=lambda m: json.dumps(m, sort_keys=True))
            return out
        if isinstance(node, list):
            return [self._normalize_node(v) for v in node]
        if isinstance(node, bool):
            return node
        if isinstance(node, int):
            return self.ints.get(node, node)
        if isinstance(node, str):
            return self.normalize_text(node)
        return node


@dataclass
class Pair:
    """The same cluster twice, once of etcd and once of keelson."""

    size: int
    workdir: Path
    extra_args: tuple[str, ...] = ()
    sides: dict[str, Side] = field(default_factory=dict)

    def start(self) -> Pair:
        try:
            for kind in KINDS:
                self.sides[kind] = Side(kind, self._start_cluster(kind))
            for side in self.sides.values():
                self._wait_published(side)
                side.learn_members()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_published(self, side: Side, timeout: float = 60) -> None:
        """Wait until every member has published its client URLs (etcd serves clients only
        after its member did; keelson's members publish right after start)."""
        deadline = time.monotonic() + timeout
        while True:
            code, out, _ = side.raw("member", "list", "-w", "json")
            members = json.loads(out).get("members", []) if code == 0 else []
            if len(members) == self.size and all(m.get("clientURLs") for m in members):
                return
            assert time.monotonic() < deadline, f"{side.kind}: members never published: {out}"
            time.sleep(0.2)

    def _start_cluster(self, kind: str, attempts: int = 3) -> LocalCluster:
        """Start one cluster in a fresh dir; ports come from the OS a moment before the
        members bind them, so another process may take one first: then try again."""
        for attempt in range(attempts):
            cluster = LocalCluster(kind, self.size, self.workdir / f"{kind}{attempt}",
                                   extra_args=self.extra_args)
            try:
                return cluster.start(timeout=90)
            except (RuntimeError, TimeoutError):
                cluster.stop()
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        for side in self.sides.values():
            side.cluster.stop()

    @property
    def etcd(self) -> Side:
        return self.sides["etcd"]

    @property
    def keelson(self) -> Side:
        return self.sides["keelson"]

    def run(self, *args: str, stdin: str | None = None,
            endpoint: int | None = None) -> dict[str, Outcome]:
        return {kind: side.run(*args, stdin=stdin, endpoint=endpoint)
                for kind, side in self.sides.items()}

    def same(self, *args: str, stdin: str | None = None, endpoint: int | None = None,
             ok: bool | None = True, sort_lines: bool = False) -> Outcome:
        """Run on both; assert both outcomes are equal (and succeeded, or failed, as ``ok``
        says; None: either); return etcd's. ``sort_lines``: compare the lines of the text
        output as a sorted list (for lists printed in member id order)."""
        got = self.run(*args, stdin=stdin, endpoint=endpoint)
        if sort_lines:
            got = {k: Outcome(o.code, sorted(str(o.out).splitlines()), o.err)
                   for k, o in got.items()}
        assert got["keelson"] == got["etcd"], (args, got)
        if ok is not None:
            assert (got["etcd"].code == 0) == ok, (args, got["etcd"])
        return got["etcd"]

    def leader_index(self, kind: str) -> int:
        side = self.sides[kind]
        code, out, err = side.raw("endpoint", "status", "-w", "json")
        assert code == 0, err
        for i, s in enumerate(json.loads(out)):
            if s["Status"]["leader"] == s["Status"]["header"]["member_id"]:
                return i
        raise AssertionError(f"{kind}: no leader among {out}")


class Watcher:
    """``etcdctl watch ...`` running in the background until :meth:`stop`."""

    def __init__(self, side: Side, *args: str, endpoint: int | None = None) -> None:
        exe = shutil.which("etcdctl")
        assert exe is not None
        self.side = side
        self.proc = subprocess.Popen(
            [exe, "--endpoints", side.endpoint(endpoint), *COMMON_FLAGS, "watch", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"ETCDCTL_API": "3"},
        )

    def stop(self, events: int, timeout: float = 20) -> tuple[str, str]:
        """Wait until ``events`` events were printed (or the process ends, or ``timeout``),
        then stop it; return (stdout, stderr)."""
        assert self.proc.stdout is not None
        out = b""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline and _count_events(out.decode()) < events:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                out += chunk
        self.proc.terminate()
        try:
            rest, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, err = self.proc.communicate(timeout=10)
        return (out + rest).decode(), err.decode()


def _count_events(text: str) -> int:
    """Events in ``etcdctl watch`` output: one ``"kv":`` each in JSON, one PUT/DELETE line
    each in the simple format."""
    return text.count('"kv":') + sum(1 for line in text.splitlines() if line in ("PUT", "DELETE"))
