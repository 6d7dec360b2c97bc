"""``agentmesh jobs``: submit, list, inspect, follow and cancel background jobs."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from agentmesh.cli.main import EXIT_FAILED, connect, gateway_flag, read_input
from agentmesh.client import (
    Client,
    FanOutResult,
    Job,
    Partial,
    StepFinished,
    StepStarted,
    WorkflowFinished,
)
from agentmesh.runtime.types import TextPart

_COLOURS = {"completed": "green", "failed": "red", "canceled": "red", "working": "yellow"}


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "jobs", help="submit, list, inspect, follow and cancel background jobs"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    submit = actions.add_parser("submit", help="start a call or a workflow as a job")
    submit.add_argument(
        "target", help="NAME, NAME/SKILL, skill:SKILL, or a workflow with --workflow"
    )
    submit.add_argument("input", nargs="?", default=None, help="text, @FILE, or - for stdin")
    submit.add_argument(
        "--workflow", action="store_true", help="TARGET is a workflow (YAML file or declared name)"
    )
    submit.add_argument("--job-timeout", type=float, help="seconds the job may run")
    submit.add_argument("--watch", action="store_true", help="follow the job until it ends")

    listing = actions.add_parser("list", help="recent jobs, newest first")
    listing.add_argument("--state", help="only jobs in this state, e.g. working")
    listing.add_argument("--limit", type=int, default=20)

    for name, text in (("get", "show a job"), ("watch", "follow a job's events"),
                       ("cancel", "cancel a job and its agent calls")):  # fmt: skip
        action = actions.add_parser(name, help=text)
        action.add_argument("job_id")
        if name == "watch":
            action.add_argument("--from", dest="from_offset", type=int, default=0)
    for action in actions.choices.values():
        gateway_flag(action)
        action.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=cmd_jobs)


def cmd_jobs(args: argparse.Namespace, console: Console) -> int:
    with connect(args, timeout=30.0) as client:
        if args.action == "list":
            jobs = client.jobs(limit=args.limit, state=args.state)
            if args.json:
                print(json.dumps([json_format.MessageToDict(j.raw) for j in jobs], indent=2))
            else:
                print_jobs(console, jobs)
            return 0
        if args.action == "submit":
            job = submit(client, args)
            if not args.watch:
                show(console, job, as_json=args.json)
                return 0
            job_id = job.job_id
        else:
            job_id = args.job_id
        if args.action == "get":
            job = client.job(job_id)
        elif args.action == "cancel":
            job = client.cancel_job(job_id)
        else:
            job = follow(client, job_id, getattr(args, "from_offset", 0), as_json=args.json)
        show(console, job, as_json=args.json)
        return 0 if job.state in ("completed", "working", "submitted") else EXIT_FAILED


def submit(client: Client, args: argparse.Namespace) -> Job:
    text = read_input(args.input)
    if not args.workflow:
        return client.submit(args.target, text, job_timeout=args.job_timeout)
    workflow: str | dict[str, Any] = args.target
    path = Path(args.target)
    if path.suffix in (".yaml", ".yml"):
        try:
            workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise SystemExit(f"agentmesh: cannot read workflow {path}: {exc}") from None
    return client.submit(workflow=workflow, text=text, job_timeout=args.job_timeout)


def follow(client: Client, job_id: str, from_offset: int, *, as_json: bool) -> Job:
    """Print the job's events as they come; return the job once it has ended."""
    for event in client.watch_job(job_id, from_offset=from_offset):
        if as_json:
            continue
        if event.job is not None:
            print(f"[{event.offset}] job {event.job.state}", file=sys.stderr, flush=True)
        elif isinstance(event.event, Partial):
            sys.stdout.write("".join(p.text for p in event.event.parts if isinstance(p, TextPart)))
            sys.stdout.flush()
        elif isinstance(event.event, StepStarted):
            print(f"[{event.offset}] step {event.event.step} started", file=sys.stderr)
        elif isinstance(event.event, StepFinished):
            print(
                f"[{event.offset}] step {event.event.step} {event.event.outcome}", file=sys.stderr
            )
        elif isinstance(event.event, WorkflowFinished):
            print(f"[{event.offset}] workflow finished", file=sys.stderr)
    return client.job(job_id)


def show(console: Console, job: Job, *, as_json: bool) -> None:
    if as_json:
        print(json_format.MessageToJson(job.raw, indent=2))
        return
    colour = _COLOURS.get(job.state, "white")
    console.print(
        f"job {job.job_id}  [{colour}]{job.state}[/{colour}]  {job.kind}: {job.description}"
    )
    if job.message:
        console.print(f"{job.code.name}: {job.message}", markup=False)
    result = job.result
    if result is None:
        return
    if isinstance(result, FanOutResult):
        console.print(f"fan-out: {result.detail}", markup=False)
        result = result.result
    if result is not None:
        console.print(
            result.text or json.dumps(result.data, indent=2), markup=False, highlight=False
        )


def print_jobs(console: Console, jobs: list[Job]) -> None:
    table = Table()
    for column in ("job", "state", "kind", "what", "created", "events"):
        table.add_column(column, no_wrap=True)
    for job in jobs:
        colour = _COLOURS.get(job.state, "white")
        created = datetime.datetime.fromtimestamp(job.created_at).strftime("%H:%M:%S")
        table.add_row(job.job_id, f"[{colour}]{job.state}[/{colour}]", job.kind,
                      job.description, created, str(job.event_count))  # fmt: skip
    console.print(table)
