"""``agentmesh fanout``: one request to several agents, every leg and the aggregate shown."""

from __future__ import annotations

import argparse
import json
from typing import Any, get_args

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentmesh.cli.main import (
    EXIT_FAILED,
    call_input_flags,
    connect,
    gateway_flag,
    integral,
    message_json,
    parse_data,
    parse_options,
    print_json,
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
    call_input_flags(parser)
    parser.add_argument(
        "--policy",
        choices=get_args(Policy),
        default="all",
        help="when the fan-out counts as a success (default %(default)s)",
    )
    parser.add_argument(
        "--quorum", type=int, default=0, help="successes needed with --policy quorum"
    )
    parser.add_argument(
        "--aggregate",
        choices=get_args(Aggregation),
        default="collect",
        help="how the legs' answers become one (default %(default)s)",
    )
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
        print_json(message_json(result.raw))
    else:
        print_fan_out(console, result)
    return 0 if result.ok else EXIT_FAILED


def preview(reply: Reply | None) -> str:
    if reply is None:
        return ""
    body = reply.text or (json.dumps(integral(reply.data)) if reply.data is not None else "")
    body = " ".join(body.split())
    return body if len(body) <= PREVIEW_CHARS else body[: PREVIEW_CHARS - 1] + "…"


def print_fan_out(console: Console, result: FanOutResult) -> None:
    table = Table(
        title=f"{result.succeeded} succeeded, {result.failed} failed", title_justify="left"
    )
    names = [f"{leg.agent}/{leg.skill}" if leg.skill else leg.agent for leg in result.legs]
    codes = ["OK" if leg.reply is not None else leg.code.name for leg in result.legs]
    # Agent and status stay whole on an 80-column terminal; the output wraps.
    for column, values in (("agent", names), ("status", codes)):
        table.add_column(column, no_wrap=True, min_width=max([len(column), *map(len, values)]))
    table.add_column("ms", no_wrap=True, justify="right")
    table.add_column("output")
    for leg, name, code in zip(result.legs, names, codes, strict=True):
        ok = leg.reply is not None
        table.add_row(
            Text(name),
            Text(code, style="green" if ok else "red"),
            f"{leg.latency_ms:.0f}",
            Text(preview(leg.reply) if ok else leg.message),
        )
    console.print(table)
    colour = "green" if result.ok else "red"
    console.print(f"[{colour}]{result.detail}[/{colour}]")
    if result.result is not None:
        reply = result.result
        body = reply.text or json.dumps(integral(reply.data), indent=2)
        console.print(body, markup=False, highlight=False)
