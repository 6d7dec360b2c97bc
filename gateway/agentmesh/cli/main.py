"""The ``agentmesh`` command.

agentmesh up                         run the gateway and the reference agents locally
agentmesh agents                     list the gateway's agents
agentmesh call TARGET INPUT          call an agent (TARGET: NAME, NAME/SKILL or skill:SKILL;
                                     INPUT: text, @FILE or - for stdin)
agentmesh run WORKFLOW --input ...   run a workflow (a YAML file or a declared name) with
                                     live progress
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from agentmesh.agents import REFERENCE_AGENTS
from agentmesh.client import (
    DEFAULT_GATEWAY,
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
)


def gateway_flag(parser: argparse.ArgumentParser) -> None:
    """Add the ``--gateway`` flag every client command takes."""
    parser.add_argument(
        "--gateway",
        default=os.environ.get("AGENTMESH_GATEWAY", DEFAULT_GATEWAY),
        help="gateway address host:port (env AGENTMESH_GATEWAY; default %(default)s)",
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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run the gateway and the reference agents locally")
    up.add_argument("--host", default="127.0.0.1", help="interface for every service")
    up.add_argument("--port", type=int, default=50051, help="gateway port (default %(default)s)")
    up.add_argument(
        "--agent-port-base",
        type=int,
        default=50061,
        help="first agent port; agents take consecutive ports (default %(default)s)",
    )
    up.add_argument(
        "--agents",
        default=",".join(REFERENCE_AGENTS),
        help="comma-separated agents to run (default: all)",
    )
    up.add_argument("--log-dir", type=Path, default=Path(".agentmesh/logs"))
    up.add_argument("--grace-period", type=float, default=5.0)
    up.add_argument("--startup-timeout", type=float, default=30.0)
    up.set_defaults(handler=cmd_up)

    agents = commands.add_parser("agents", help="list the gateway's agents")
    gateway_flag(agents)
    agents.add_argument("--json", action="store_true", help="print JSON")
    agents.add_argument("--refresh", action="store_true", help="refetch cards first")
    agents.set_defaults(handler=cmd_agents)

    call = commands.add_parser("call", help="call an agent through the gateway")
    gateway_flag(call)
    call.add_argument("target", help="NAME, NAME/SKILL or skill:SKILL")
    call.add_argument("input", nargs="?", default=None, help="text, @FILE, or - for stdin")
    call.add_argument("--data", help="a JSON value sent as a data part")
    call.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="skill option; VALUE is parsed as JSON when it can be (repeatable)",
    )
    call.add_argument("--json", action="store_true", help="print the full response as JSON")
    call.add_argument("--stream", action="store_true", help="print output as it is produced")
    call.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds")
    call.set_defaults(handler=cmd_call)

    # Commands living in their own modules register themselves here.
    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


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
        print(
            json.dumps(
                [
                    {
                        "name": a.name,
                        "status": a.status,
                        "addresses": list(a.addresses),
                        "protocol": a.protocol,
                        "version": a.card.version if a.card else None,
                        "skills": [s.id for s in a.card.skills] if a.card else [],
                        "detail": a.detail,
                    }
                    for a in agents
                ],
                indent=2,
            )
        )
        return 0
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
    console.print(table)
    return 0


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
                print(json_format.MessageToJson(reply.raw, indent=2))
            else:
                _print_reply_body(reply.text, reply.data)
            return 0
        streamed_text = False
        for event in client.stream(args.target, text, data=data, options=options):
            if args.json:
                print(json.dumps(_event_json(event)), flush=True)
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
        return {"final": json_format.MessageToDict(event.reply.raw)}
    return {}


def cmd_up(args: argparse.Namespace, console: Console) -> int:
    from agentmesh.cli.runner import run_up

    agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    unknown = [a for a in agents if a not in REFERENCE_AGENTS]
    if unknown:
        raise SystemExit(
            f"agentmesh: unknown agents {', '.join(unknown)}; "
            f"choose from {', '.join(REFERENCE_AGENTS)}"
        )
    return asyncio.run(
        run_up(
            host=args.host,
            gateway_port=args.port,
            agent_port_base=args.agent_port_base,
            agents=agents,
            log_dir=args.log_dir,
            grace_period=args.grace_period,
            startup_timeout=args.startup_timeout,
            console=console,
        )
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        handler: Handler = args.handler
        status = handler(args, console)
    except CallError as exc:
        print("error: " + "\n".join(exc.describe()), file=sys.stderr)
        status = EXIT_FAILED
    except KeyboardInterrupt:
        status = 130
    raise SystemExit(status)
