"""``agentmesh trace [ID]``: recent traces of a local mesh, as a terminal waterfall.

``agentmesh up`` collects every service's spans into ``LOG_DIR/traces.jsonl``
(see :mod:`agentmesh.telemetry.collector`) and points ``STATE_DIR/latest`` at
its ``LOG_DIR``, so that this command finds the current run's traces from any
directory. ``STATE_DIR`` is ``$AGENTMESH_STATE_DIR``, else
``$XDG_STATE_HOME/agentmesh``, else ``~/.local/state/agentmesh``.

Without an ID this lists the most recent traces; with one (any unique prefix,
or ``last``) it draws that trace span by span: service, span, duration, a bar
on the trace's timeline, status. ``--service``, ``--status`` and ``--min-ms``
narrow both the list and what ``last`` means.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentmesh.cli.state import STATE_DIR_ENV, state_dir
from agentmesh.telemetry.collector import SpanRecord, read_spans, traces
from agentmesh.telemetry.rpcstatus import STATUS_CODE_ATTRIBUTE
from agentmesh.telemetry.tracequery import (
    STATUS_CHOICES,
    TraceFilter,
    duration_ns,
    outcome,
    select,
)
from agentmesh.telemetry.tracequery import grpc_code_name as _grpc_code_name
from agentmesh.telemetry.tracequery import newest_first as _newest_first
from agentmesh.telemetry.tracequery import ordered as _ordered
from agentmesh.telemetry.tracequery import roots as _roots

log = logging.getLogger("agentmesh.cli")

TRACE_FILE = "traces.jsonl"
LATEST = "latest"
BAR_WIDTH = 24
SHORT_ID = 12
_STATUS_STYLE = {"ERROR": "red", "OK": "green", "UNSET": "green"}


# -- where `agentmesh up` keeps the current run -------------------------------


def record_latest_run(log_dir: Path, env: Mapping[str, str] | None = None) -> Path | None:
    """Point ``STATE_DIR/latest`` at ``log_dir`` (replaced atomically); returns the link.

    A state directory that cannot be written is no reason to stop a run: it is
    logged and ``None`` returned (``agentmesh trace --log-dir`` still works).
    """
    directory = state_dir(env)
    link = directory / LATEST
    temporary = directory / f".{LATEST}.{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(log_dir.resolve(), target_is_directory=True)
        os.replace(temporary, link)
    except OSError as exc:
        log.warning("cannot record the latest run in %s: %s", directory, exc.strerror or exc)
        return None
    return link


def latest_run(env: Mapping[str, str] | None = None) -> Path | None:
    """The ``LOG_DIR`` of the latest ``agentmesh up``, if one was recorded."""
    link = state_dir(env) / LATEST
    return link.resolve() if link.is_symlink() or link.is_dir() else None


def trace_file(log_dir: Path | None, env: Mapping[str, str] | None = None) -> Path | None:
    """``log_dir``'s trace file, or the latest run's (None: no run recorded)."""
    if log_dir is None:
        log_dir = latest_run(env)
    return None if log_dir is None else log_dir / TRACE_FILE


# -- the command ---------------------------------------------------------------


def _status_choice(value: str) -> str:
    wanted = value.strip().lower()
    if wanted not in STATUS_CHOICES:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a status; use ok, error or a gRPC code name such as cancelled"
        )
    return wanted


def _non_negative_ms(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration in milliseconds (>= 0)")
    return number


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "trace",
        help="show recent traces of `agentmesh up` as a waterfall",
        description=(
            "List recent traces collected by `agentmesh up` (the latest run, found from any"
            " directory), or draw one as a waterfall."
        ),
    )
    parser.add_argument(
        "trace_id", nargs="?", help="trace id or unique prefix ('last': the most recent)"
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help=(
            "read the traces of `agentmesh up --log-dir DIR` instead of the latest run's"
            f" (recorded in ${STATE_DIR_ENV}, $XDG_STATE_HOME/agentmesh or"
            " ~/.local/state/agentmesh)"
        ),
    )
    parser.add_argument("-n", "--limit", type=int, default=20, help="traces to list (default 20)")
    parser.add_argument(
        "--service", help="only traces with a span from this service (gateway, calculator, ...)"
    )
    parser.add_argument(
        "--status",
        type=_status_choice,
        metavar="STATUS",
        help=(
            "only traces that ended so: ok, error (any span failed), or the gRPC code of the"
            " request (cancelled, deadline_exceeded, invalid_argument, ...)"
        ),
    )
    parser.add_argument(
        "--min-ms",
        type=_non_negative_ms,
        metavar="MS",
        help="only traces that took at least MS milliseconds",
    )
    parser.set_defaults(handler=cmd_trace)


def cmd_trace(args: argparse.Namespace, console: Console) -> int:
    path = trace_file(args.log_dir)
    if path is None:
        console.print(
            f"no `agentmesh up` recorded in {state_dir() / LATEST}: start the mesh with"
            " `agentmesh up` (or give --log-dir)"
        )
        return 1
    grouped = traces(read_spans(path))
    if not grouped:
        console.print(
            f"no traces in {path}: start the mesh with `agentmesh up` and make a call first"
        )
        return 1
    wanted = TraceFilter(args.service, args.status, args.min_ms)
    kept = select(grouped, wanted)
    if not kept:
        # An empty filtered list is an answer, as with grep: only a trace to draw can be missing.
        console.print(f"no trace matches {wanted.describe()} ({len(grouped)} traces in {path})")
        return 0 if args.trace_id is None else 1
    if args.trace_id is None:
        console.print(trace_list(kept, limit=args.limit, filtered=wanted))
        return 0
    found = find_trace(kept, args.trace_id)
    if isinstance(found, str):
        console.print(f"[red]error:[/red] {found}")
        return 1
    console.print(waterfall(found))
    return 0


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


def short_name(name: str) -> str:
    """``agentmesh.v1.Gateway/Invoke`` as ``Gateway/Invoke``."""
    return name.removeprefix("agentmesh.v1.")


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f}"


def _outcome_text(spans: Sequence[SpanRecord]) -> Text:
    code, failed = outcome(spans)
    if failed:
        return Text("ERROR" if code == "OK" else code, "red")
    return Text(code, "green" if code == "OK" else "yellow")


def trace_list(
    grouped: dict[str, list[SpanRecord]], *, limit: int = 20, filtered: TraceFilter | None = None
) -> Table:
    title = "recent traces, newest first (`agentmesh trace ID` draws one)"
    if filtered:
        title = f"recent traces matching {filtered.describe()}, newest first"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("trace", "started", "request", "services", "spans", "ms", "status"):
        table.add_column(column, no_wrap=column != "services")
    for spans in _newest_first(grouped)[:limit]:
        root = _roots(spans)[0]
        start = min(s.start_ns for s in spans)
        table.add_row(
            spans[0].trace_id[:SHORT_ID],
            time.strftime("%H:%M:%S", time.localtime(start / 1e9)),
            short_name(root.name),
            ", ".join(dict.fromkeys(s.service for s in spans)),
            str(len(spans)),
            _ms(duration_ns(spans)),
            _outcome_text(spans),
        )
    return table


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
    code = span.attributes.get(STATUS_CODE_ATTRIBUTE)
    label = span.status if code is None else _grpc_code_name(code)
    if span.status == "ERROR" and span.status_message:
        label = span.status_message
    if label == "CANCELLED":
        return Text(label, "yellow")
    return Text(label, _STATUS_STYLE.get(span.status, "white"))


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
