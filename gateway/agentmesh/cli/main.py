"""The ``agentmesh`` command.

agentmesh up                         run a local mesh (agentmesh.yaml when present), supervised
agentmesh status | logs              what the local mesh runs; its services' logs
agentmesh new agent NAME             scaffold an agent package and add it to agentmesh.yaml
agentmesh agents                     list the gateway's agents
agentmesh call TARGET INPUT          call an agent (TARGET: NAME, NAME/SKILL or skill:SKILL;
                                     INPUT: text, @FILE or - for stdin)
agentmesh run WORKFLOW --input ...   run a workflow (a YAML file or a declared name) with
                                     live progress

Exit status: 0 success, 1 a failed call or command, 2 bad usage or configuration,
3 (``up``) an address the mesh needs is taken, 130 interrupted, 141 output pipe closed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from agentmesh.client import (
    DEFAULT_GATEWAY,
    AgentInfo,
    CallError,
    Client,
    Final,
    Partial,
    Security,
    Started,
    StreamError,
)
from agentmesh.runtime.types import TextPart

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141  # as a process killed by SIGPIPE

Handler = Callable[[argparse.Namespace, Console], int]
"""A command: parsed arguments and the console in, exit status out."""

# Modules with more subcommands: each has ``register(commands)``, which adds
# its parsers with ``set_defaults(handler=...)``. Imported when the parser is
# built, so they may import this module's helpers.
_COMMAND_MODULES: tuple[str, ...] = (
    "agentmesh.cli.trace",
    "agentmesh.cli.run",
    "agentmesh.cli.fanout",
    "agentmesh.cli.jobs",
    "agentmesh.cli.breakers",
    "agentmesh.cli.keys",
    "agentmesh.cli.status",
    "agentmesh.cli.logs",
    "agentmesh.cli.scaffold",
    "agentmesh.cli.chat",
    "agentmesh.cli.mcp",
)

_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_GATEWAY_FORM = "HOST:PORT, e.g. 127.0.0.1:50051"


def gateway_address(value: str) -> str:
    """A ``--gateway`` value checked: HOST:PORT (or a gRPC target such as dns:///HOST:PORT)."""
    value = value.strip()
    if "://" in value and not value.startswith("dns:"):
        scheme = value.split("://", 1)[0]
        hint = " (for TLS add --tls-ca or AGENTMESH_TLS=1)" if scheme == "https" else ""
        raise argparse.ArgumentTypeError(f"{value!r} has a URL scheme: give {_GATEWAY_FORM}{hint}")
    if value.startswith(("dns:", "unix:", "ipv4:", "ipv6:")):
        return value
    match = _HOST_PORT.match(value)
    if match is None or not 0 < int(match.group(1)) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} has no port: give {_GATEWAY_FORM}")
    return value


def gateway_flag(parser: argparse.ArgumentParser) -> None:
    """Add the ``--gateway`` flag every client command takes."""
    parser.add_argument(
        "--gateway",
        type=gateway_address,
        default=os.environ.get("AGENTMESH_GATEWAY", DEFAULT_GATEWAY),
        help="gateway address HOST:PORT (env AGENTMESH_GATEWAY; default %(default)s)",
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=None,
        help="CA file to trust: talk TLS to the gateway (env AGENTMESH_TLS_CA_FILE; "
        "AGENTMESH_TLS=1 for the system roots); credentials come from env "
        "AGENTMESH_API_KEY or AGENTMESH_TOKEN",
    )


def connect(args: argparse.Namespace, *, timeout: float | None) -> Client:
    """A client of ``--gateway`` with TLS and credentials from flags and the environment."""
    security = Security.from_env()
    return Client(args.gateway, timeout=timeout, security=security, tls_ca_file=args.tls_ca)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentmesh", description="Specialized agents behind one gRPC gateway."
    )
    parser.add_argument(
        "--version", action="version", version=f"agentmesh {version()}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_up_parser(commands)

    agents = commands.add_parser("agents", help="list the gateway's agents")
    gateway_flag(agents)
    agents.add_argument("--json", action="store_true", help="print JSON")
    agents.add_argument("--refresh", action="store_true", help="refetch cards first")
    agents.set_defaults(handler=cmd_agents)

    call = commands.add_parser("call", help="call an agent through the gateway")
    gateway_flag(call)
    call.add_argument("target", help="NAME, NAME/SKILL or skill:SKILL")
    call.add_argument("input", nargs="?", default=None, help="text, @FILE, or - for stdin")
    call_input_flags(call)
    call.add_argument("--json", action="store_true", help="print the full response as JSON")
    call.add_argument("--stream", action="store_true", help="print output as it is produced")
    call.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds")
    call.set_defaults(handler=cmd_call)

    # Commands living in their own modules register themselves here.
    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


def version() -> str:
    try:
        return importlib.metadata.version("agentmesh")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


def call_input_flags(parser: argparse.ArgumentParser) -> None:
    """``--data`` and ``-o KEY=VALUE``, as ``call``, ``fanout`` and ``jobs submit`` take them."""
    parser.add_argument("--data", help="a JSON value sent as a data part")
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="skill option; VALUE is parsed as JSON when it can be (repeatable)",
    )


def add_up_parser(commands: Any) -> None:
    up: argparse.ArgumentParser = commands.add_parser(
        "up",
        help="run a local mesh: the gateway, the reference agents and agentmesh.yaml's agents",
        description="Run the gateway and agents as local processes, restart any that exits, "
        "and stop them all on Ctrl-C. Reads agentmesh.yaml in this directory when present.",
    )
    up.add_argument(
        "-f",
        "--file",
        type=Path,
        default=None,
        help="project file (default: ./agentmesh.yaml when present)",
    )
    up.add_argument(
        "--no-file", action="store_true", help="ignore ./agentmesh.yaml: reference agents only"
    )
    up.add_argument("--host", default=None, help="interface of every service (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=None, help="gateway port (default 50051)")
    up.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="the gateway's HTTP port: A2A over HTTP, MCP, dashboard (default 8080 with the "
        "default gateway port, else a free one; 0: none)",
    )
    up.add_argument(
        "--agent-port-base",
        type=int,
        default=None,
        help="first reference agent's port; the next take +1 (default 50061)",
    )
    up.add_argument(
        "--agents",
        default=None,
        help="comma-separated agents to run, reference or the project's (default: all)",
    )
    up.add_argument(
        "--config", type=Path, default=None, help="gateway config file (routes, resilience...)"
    )
    up.add_argument(
        "--workflow-dir", type=Path, default=None, help="directory of declared workflow YAML files"
    )
    up.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics: the gateway on this port, each agent on the next ones "
        "(0: any free port; env AGENTMESH_METRICS_PORT)",
    )
    up.add_argument(
        "--reload", action="store_true", help="restart a project agent when its source changes"
    )
    up.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="log root; each run writes into its own directory, `latest` links the newest "
        "(default .agentmesh/logs)",
    )
    up.add_argument(
        "--grace-period",
        type=float,
        default=5.0,
        help="seconds a stopping service gets to finish its calls (default %(default)s)",
    )
    up.add_argument(
        "--startup-timeout",
        type=float,
        default=30.0,
        help="seconds each service gets to report SERVING (default %(default)s)",
    )
    up.set_defaults(handler=cmd_up)


def read_input(value: str | None) -> str | None:
    if value is None:
        return None
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SystemExit(f"agentmesh: cannot read {path}: {exc.strerror}") from None
    return value


def parse_data(value: str | None) -> Any:
    """The ``--data`` flag's JSON value (None when the flag was not given)."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"agentmesh: --data is not JSON: {exc}") from None


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"agentmesh: option {pair!r} must look like KEY=VALUE")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


_FIELD = {"agent": "name", "status": "status", "protocol": "protocol"}


def cmd_agents(args: argparse.Namespace, console: Console) -> int:
    with connect(args, timeout=10.0) as client:
        agents = client.list_agents(refresh=args.refresh)
    if args.json:
        print_json(
            [
                {
                    "name": a.name,
                    "status": a.status,
                    "addresses": list(a.addresses),
                    "protocol": a.protocol,
                    "version": a.card.version if a.card else None,
                    "skills": [s.id for s in a.card.skills] if a.card else [],
                    # skill id -> its JSON Schemas (options, input, output), when declared
                    "schemas": {
                        s.id: {
                            key: schema
                            for key, schema in (
                                ("options", s.options_schema),
                                ("input", s.input_schema),
                                ("output", s.output_schema),
                            )
                            if schema is not None
                        }
                        for s in (a.card.skills if a.card else ())
                    },
                    "detail": a.detail,
                }
                for a in agents
            ]
        )
        return 0
    console.print(agents_table(agents))
    return 0


def agents_table(agents: Sequence[AgentInfo]) -> Table:
    """Agent, status (and protocol) stay whole on an 80-column terminal; the rest wraps."""
    table = Table()
    # The protocol column only when some agent speaks A2A: the table stays narrow otherwise.
    external = any(a.protocol != "agentmesh" for a in agents)
    columns = ("agent", "status", "protocol") if external else ("agent", "status")
    for column in columns:  # never shortened: they are what a reader scans for
        width = max([len(column), *(len(getattr(a, _FIELD[column])) for a in agents)])
        table.add_column(column, no_wrap=True, min_width=width)
    table.add_column("version", no_wrap=True)
    table.add_column("skills")  # wraps on narrow terminals, like the description
    table.add_column("address", no_wrap=True)
    table.add_column("description")
    for a in agents:
        colour = {"serving": "green", "unavailable": "red"}.get(a.status, "yellow")
        table.add_row(
            a.name,
            f"[{colour}]{a.status}[/{colour}]",
            *([a.protocol] if external else []),
            a.card.version if a.card else "-",
            ", ".join(s.id for s in a.card.skills) if a.card else "-",
            ", ".join(a.addresses),
            (a.card.description if a.card else a.detail) or "",
        )
    return table


def _print_reply_body(text: str, data: Any) -> None:
    if text:
        print(text)
    elif data is not None:
        print(json.dumps(data, indent=2))


def cmd_call(args: argparse.Namespace, console: Console) -> int:
    text = read_input(args.input)
    data = parse_data(args.data)
    if text is None and data is None:
        raise SystemExit("agentmesh: give INPUT (text, @FILE or -) or --data")
    options = parse_options(args.option)
    with connect(args, timeout=args.timeout) as client:
        if not args.stream:
            reply = client.invoke(args.target, text, data=data, options=options)
            if args.json:
                print_json(message_json(reply.raw))
            else:
                _print_reply_body(reply.text, reply.data)
            return 0
        streamed_text = False
        for event in client.stream(args.target, text, data=data, options=options):
            if args.json:
                print_json(_event_json(event), indent=None)
            elif isinstance(event, Partial):
                for part in event.parts:
                    if isinstance(part, TextPart):
                        sys.stdout.write(part.text)
                        sys.stdout.flush()
                        streamed_text = True
            elif isinstance(event, StreamError):
                print(f"\n[{event.source}] {event.code.name}: {event.message}", file=sys.stderr)
            elif isinstance(event, Final):
                if streamed_text:
                    print()
                else:
                    _print_reply_body(event.reply.text, event.reply.data)
    return 0


def _event_json(event: object) -> dict[str, Any]:
    if isinstance(event, Started):
        return {"started": {"agent": event.agent, "skill": event.skill, "task_id": event.task_id}}
    if isinstance(event, Partial):
        texts = [p.text for p in event.parts if isinstance(p, TextPart)]
        return {"partial": {"artifact_id": event.artifact_id, "text": "".join(texts)}}
    if isinstance(event, StreamError):
        return {
            "error": {"code": event.code.name, "message": event.message, "source": event.source}
        }
    if isinstance(event, Final):
        return {"final": message_json(event.reply.raw)}
    return {}


def cmd_up(args: argparse.Namespace, console: Console) -> int:
    from agentmesh.cli.project import Project, ProjectError, find_project, load_project
    from agentmesh.cli.runner import PlanError, UpOptions, plan_mesh, run_up

    path = None if args.no_file else find_project(args.file)
    try:
        project = load_project(path) if path is not None else Project()
        agents = None
        if args.agents is not None:
            agents = [a.strip() for a in args.agents.split(",") if a.strip()]
        options = UpOptions(
            host=args.host,
            port=args.port,
            agent_port_base=args.agent_port_base,
            agents=agents,
            config=args.config,
            workflow_dir=args.workflow_dir,
            log_dir=args.log_dir,
            metrics_port=args.metrics_port,
            http_port=args.http_port,
        )
        plan = plan_mesh(project, options, project_file=path)
    except (ProjectError, PlanError) as exc:
        fail(str(exc), status=EXIT_USAGE)
    if path is not None:
        console.print(f"project: {path}")
    return asyncio.run(
        run_up(
            plan,
            grace_period=args.grace_period,
            startup_timeout=args.startup_timeout,
            reload=args.reload,
            console=console,
        )
    )


class CommandFailed(Exception):
    """A command's own failure: a message for the user and an exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def fail(message: str, *, status: int = EXIT_FAILED) -> NoReturn:
    raise CommandFailed(message, status)


def integral(value: Any) -> Any:
    """``value`` with every whole float made an int: protobuf Structs hold numbers as doubles."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def print_json(value: Any, *, indent: int | None = 2) -> None:
    """``value`` as JSON on stdout, whole numbers without a trailing ``.0``."""
    print(json.dumps(integral(value), indent=indent), flush=indent is None)


def message_json(message: Any, **kwargs: Any) -> Any:
    """A protobuf message as a JSON-ready value (camelCase fields unless told otherwise)."""
    return integral(json_format.MessageToDict(message, **kwargs))


# How gRPC words a channel that never connected; the gateway's own UNAVAILABLE
# statuses start with the agent's name instead.
_UNREACHABLE = ("failed to connect to all addresses", "DNS resolution failed", "Connection refused")


def unreachable(exc: CallError) -> bool:
    """Whether the call never reached the gateway (as opposed to an agent being down)."""
    return exc.code.name == "UNAVAILABLE" and exc.message.startswith(_UNREACHABLE)


def _report(
    args: argparse.Namespace,
    code: str | None,
    message: str,
    hint: str | None,
    exc: CallError | None = None,
) -> None:
    """An error on stderr (or as JSON on stdout), with a call error's rich details."""
    if getattr(args, "json", False):
        error: dict[str, Any] = {"message": message}
        if code is not None:
            error = {"code": code, **error}
        if hint is not None:
            error["hint"] = hint
        if exc is not None and exc.reason:
            error["reason"] = exc.reason
        if exc is not None and exc.field_violations:
            error["field_violations"] = [
                {"field": field, "description": text} for field, text in exc.field_violations
            ]
        if exc is not None and exc.retry_after is not None:
            error["retry_after"] = exc.retry_after
        print_json({"error": error})
        return
    print(f"error: {code}: {message}" if code else f"error: {message}", file=sys.stderr)
    for line in exc.describe()[1:] if exc is not None else ():
        print(line, file=sys.stderr)
    if hint is not None:
        print(f"hint: {hint}", file=sys.stderr)


def _call_error(args: argparse.Namespace, exc: CallError) -> None:
    if unreachable(exc):
        gateway = getattr(args, "gateway", DEFAULT_GATEWAY)
        _report(
            args,
            exc.code.name,
            f"cannot reach the gateway at {gateway} ({exc.message})",
            "is `agentmesh up` running? Otherwise point at the gateway with "
            "--gateway HOST:PORT or AGENTMESH_GATEWAY.",
        )
    else:
        _report(args, exc.code.name, exc.message, None, exc)


def _pipe_closed() -> int:
    """The reader went away (``| head``): end quietly, as a SIGPIPE'd tool would."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush cannot fail
    return EXIT_PIPE_CLOSED


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        handler: Handler = args.handler
        status = handler(args, console)
    except CallError as exc:
        _call_error(args, exc)
        status = EXIT_FAILED
    except CommandFailed as exc:
        _report(args, None, exc.message, None)
        status = exc.status
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        _report(args, None, exc.code.removeprefix("agentmesh: "), None)
        status = EXIT_FAILED
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    except BrokenPipeError:
        status = _pipe_closed()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        status = _pipe_closed()
    raise SystemExit(status)
