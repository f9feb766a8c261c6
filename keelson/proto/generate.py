"""Regenerate keelson's protobuf and gRPC Python modules.

Theory of operation: every ``.proto`` file under ``keelson/proto/`` is compiled by
grpcio-tools' bundled ``protoc`` with the repository root as the only include path, so
a file at ``keelson/proto/etcdserverpb/rpc.proto`` becomes the module
``keelson.proto.etcdserverpb.rpc_pb2`` and imports its dependencies as
``keelson.proto.<...>``. Outputs (``*_pb2.py``, ``*_pb2_grpc.py``, ``*_pb2.pyi``) are
written beside their sources and committed; each gets a ``# ruff: noqa`` line because
it is generated code, and ``# mypy: ignore-errors`` (the output is not strict-clean).
Run from anywhere: ``python -m keelson.proto.generate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_PROTO_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PROTO_DIR.parent.parent
_MARK = "# ruff: noqa\n"
# grpcio-tools' output is not mypy --strict clean (untyped stubs, bare Mapping in .pyi);
# silence it so packages importing proto can run mypy --strict.
_UNTYPED = "# mypy: ignore-errors\n"


def proto_files() -> list[Path]:
    """The .proto sources, in sorted order so runs are reproducible."""
    return sorted(_PROTO_DIR.rglob("*.proto"))


def generate(out_root: Path = _REPO_ROOT) -> list[Path]:
    """Compile every .proto file into ``out_root`` (the repository root by default).

    Returns the generated files. Raises RuntimeError on protoc failure.
    """
    import importlib.resources

    from grpc_tools import protoc  # type: ignore[import-untyped]  # build-time only

    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    sources = [str(p) for p in proto_files()]
    for pkg in sorted({p.parent for p in proto_files()}):
        init = out_root / pkg.relative_to(_REPO_ROOT) / "__init__.py"
        init.parent.mkdir(parents=True, exist_ok=True)
        if not init.exists():
            init.write_text(f'"""Generated protobuf modules for {pkg.name}."""\n')
    args = [
        "grpc_tools.protoc",
        f"-I{_REPO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *sources,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(args)}")
    outputs: list[Path] = []
    for proto in proto_files():
        stem = out_root / proto.relative_to(_REPO_ROOT).with_suffix("")
        for suffix in ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi"):
            out = stem.parent / (stem.name + suffix)
            text = out.read_text()
            mark = _MARK + _UNTYPED
            if not text.startswith(_MARK):
                out.write_text(mark + text)
            outputs.append(out)
    return outputs


def main() -> int:
    for out in generate():
        print(out.relative_to(_REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
