"""``agentmesh jobs``: submit, list, inspect, follow, answer and cancel background jobs."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentmesh.cli.main import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
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

_COLOURS = {
    "completed": "green",
    "failed": "red",
    "canceled": "red",
    "working": "yellow",
    "input_required": "magenta",
}
# Exit 0 for these: the job did not fail (it ended well, runs, or waits for an answer).
_NOT_FAILED = ("completed", "working", "submitted", "input_required")


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "jobs", help="submit, list, inspect, follow, answer and cancel background jobs"
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
    call_input_flags(submit)
    submit.add_argument(
        "-s",
        "--state",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a workflow's shared state (with --workflow); VALUE is JSON when it parses",
    )
    submit.add_argument("--job-timeout", type=float, help="seconds the job may run")
    submit.add_argument(
        "--watch", action="store_true", help="follow the job until it ends (its id comes first)"
    )
    submit.add_argument(
        "-q", "--quiet", action="store_true", help="print only the job id (for scripts)"
    )

    listing = actions.add_parser("list", help="recent jobs, newest first")
    listing.add_argument("--state", help="only jobs in this state, e.g. working")
    listing.add_argument(
        "--limit", type=int, default=20, help="at most this many jobs (default %(default)s)"
    )

    for name, text in (("get", "show a job"), ("watch", "follow a job's events"),
                       ("cancel", "cancel a job and its agent calls; exit 0 once it is "
                                  "cancelled, 1 when it had already ended")):  # fmt: skip
        action = actions.add_parser(name, help=text)
        action.add_argument("job_id", help="the job's id (jobs list shows them)")
        if name == "watch":
            action.add_argument(
                "--from",
                dest="from_offset",
                type=int,
                default=0,
                help="start at this event offset (resume where a watch stopped)",
            )
    resume = actions.add_parser(
        "resume", help="answer the question of a job waiting for input; its work goes on"
    )
    resume.add_argument("job_id", help="the job's id")
    resume.add_argument("input", help="the answer: text, @FILE, or - for stdin")
    resume.add_argument("-d", "--data", help="a JSON data part sent with the answer")
    resume.add_argument(
        "--watch", action="store_true", help="follow the job until it ends or asks again"
    )
    for action in actions.choices.values():
        gateway_flag(action)
        action.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=cmd_jobs)


def cmd_jobs(args: argparse.Namespace, console: Console) -> int:
    with connect(args, timeout=30.0) as client:
        if args.action == "list":
            jobs = client.jobs(limit=args.limit, state=args.state)
            if args.json:
                print_json([message_json(j.raw) for j in jobs])
            else:
                print_jobs(console, jobs)
            return 0
        if args.action == "cancel":
            return cancel(client, console, args.job_id, as_json=args.json)
        if args.action == "resume":
            job = client.resume_job(args.job_id, read_input(args.input), data=parse_data(args.data))
            if not args.watch:
                show(console, job, as_json=args.json)
                return 0
        if args.action == "submit":
            job = submit(client, args)
            if args.quiet:
                print(job.job_id)
                return 0
            if not args.watch:
                show(console, job, as_json=args.json)
                return 0
            job_id = job.job_id
            # The id first: whatever happens next, the job can be found again.
            print(f"job {job_id}", file=sys.stderr, flush=True)
        else:
            job_id = args.job_id
        if args.action == "get":
            ended: Job | None = client.job(job_id)
        elif args.action == "resume":
            ended = watch(client, job_id, job.event_count, as_json=args.json)
        else:
            ended = watch(client, job_id, getattr(args, "from_offset", 0), as_json=args.json)
        if ended is None:
            return EXIT_INTERRUPTED
        job = ended
        show(console, job, as_json=args.json)
        return 0 if job.state in _NOT_FAILED else EXIT_FAILED


def cancel(client: Client, console: Console, job_id: str, *, as_json: bool) -> int:
    """0 once the job has ended cancelled; 1, saying so, when it had ended already."""
    before = client.job(job_id)
    job = before if before.done else client.cancel_job(job_id)
    show(console, job, as_json=as_json)
    if before.done or job.state not in ("canceled", "working", "submitted"):
        if not as_json:
            console.print(
                Text(f"job {job_id} had already ended ({job.state}): nothing to cancel"),
                highlight=False,
            )
        return EXIT_FAILED
    if job.state != "canceled":
        if not as_json:
            console.print(
                Text(f"job {job_id} was asked to stop and is still {job.state}"), highlight=False
            )
        return EXIT_FAILED
    return 0


def watch(client: Client, job_id: str, from_offset: int, *, as_json: bool) -> Job | None:
    """Follow the job; None (with how to resume) when interrupted by Ctrl-C."""
    position = [from_offset]
    try:
        return follow(client, job_id, from_offset, as_json=as_json, position=position)
    except KeyboardInterrupt:
        print(
            f"\nstopped watching; job {job_id} goes on. Resume with: "
            f"agentmesh jobs watch {job_id} --from {position[0]}",
            file=sys.stderr,
            flush=True,
        )
        return None


def submit(client: Client, args: argparse.Namespace) -> Job:
    text = read_input(args.input)
    data = parse_data(args.data)
    options = parse_options(args.option)
    if not args.workflow:
        if args.state:
            raise SystemExit("agentmesh: -s/--state is a workflow's; add --workflow")
        return client.submit(
            args.target, text, data=data, options=options, job_timeout=args.job_timeout
        )
    workflow: str | dict[str, Any] = args.target
    path = Path(args.target)
    if path.suffix in (".yaml", ".yml"):
        try:
            workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise SystemExit(f"agentmesh: cannot read workflow {path}: {exc}") from None
    if options:
        raise SystemExit("agentmesh: -o/--option goes to an agent's skill; not with --workflow")
    return client.submit(
        workflow=workflow,
        text=text,
        data=data,
        state=parse_options(args.state),
        job_timeout=args.job_timeout,
    )


def follow(
    client: Client,
    job_id: str,
    from_offset: int,
    *,
    as_json: bool,
    position: list[int] | None = None,
) -> Job:
    """Print the job's events as they come; return the job once it has ended, or once it
    waits for input (``jobs resume`` answers it).

    ``position[0]`` is kept at the offset to resume from.
    """
    for event in client.watch_job(job_id, from_offset=from_offset, until_input=True):
        if position is not None:
            position[0] = event.offset + 1
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
        print_json(message_json(job.raw))
        return
    colour = _COLOURS.get(job.state, "white")
    console.print(
        f"job {job.job_id}  [{colour}]{job.state}[/{colour}]  {job.kind}: {job.description}"
    )
    if job.waiting:
        console.print(f"question: {job.question}", markup=False, highlight=False)
        if job.question_data is not None:
            console.print(json.dumps(job.question_data), markup=False, highlight=False)
        console.print(
            f"answer with: agentmesh jobs resume {job.job_id} TEXT", markup=False, highlight=False
        )
        return
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
            result.text or json.dumps(integral(result.data), indent=2),
            markup=False,
            highlight=False,
        )


def jobs_table(jobs: list[Job]) -> Table:
    """Job ids and states stay whole on an 80-column terminal; the description wraps."""
    table = Table()
    for column, values in (("job", [j.job_id for j in jobs]), ("state", [j.state for j in jobs])):
        table.add_column(column, no_wrap=True, min_width=max([len(column), *map(len, values)]))
    table.add_column("kind", no_wrap=True)
    table.add_column("what", overflow="fold")
    table.add_column("created", no_wrap=True)
    table.add_column("events", justify="right")
    for job in jobs:
        colour = _COLOURS.get(job.state, "white")
        created = datetime.datetime.fromtimestamp(job.created_at).strftime("%H:%M:%S")
        table.add_row(Text(job.job_id), Text(job.state, style=colour), job.kind,
                      Text(job.description), created, str(job.event_count))  # fmt: skip
    return table


def print_jobs(console: Console, jobs: list[Job]) -> None:
    console.print(jobs_table(jobs))
