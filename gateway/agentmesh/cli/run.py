"""``agentmesh run WORKFLOW``: run a workflow through the gateway with live progress.

WORKFLOW is a YAML file (sent as the definition) or the name of a workflow
the gateway declares. While it runs, a table shows every step with its status,
agent, attempts, latency and latest output; then the result is printed.
``--json`` prints one JSON object per event instead.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from agentmesh.cli.main import (
    connect,
    gateway_flag,
    integral,
    message_json,
    parse_data,
    parse_options,
    print_json,
    read_input,
)
from agentmesh.client import (
    StepError,
    StepFinished,
    StepPartial,
    StepStarted,
    WorkflowEvent,
    WorkflowFinished,
    WorkflowStarted,
)
from agentmesh.runtime.types import TextPart

DETAIL_CHARS = 60
_STYLES = {
    "pending": ("·", "dim"),
    "running": ("", "yellow"),
    "succeeded": ("✓", "green"),
    "fell_back": ("✓", "yellow"),
    "compensated": ("↺", "magenta"),
    "skipped": ("-", "dim"),
    "failed": ("✗", "red"),
    "cancelled": ("✗", "red"),
}


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "run",
        help="run a workflow (a YAML file or a declared name) with live progress",
        description="Run a workflow through the gateway and show its steps as they go.",
    )
    gateway_flag(parser)
    parser.add_argument(
        "workflow", help="WORKFLOW.yaml (sent as the definition) or a declared NAME"
    )
    parser.add_argument("-i", "--input", help="the workflow's input: text, @FILE, or - for stdin")
    parser.add_argument("--data", help="a JSON value sent as a data part of the input")
    parser.add_argument(
        "-s",
        "--state",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="shared state read by conditions as state.KEY; VALUE is JSON when it parses",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON event per line")
    parser.add_argument("--timeout", type=float, default=300.0, help="deadline in seconds")
    parser.set_defaults(handler=cmd_run)


def load_workflow_arg(value: str) -> str | dict[str, Any]:
    """A definition read from a YAML file, or the name of a declared workflow."""
    path = Path(value)
    if not (value.endswith((".yaml", ".yml")) or path.is_file()):
        return value
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SystemExit(f"agentmesh: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SystemExit(f"agentmesh: {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise SystemExit(f"agentmesh: {path}: a workflow is a mapping with name and steps")
    definition: dict[str, Any] = loaded
    return definition


@dataclass(slots=True)
class _Row:
    status: str = "pending"
    agent: str = ""
    attempts: int = 0
    started: float | None = None
    latency_ms: float | None = None
    detail: str = ""


class Progress:
    """The live table: one row per step, updated from the run's events."""

    def __init__(self) -> None:
        self.title = "workflow"
        self.rows: dict[str, _Row] = {}
        self.finished: WorkflowFinished | None = None

    def _row(self, step: str) -> _Row:
        return self.rows.setdefault(step, _Row())

    def update(self, event: WorkflowEvent) -> None:
        if isinstance(event, WorkflowStarted):
            self.title = f"workflow {event.workflow} · run {event.run_id[:12]}"
            for step in event.steps:
                self._row(step)
        elif isinstance(event, StepStarted):
            row = self._row(event.step)
            row.status, row.attempts = "running", event.attempt
            row.agent = event.agent or row.agent
            row.started = row.started or time.monotonic()
        elif isinstance(event, StepPartial):
            texts = "".join(p.text for p in event.partial.parts if isinstance(p, TextPart))
            row = self._row(event.step)
            row.detail = (row.detail + texts)[-DETAIL_CHARS:]
        elif isinstance(event, StepError):
            self._row(event.step).detail = f"{event.code.name}: {event.message}"
        elif isinstance(event, StepFinished):
            row = self._row(event.step)
            row.status = event.outcome
            row.agent = event.agent or row.agent
            row.attempts = event.attempts or row.attempts
            row.latency_ms = event.latency_ms if event.attempts else None
            if event.message:
                row.detail = event.message
            elif event.reply is not None:
                row.detail = " ".join(event.reply.text.split())
        elif isinstance(event, WorkflowFinished):
            self.finished = event

    def render(self) -> Table:
        table = Table(title=self.title, title_justify="left", expand=False)
        for column in ("step", "status", "agent", "try", "latency"):
            table.add_column(column, no_wrap=True)
        table.add_column("detail", overflow="ellipsis", no_wrap=True, max_width=DETAIL_CHARS)
        for step, row in self.rows.items():
            icon, style = _STYLES.get(row.status, ("?", ""))
            status: Text | Spinner
            if row.status == "running":
                status = Spinner("dots", text=Text("running", style=style), style=style)
            else:
                status = Text(f"{icon} {row.status}", style=style)
            if row.latency_ms is not None:
                latency = f"{row.latency_ms:,.0f} ms"
            elif row.started is not None:
                latency = f"{(time.monotonic() - row.started) * 1000:,.0f} ms"
            else:
                latency = ""
            # Text cells: agent output must never be read as rich markup.
            table.add_row(
                Text(step),
                status,
                Text(row.agent),
                str(row.attempts) if row.attempts else "",
                latency,
                Text(row.detail[:DETAIL_CHARS]),
            )
        return table


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    workflow = load_workflow_arg(args.workflow)
    text = read_input(args.input)
    data = parse_data(args.data)
    state = parse_options(args.state)
    with connect(args, timeout=args.timeout) as client:
        events = client.run_workflow(workflow, text, data=data, state=state)
        if args.json:
            for event in events:
                print_json(message_json(event.raw, preserving_proto_field_name=True), indent=None)
            return 0
        progress = Progress()
        with Live(progress.render(), console=console, refresh_per_second=8) as live:
            try:
                for event in events:
                    progress.update(event)
                    live.update(progress.render())
            finally:
                live.update(progress.render())
    finished = progress.finished
    if finished is not None:
        _print_result(console, finished)
    return 0


def _print_result(console: Console, finished: WorkflowFinished) -> None:
    body: Any = finished.text
    if not body and finished.data is not None:
        body = json.dumps(integral(finished.data), indent=2)
    usage = finished.usage
    summary = f"completed in {finished.latency_ms:,.0f} ms"
    if usage.total_tokens or usage.cost_usd:
        summary += f" · {usage.total_tokens} tokens · ${usage.cost_usd:.4f}"
    console.print(
        Group(Text(""), Text(body or "(no output)"), Text(""), Text(summary, style="dim"))
    )
