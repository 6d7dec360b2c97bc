"""Every shell and Python example in README.md and docs/*.md, run against a real ``agentmesh up``.

The examples are read when the tests are collected, so whatever the pages say
now is what runs. How a page's examples are run (also in README.md, "Docs that run"):

- Fenced ``sh``, ``bash``, ``shell`` and ``python`` blocks are examples; other fences
  (yaml, json, plain) are not run.
- ``<!-- not-run: REASON -->`` just before a block skips it with REASON. Kept for what
  cannot run offline or needs what the mesh does not start (a cluster, docker, buf,
  an LLM key), and for commands that would not end (the benchmark, the suite itself).
- Everything runs in a fresh copy of the repository (its tracked and unignored files)
  where one ``agentmesh up`` runs from the copy's agentmesh.yaml, on free ports; the
  examples find it through ``AGENTMESH_GATEWAY``, and ``127.0.0.1:50051`` in their text
  becomes its address. The virtualenv's ``bin`` comes first on PATH.
- A shell block runs under ``bash -e -o pipefail``. A line that is ``make up`` or
  ``agentmesh up ...`` stands for that running mesh and is skipped. A command whose
  comment starts with ``# error:`` must fail, printing the rest of the comment.
- A page's Python blocks run in order in one namespace, as in a ``python -m asyncio``
  session (top-level ``await`` allowed). ``__name__`` is not ``"__main__"``, so
  ``if __name__ == "__main__": run(...)`` defines an agent without serving it. A block
  whose first line is ``# PATH`` naming a file of the repository must be that file.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from meshtest import REPO_ROOT, free_port, free_port_range
from uptest import Up, cli_env, running_up

from agentmesh.agents import REFERENCE_AGENTS

pytestmark = pytest.mark.slow

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
SHELLS = ("sh", "bash", "shell")
DEFAULT_ADDRESS = "127.0.0.1:50051"
_FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)\s*$")
_NOT_RUN = re.compile(r"<!--\s*not-run:(.*?)-->")
_MESH_LINE = re.compile(r"^(make up|agentmesh up)(\s|$)")
# Commands that would change the environment the suite itself runs in (the
# virtualenv is first on PATH) or run the suite again: such an example must be
# marked not-run, or the test refuses it.
_HARMFUL = re.compile(r"(^|[;&|(]\s*)(pip3? install|python3? -m pip install|make(?! up\b))\b")


@dataclass(frozen=True, slots=True)
class Example:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None  # the reason, when marked

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"


def examples(page: Path) -> list[Example]:
    """The fenced blocks of a page, with the not-run reason written just before each."""
    found: list[Example] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        before = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = _NOT_RUN.search(before)
        found.append(
            Example(
                page,
                index + 1,
                opening.group(1).lower(),
                "\n".join(lines[index + 1 : end]) + "\n",
                marker.group(1).strip() if marker else None,
            )
        )
        index = end + 1
    return found


def _shell_examples() -> list[Example]:
    return [e for page in PAGES for e in examples(page) if e.language in SHELLS]


def _python_pages() -> list[Path]:
    return [p for p in PAGES if any(e.language == "python" for e in examples(p))]


# -- the mesh ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DocsMesh:
    clone: Path
    env: dict[str, str]
    gateway: str
    up: Up


def _fresh_copy(target: Path) -> None:
    """The repository as a clone has it: tracked files and new ones not ignored."""
    for name in _repository_files():
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def _repository_files() -> list[str]:
    if shutil.which("git") is not None and (REPO_ROOT / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO_ROOT, capture_output=True, check=True,
        ).stdout.decode()  # fmt: skip
        return [name for name in listed.split("\0") if name]
    # Not a git checkout (an unpacked archive): every file but what .gitignore names.
    patterns = [".git"] + [
        line.strip().rstrip("/")
        for line in (REPO_ROOT / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    names = []
    for path in REPO_ROOT.rglob("*"):
        relative = path.relative_to(REPO_ROOT).as_posix()
        parts = relative.split("/")
        ignored = any(
            fnmatch.fnmatch(relative, p) or relative.startswith(f"{p}/")
            if "/" in p
            else any(fnmatch.fnmatch(part, p) for part in parts)
            for p in patterns
        )
        if path.is_file() and not ignored:
            names.append(relative)
    return names


@pytest.fixture(scope="module")
def docs_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsMesh]:
    base = tmp_path_factory.mktemp("docs")
    clone = base / "agentmesh"
    clone.mkdir()
    _fresh_copy(clone)
    port = free_port()
    gateway = f"127.0.0.1:{port}"
    env = cli_env(
        base / "state",
        AGENTMESH_GATEWAY=gateway,
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        COLUMNS="100",
    )
    args = ["--port", str(port), "--agent-port-base", str(free_port_range(len(REFERENCE_AGENTS)))]
    with running_up(args, cwd=clone, env=env, gateway=gateway) as up:
        yield DocsMesh(clone, env, gateway, up)


# -- shell ---------------------------------------------------------------------


def _split_comment(line: str) -> tuple[str, str]:
    """A shell line as (command, comment): the first ``#`` outside quotes after a blank."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line, ""


def shell_script(code: str, gateway: str) -> str:
    """The block as bash runs it: mesh lines skipped, ``# error:`` lines checked."""
    out = ["set -e -o pipefail"]
    continued = False
    for number, line in enumerate(code.replace(DEFAULT_ADDRESS, gateway).splitlines(), 1):
        harmful = _HARMFUL.search(_split_comment(line)[0].strip())
        if harmful:
            raise AssertionError(
                f"line {number} ({line.strip()}) would change the environment the tests run "
                "in: mark the block <!-- not-run: REASON -->"
            )
        if continued:
            out.append(line)
            continued = line.rstrip().endswith("\\")
            continue
        command, comment = _split_comment(line)
        if _MESH_LINE.match(command.strip()):
            out.append(f": 'the mesh of this test stands for: {command.strip()}'")
            continue
        if comment.startswith("error:") and command.strip() and not command.endswith("\\"):
            expected = comment.removeprefix("error:").strip()
            out.append(
                textwrap.dedent(
                    f"""\
                    if {command} > "$EXAMPLE_OUT" 2>&1; then
                      echo "line {number} should have failed: {command}" >&2; exit 1
                    fi
                    grep -qF -- {_quote(expected)} "$EXAMPLE_OUT" || {{
                      echo "line {number} did not print: {expected}" >&2
                      cat "$EXAMPLE_OUT" >&2; exit 1; }}"""
                )
            )
            continue
        out.append(line)
        continued = line.rstrip().endswith("\\")
    return "\n".join(out) + "\n"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


@pytest.mark.parametrize("example", _shell_examples(), ids=lambda e: e.where)
def test_shell_example(example: Example, docs_mesh: DocsMesh, tmp_path: Path) -> None:
    if example.not_run is not None:
        assert example.not_run, f"{example.where}: a not-run marker must say why"
        pytest.skip(f"not-run: {example.not_run}")
    script = shell_script(example.code, docs_mesh.gateway)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=docs_mesh.clone,
        env={**docs_mesh.env, "EXAMPLE_OUT": str(tmp_path / "out.txt")},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, (
        f"{example.where} failed with status {done.returncode}:\n{example.code}\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )


# -- python --------------------------------------------------------------------

_SESSION = """
import ast, asyncio, json, sys, traceback
blocks = json.load(sys.stdin)
namespace = {"__name__": "docs_example", "__builtins__": __builtins__}
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
for where, source in blocks:
    try:
        code = compile(source, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)
        if asyncio.iscoroutine(result):
            loop.run_until_complete(result)
    except BaseException:
        print(f"{where} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    print(f"{where} ok", flush=True)
"""


@pytest.mark.parametrize("page", _python_pages(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_python_examples(page: Path, docs_mesh: DocsMesh) -> None:
    blocks = [e for e in examples(page) if e.language == "python"]
    runnable = [e for e in blocks if e.not_run is None]
    for example in blocks:
        if example.not_run is not None:
            assert example.not_run, f"{example.where}: a not-run marker must say why"
        first = example.code.splitlines()[0] if example.code.strip() else ""
        named = REPO_ROOT / first.removeprefix("# ").strip() if first.startswith("# ") else None
        if named is not None and named.is_file() and named.suffix == ".py":
            assert example.code == named.read_text(encoding="utf-8"), (
                f"{example.where} shows {first[2:]} but differs from that file"
            )
    if not runnable:
        pytest.skip("every Python example of this page is marked not-run")
    sources = [(e.where, e.code.replace(DEFAULT_ADDRESS, docs_mesh.gateway)) for e in runnable]
    done = subprocess.run(
        [sys.executable, "-c", _SESSION],
        input=json.dumps(sources),
        cwd=docs_mesh.clone,
        env=docs_mesh.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, (
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-5000:]}"
    )


def test_the_marker_convention_is_what_the_readme_says() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "<!-- not-run: REASON -->" in readme
    assert "tests/cli/test_docs_examples.py" in readme
