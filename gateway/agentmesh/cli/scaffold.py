"""``agentmesh new agent NAME``: an agent package to start from, added to agentmesh.yaml.

The package (NAME with ``_`` for ``-``) holds the card and handler
(``agent.py``), the entry point (``__main__.py``: ``python -m PACKAGE``) and a
test that serves the agent on a free port and calls it over gRPC as the
gateway does (``test_agent.py``: ``python -m pytest PACKAGE``). The project
file gains ``agents.NAME: {module: PACKAGE}``; a file that does not exist yet
is created.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from agentmesh.cli.main import EXIT_USAGE, fail
from agentmesh.cli.project import AGENT_NAME, PROJECT_FILE, ProjectError, load_project

_RESERVED = frozenset({"agentmesh", "test", "tests", "grpc", "google", "yaml", "pydantic"})

_INIT = '''"""{name}: an agentmesh agent (card and handler in agent.py)."""
'''

_AGENT = '''"""The {name} agent: its card (what it offers) and its handler (what it does)."""

from __future__ import annotations

from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill


class {cls}(Agent):
    card = AgentCard(
        name="{name}",
        version="0.1.0",
        description="{description}",
        skills=(
            Skill(
                id="count",
                name="Count",
                description="Counts the words and characters of the text.",
                examples=("How long is this text?",),
            ),
        ),
    )

    async def invoke(self, request: Request) -> Result:
        # INVALID_ARGUMENT naming message.parts when the text is missing or too long.
        text = request.require_text(max_chars=100_000)
        words = len(text.split())
        return Result.of(
            text=f"{{words}} words, {{len(text)}} characters",
            data={{"words": words, "characters": len(text)}},
        )
'''

_MAIN = '''"""``python -m {package}``: serve {name} (flags and AGENTMESH_* settings: --help)."""

from __future__ import annotations

from agentmesh.runtime import run
from {package}.agent import {cls}

if __name__ == "__main__":
    run({cls}())  # health, reflection, SIGTERM drain, JSON logs
'''

_TEST = '''"""{name}, served on a free port and called over gRPC as the gateway calls it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from agentmesh.runtime import wire
from agentmesh.testing import running_agent
from agentmesh.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb
from {package}.agent import {cls}


async def _served(text: str) -> tuple[pb.AgentCard, pb.InvokeResponse]:
    async with running_agent({cls}()) as (_, address):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            card = await stub.GetCard(agent_pb2.GetCardRequest(), timeout=10)
            request = pb.InvokeRequest(
                skill="count", message=pb.Message(parts=[pb.Part(text=text)])
            )
            return card, await stub.Invoke(request, timeout=10)


def test_the_served_agent_answers_with_its_card_and_result() -> None:
    card, response = asyncio.run(_served("the cat and the hat"))
    assert card.name == "{name}"
    assert [skill.id for skill in card.skills] == ["count"]
    result = wire.result_from_proto(response)
    assert result.text == "5 words, 19 characters"
    assert result.data == {{"words": 5, "characters": 19}}


def test_an_empty_text_is_invalid_argument_naming_the_field() -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        asyncio.run(_served("  "))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message.parts" in (failed.value.details() or "")
'''

_PROJECT_HEADER = """\
# agentmesh.yaml: the local mesh `agentmesh up` runs (see `agentmesh up --help`).
reference_agents: all       # all, none, or a list such as [calculator, summarizer]
agents:                     # this project's own agents
"""


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "new", help="scaffold an agent package and add it to agentmesh.yaml"
    )
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    agent = kinds.add_parser(
        "agent",
        help="an agent package: card, handler, entry point and a test",
        description="Create the package NAME (with _ for -) holding the agent's card and "
        "handler, its entry point and a test that serves it on a free port; add it to "
        "agentmesh.yaml (created when missing).",
    )
    agent.add_argument("name", help="the agent's name: lower-case letters, digits and -")
    agent.add_argument(
        "--dir", type=Path, default=None, help="project directory (default: the project file's)"
    )
    agent.add_argument(
        "-f",
        "--file",
        type=Path,
        default=None,
        help="project file to add the agent to (default: DIR/agentmesh.yaml)",
    )
    agent.add_argument(
        "--description", default=None, help="the card's description (default: a placeholder)"
    )
    agent.set_defaults(handler=cmd_new_agent)


def package_name(name: str) -> str:
    """The Python package for agent ``name``; exits naming the problem when there is none."""
    if not AGENT_NAME.match(name):
        fail(
            f"agent name {name!r} must be lower-case letters, digits and '-', "
            "starting with a letter",
            status=EXIT_USAGE,
        )
    package = name.replace("-", "_")
    if keyword.iskeyword(package) or package in sys.stdlib_module_names or package in _RESERVED:
        fail(
            f"agent name {name!r} would make a package {package!r} that hides a Python module; "
            "choose another name",
            status=EXIT_USAGE,
        )
    return package


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-")) + "Agent"


def cmd_new_agent(args: argparse.Namespace, console: Console) -> int:
    name: str = args.name
    package = package_name(name)
    project_file: Path = args.file or (args.dir or Path()) / PROJECT_FILE
    directory: Path = args.dir or project_file.parent
    target = directory / package
    if target.exists():
        fail(f"{target} already exists", status=EXIT_USAGE)
    existing = project_file.read_text(encoding="utf-8") if project_file.exists() else None
    if existing is not None:
        try:
            project = load_project(project_file)
        except ProjectError as exc:
            fail(f"fix {project_file} first: {exc}", status=EXIT_USAGE)
        if name in project.agents:
            fail(f"{project_file} already has an agent {name!r}", status=EXIT_USAGE)
    module = _module_path(directory, project_file.parent, package)
    updated = add_agent(existing, name, module)
    try:
        added = (yaml.safe_load(updated) or {}).get("agents", {}).get(name)
    except (yaml.YAMLError, AttributeError):
        added = None
    if added != {"module": module}:
        fail(
            f"cannot add {name} to {project_file} as written; add it by hand:\n"
            f"agents:\n  {name}:\n    module: {module}",
            status=EXIT_USAGE,
        )
    description = (args.description or f"TODO: say what {name} does.").replace('"', "'")
    values = {"name": name, "package": package, "cls": class_name(name)}
    target.mkdir(parents=True)
    for filename, template in (
        ("__init__.py", _INIT),
        ("agent.py", _AGENT),
        ("__main__.py", _MAIN),
        ("test_agent.py", _TEST),
    ):
        text = template.format(**values, description=description)
        (target / filename).write_text(text, encoding="utf-8")
    project_file.write_text(updated, encoding="utf-8")
    console.print(f"created {target}/ (agent.py: card and handler; test_agent.py: its test)")
    console.print(f"added {name} to {project_file}")
    console.print(f"test it:  python -m pytest {target}")
    console.print(f"run it:   agentmesh up --reload   then: agentmesh call {name} 'some text'")
    return 0


def _module_path(directory: Path, root: Path, package: str) -> str:
    """The module name as the project (rooted at the file's directory) imports it."""
    try:
        relative = directory.resolve().relative_to(root.resolve())
    except ValueError:
        fail(f"{directory} is outside the project directory {root}", status=EXIT_USAGE)
    parts = [*relative.parts, package]
    if not all(p.isidentifier() for p in parts):
        fail(f"{directory} cannot be imported as a package path from {root}", status=EXIT_USAGE)
    return ".".join(parts)


_AGENTS_LINE = re.compile(r"^agents:[ \t]*(#.*)?$", re.MULTILINE)


def add_agent(existing: str | None, name: str, module: str) -> str:
    """The project file's text with ``agents.NAME`` added, its comments and layout kept."""
    if existing is None:
        return f"{_PROJECT_HEADER}  {name}:\n    module: {module}\n"
    match = _AGENTS_LINE.search(existing)
    if match is None:
        loaded = yaml.safe_load(existing) or {}
        if "agents" in loaded:  # a flow mapping such as `agents: {}`: rewrite the key
            agents = dict(loaded.get("agents") or {})
            agents[name] = {"module": module}
            lines = [line for line in existing.splitlines() if not line.startswith("agents:")]
            body = yaml.safe_dump({"agents": agents}, sort_keys=False)
            return "\n".join(lines).rstrip("\n") + "\n" + body
        separator = "" if existing.endswith("\n") or not existing else "\n"
        return f"{existing}{separator}agents:\n  {name}:\n    module: {module}\n"
    indent = _child_indent(existing[match.end() :])
    entry = f"{indent}{name}:\n{indent}{indent}module: {module}\n"
    end = match.end() + 1 if match.end() < len(existing) else match.end()
    prefix = existing[:end] if existing[:end].endswith("\n") else existing[:end] + "\n"
    return prefix + entry + existing[end:]


def _child_indent(rest: str) -> str:
    """The indentation the ``agents:`` mapping's entries use (two spaces when it has none)."""
    for line in rest.splitlines()[1:] if rest.startswith("\n") else rest.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = line[: len(line) - len(line.lstrip())]
        return indent or "  "
    return "  "
