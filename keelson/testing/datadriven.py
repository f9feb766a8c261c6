"""A runner for data-driven test files in the format of etcd's ``datadriven`` package.

A file is a sequence of blocks separated by blank lines. Each block is::

    command arg1=val arg2=(a,b) arg3
    optional input lines
    ----
    expected output (may be empty)

The runner calls ``handler(TestCase) -> str`` for each block and compares with the expected
output. With ``KEELSON_REWRITE=1`` in the environment it rewrites the file with the actual
outputs instead of failing. Lines starting with ``#`` outside blocks are comments.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Arg:
    key: str
    vals: list[str]

    def int(self) -> int:
        return int(self.vals[0])


@dataclass
class TestCase:
    __test__ = False  # not a pytest class

    pos: str
    cmd: str
    args: list[Arg] = field(default_factory=list)
    input: str = ""

    def arg(self, key: str) -> Arg | None:
        for a in self.args:
            if a.key == key:
                return a
        return None

    def positional(self) -> list[str]:
        return [a.key for a in self.args if not a.vals]


def parse_args(words: list[str]) -> list[Arg]:
    args: list[Arg] = []
    for w in words:
        if "=" in w:
            k, v = w.split("=", 1)
            if v.startswith("(") and v.endswith(")"):
                vals = [x.strip() for x in v[1:-1].split(",") if x.strip()]
            else:
                vals = [v]
            args.append(Arg(k, vals))
        else:
            args.append(Arg(w, []))
    return args


@dataclass
class _Block:
    start: int
    header: str
    input_lines: list[str]
    expected: str


def _parse(path: Path) -> tuple[list[str], list[_Block]]:
    lines = path.read_text().splitlines()
    blocks: list[_Block] = []
    preamble: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            if not blocks:
                preamble.append(line)
            i += 1
            continue
        start = i
        header = line
        i += 1
        inp: list[str] = []
        while i < len(lines) and lines[i] != "----":
            inp.append(lines[i])
            i += 1
        if i >= len(lines):
            raise ValueError(f"{path}:{start + 1}: block without ---- separator")
        i += 1
        out: list[str] = []
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        blocks.append(_Block(start, header, inp, "\n".join(out)))
    return preamble, blocks


def run_file(path: Path, handler: Callable[[TestCase], str]) -> None:
    rewrite = os.environ.get("KEELSON_REWRITE") == "1"
    preamble, blocks = _parse(path)
    out_parts: list[str] = []
    failures: list[str] = []
    for b in blocks:
        words = b.header.split()
        tc = TestCase(f"{path.name}:{b.start + 1}", words[0], parse_args(words[1:]),
                      "\n".join(b.input_lines))
        actual = handler(tc).rstrip("\n")
        if actual != b.expected and not rewrite:
            failures.append(
                f"{tc.pos}: {b.header}\n--- expected\n{b.expected}\n--- actual\n{actual}"
            )
            break  # later blocks depend on this one
        body = "\n".join([b.header, *b.input_lines, "----"])
        out_parts.append(body + ("\n" + actual if actual else ""))
    if rewrite:
        text = "\n".join(preamble).strip("\n")
        path.write_text((text + "\n\n" if text else "") + "\n\n".join(out_parts) + "\n")
        return
    if failures:
        raise AssertionError("\n".join(failures))
