"""``agentmesh trace [ID]``: recent traces of a local mesh, as a terminal waterfall.

``agentmesh up`` collects every service's spans into ``LOG_DIR/traces.jsonl``
(see :mod:`agentmesh.telemetry.collector`). Without an ID this lists the most
recent traces; with one (any unique prefix, or ``last``) it draws that trace
span by span: service, span, duration, a bar on the trace's timeline, status.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentmesh.telemetry.collector import SpanRecord, read_spans, traces

TRACE_FILE = "traces.jsonl"
BAR_WIDTH = 24
SHORT_ID = 12
_STATUS_STYLE = {"ERROR": "red", "OK": "green", "UNSET": "green"}


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "trace",
        help="show recent traces of `agentmesh up` as a waterfall",
        description="List recent traces collected by `agentmesh up`, or draw one as a waterfall.",
    )
    parser.add_argument(
        "trace_id", nargs="?", help="trace id or unique prefix ('last': the most recent)"
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=Path(".agentmesh/logs"),
        help="the --log-dir of `agentmesh up` (default %(default)s)",
    )
    parser.add_argument("-n", "--limit", type=int, default=20, help="traces to list (default 20)")
    parser.set_defaults(handler=cmd_trace)


def cmd_trace(args: argparse.Namespace, console: Console) -> int:
    path: Path = args.log_dir / TRACE_FILE
    grouped = traces(read_spans(path))
    if not grouped:
        console.print(
            f"no traces in {path}: start the mesh with `agentmesh up` and make a call first"
        )
        return 1
    if args.trace_id is None:
        console.print(trace_list(grouped, limit=args.limit))
        return 0
    found = find_trace(grouped, args.trace_id)
    if isinstance(found, str):
        console.print(f"[red]error:[/red] {found}")
        return 1
    console.print(waterfall(found))
    return 0


def _newest_first(grouped: dict[str, list[SpanRecord]]) -> list[list[SpanRecord]]:
    return sorted(grouped.values(), key=lambda spans: spans[0].start_ns, reverse=True)


def find_trace(grouped: dict[str, list[SpanRecord]], wanted: str) -> list[SpanRecord] | str:
    """The spans of the trace ``wanted`` names, or a message saying why there is none."""
    if wanted == "last":
        return _newest_first(grouped)[0]
    wanted = wanted.lower()
    matches = [tid for tid in grouped if tid.startswith(wanted)]
    if len(matches) == 1:
        return grouped[matches[0]]
    if not matches:
        return f"no trace with id {wanted!r}; `agentmesh trace` lists recent ones"
    return f"{len(matches)} traces start with {wanted!r}; give more of the id"


def _roots(spans: Sequence[SpanRecord]) -> list[SpanRecord]:
    ids = {s.span_id for s in spans}
    return [s for s in spans if not s.parent_id or s.parent_id not in ids]


def short_name(name: str) -> str:
    """``agentmesh.v1.Gateway/Invoke`` as ``Gateway/Invoke``."""
    return name.removeprefix("agentmesh.v1.")


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f}"


def trace_list(grouped: dict[str, list[SpanRecord]], *, limit: int = 20) -> Table:
    table = Table(
        title="recent traces, newest first (`agentmesh trace ID` draws one)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in ("trace", "started", "request", "services", "spans", "ms", "status"):
        table.add_column(column, no_wrap=column != "services")
    for spans in _newest_first(grouped)[:limit]:
        root = _roots(spans)[0]
        start = min(s.start_ns for s in spans)
        end = max(s.end_ns for s in spans)
        failed = any(s.status == "ERROR" for s in spans)
        table.add_row(
            spans[0].trace_id[:SHORT_ID],
            time.strftime("%H:%M:%S", time.localtime(start / 1e9)),
            short_name(root.name),
            ", ".join(dict.fromkeys(s.service for s in spans)),
            str(len(spans)),
            _ms(end - start),
            Text("ERROR", "red") if failed else Text("OK", "green"),
        )
    return table


def _ordered(spans: Sequence[SpanRecord]) -> list[tuple[int, SpanRecord]]:
    """Depth-first (depth, span) pairs, children in start order."""
    children: dict[str, list[SpanRecord]] = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)
    out: list[tuple[int, SpanRecord]] = []

    def visit(span: SpanRecord, depth: int) -> None:
        out.append((depth, span))
        for child in children.get(span.span_id, ()):
            visit(child, depth + 1)

    for root in _roots(spans):
        visit(root, 0)
    return out


def _bar(span: SpanRecord, start: int, total: int) -> Text:
    offset = int((span.start_ns - start) / total * BAR_WIDTH) if total else 0
    offset = min(offset, BAR_WIDTH - 1)
    length = max(1, round(span.duration_ns / total * BAR_WIDTH)) if total else 1
    length = min(length, BAR_WIDTH - offset)
    style = "red" if span.status == "ERROR" else "cyan"
    return (
        Text(" " * offset) + Text("█" * length, style) + Text(" " * (BAR_WIDTH - offset - length))
    )


def _status(span: SpanRecord) -> Text:
    code = span.attributes.get("rpc.grpc.status_code")
    label = span.status if code is None else _grpc_code_name(code)
    if span.status == "ERROR" and span.status_message:
        label = span.status_message
    return Text(label, _STATUS_STYLE.get(span.status, "white"))


_CODE_NAMES = {status.value[0]: status.name for status in grpc.StatusCode}


def _grpc_code_name(code: object) -> str:
    return _CODE_NAMES.get(code, str(code)) if isinstance(code, int) else str(code)


def _detail(span: SpanRecord) -> str:
    """The span's agentmesh attributes, short: ``calculator/evaluate attempt=2``."""
    attrs = {k.removeprefix("agentmesh."): v for k, v in span.attributes.items()}
    attrs = {k: v for k, v in attrs.items() if k != "" and f"agentmesh.{k}" in span.attributes}
    agent, skill = attrs.pop("agent", None), attrs.pop("skill", None)
    words = [f"{agent}/{skill}" if agent and skill else str(agent or skill or "")]
    words += [f"{k}={v}" for k, v in attrs.items()]
    return " ".join(w for w in words if w)


def waterfall(spans: Sequence[SpanRecord]) -> Table:
    """One trace as a table: a row per span, indented under its parent, with a timeline bar."""
    start = min(s.start_ns for s in spans)
    total = max(s.end_ns for s in spans) - start
    table = Table(
        title=f"trace {spans[0].trace_id}  {_ms(total)} ms  {len(spans)} spans",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("service", no_wrap=True)
    table.add_column("span")
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("timeline", no_wrap=True)
    table.add_column("status")
    for depth, span in _ordered(spans):
        detail = _detail(span)
        name = Text("  " * depth + short_name(span.name), "bold" if depth == 0 else "")
        if span.kind not in ("INTERNAL", "UNSPECIFIED"):
            name.append(f" {span.kind.lower()}", "dim")
        if detail:
            name.append(f"  {detail}", "dim")
        table.add_row(
            span.service, name, _ms(span.duration_ns), _bar(span, start, total), _status(span)
        )
    return table
