"""Generate (or check) the Python code for the protos under ``protos/``.

The one codegen entry point: ``make install``, CI and the container image all
run it. It needs only the ``codegen`` extra (grpcio-tools and mypy-protobuf,
pinned exactly so the output is reproducible).

    python protos/codegen.py           # regenerate in place
    python protos/codegen.py --check   # exit 1 if the committed code has drifted
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("agentmesh/**/*.proto"))


def _plugin(name: str) -> str:
    # The plugins are console scripts of mypy-protobuf, installed beside python.
    candidate = Path(sys.executable).with_name(name)
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"codegen: {name} not found; install the 'codegen' extra")
    return found


def generate(out_dir: Path) -> None:
    """Run protoc on every proto into ``out_dir`` (same package layout)."""
    from grpc_tools import protoc  # imported late: only codegen needs grpcio-tools

    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("codegen: protoc failed")


def generated_files(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p
        for p in root.glob("agentmesh/**/*")
        if p.name.endswith(GENERATED_SUFFIXES)
    }


def drift(fresh_root: Path, committed_root: Path = PROTO_ROOT) -> list[str]:
    """Describe every difference between fresh output and the committed files."""
    fresh, committed = generated_files(fresh_root), generated_files(committed_root)
    problems = [f"missing: {name}" for name in sorted(fresh.keys() - committed.keys())]
    problems += [f"stale: {name}" for name in sorted(committed.keys() - fresh.keys())]
    problems += [
        f"differs: {name}"
        for name in sorted(fresh.keys() & committed.keys())
        if not filecmp.cmp(fresh[name], committed[name], shallow=False)
    ]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code drifted")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        generate(fresh_root)
        problems = drift(fresh_root)
        if args.check:
            for problem in problems:
                print(f"codegen drift: {problem}", file=sys.stderr)
            if problems:
                print("run: python protos/codegen.py", file=sys.stderr)
            return 1 if problems else 0
        for name in generated_files(PROTO_ROOT).keys() - generated_files(fresh_root).keys():
            (PROTO_ROOT / name).unlink()
        for name, path in generated_files(fresh_root).items():
            shutil.copyfile(path, PROTO_ROOT / name)
        print(f"codegen: {len(generated_files(fresh_root))} files from {len(proto_files())} protos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
