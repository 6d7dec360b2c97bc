"""``agentmesh fanout``: one request to several agents, every leg and the aggregate shown."""

from __future__ import annotations

import argparse
import json
from typing import Any, get_args

from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from agentmesh.cli.main import (
    EXIT_FAILED,
    connect,
    gateway_flag,
    parse_data,
    parse_options,
    read_input,
)
from agentmesh.client import FanOutResult, Reply
from agentmesh.client._orchestration import Aggregation, Policy

PREVIEW_CHARS = 70


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "fanout",
        help="send one request to several agents and aggregate the answers",
        description="Call several agents at once (named, or every agent with --skill) and "
        "aggregate: collect, first_success, majority, best_score, merge or reduce.",
    )
    gateway_flag(parser)
    parser.add_argument(
        "targets", help="comma-separated NAME or NAME/SKILL; '' or '-' with --skill: every agent"
    )
    parser.add_argument("input", nargs="?", default=None, help="text, @FILE, or - for stdin")
    parser.add_argument("--skill", help="skill to call (all agents offering it when no targets)")
    parser.add_argument("--data", help="a JSON value sent as a data part")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--policy", choices=get_args(Policy), default="all")
    parser.add_argument(
        "--quorum", type=int, default=0, help="successes needed with --policy quorum"
    )
    parser.add_argument("--aggregate", choices=get_args(Aggregation), default="collect")
    parser.add_argument("--field", default="", help="data field voted on or scored, e.g. label")
    parser.add_argument("--aggregator", help="NAME or NAME/SKILL that reduces the legs")
    parser.add_argument("--max-width", type=int, default=0, help="legs in flight at once")
    parser.add_argument("--leg-timeout", type=float, help="deadline of each leg in seconds")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds")
    parser.add_argument("--json", action="store_true", help="print the full response as JSON")
    parser.set_defaults(handler=cmd_fanout)


def cmd_fanout(args: argparse.Namespace, console: Console) -> int:
    targets = [t.strip() for t in args.targets.split(",") if t.strip() not in ("", "-")]
    data = parse_data(args.data)
    with connect(args, timeout=args.timeout) as client:
        result = client.fan_out(
            targets,
            read_input(args.input),
            skill=args.skill,
            data=data,
            options=parse_options(args.option),
            policy=args.policy,
            quorum=args.quorum,
            aggregation=args.aggregate,
            field=args.field,
            aggregator=args.aggregator,
            max_width=args.max_width,
            leg_timeout=args.leg_timeout,
        )
    if args.json:
        print(json_format.MessageToJson(result.raw, indent=2))
    else:
        print_fan_out(console, result)
    return 0 if result.ok else EXIT_FAILED


def preview(reply: Reply | None) -> str:
    if reply is None:
        return ""
    body = reply.text or (json.dumps(reply.data) if reply.data is not None else "")
    body = " ".join(body.split())
    return body if len(body) <= PREVIEW_CHARS else body[: PREVIEW_CHARS - 1] + "…"


def print_fan_out(console: Console, result: FanOutResult) -> None:
    table = Table(
        title=f"{result.succeeded} succeeded, {result.failed} failed", title_justify="left"
    )
    for column in ("agent", "status", "ms", "output"):
        table.add_column(column, no_wrap=column != "output")
    for leg in result.legs:
        ok = leg.reply is not None
        status = "[green]OK[/green]" if ok else f"[red]{leg.code.name}[/red]"
        table.add_row(
            f"{leg.agent}/{leg.skill}" if leg.skill else leg.agent,
            status,
            f"{leg.latency_ms:.0f}",
            preview(leg.reply) if ok else leg.message,
        )
    console.print(table)
    colour = "green" if result.ok else "red"
    console.print(f"[{colour}]{result.detail}[/{colour}]")
    if result.result is not None:
        reply = result.result
        console.print(reply.text or json.dumps(reply.data, indent=2), markup=False, highlight=False)
