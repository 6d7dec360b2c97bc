"""``agentmesh logs [SERVICE] [-f]``: the JSON logs of a local mesh, readable.

Every service of ``agentmesh up`` writes JSON lines into the run's directory
(``mesh.log`` holds the runner's own events: restarts, reloads). This renders
them one line each, time, level, service, message and the extra fields, merged
in time order across services; lines that are not JSON (a traceback, a print)
follow the record before them. ``--level`` and ``--trace-id`` filter;
``-f`` keeps following, as ``tail -f`` does.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.text import Text

from agentmesh.cli.main import fail, gateway_address
from agentmesh.cli.state import find_mesh

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_STYLES = {"DEBUG": "dim", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}
_SHOWN = frozenset({"ts", "level", "service", "logger", "msg", "exc", "span_id"})
_FOLLOW_POLL = 0.2


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "logs",
        help="show the local mesh's logs, readable; -f follows them",
        description="Render the JSON logs of `agentmesh up` (the running mesh's, else the "
        "latest run's) one line per record, merged across services in time order.",
    )
    parser.add_argument(
        "service", nargs="?", help="only this service (an agent with replicas: all of them)"
    )
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    parser.add_argument(
        "--level",
        type=str.upper,
        choices=LEVELS,
        default=None,
        help="only records at this level or above",
    )
    parser.add_argument("--trace-id", help="only records of this trace (any unique prefix)")
    parser.add_argument(
        "-n", "--lines", type=int, default=None, help="only the last N records (before -f)"
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="a run directory or the log root (default: the running mesh's, "
        "else .agentmesh/logs/latest)",
    )
    parser.add_argument(
        "--gateway",
        type=gateway_address,
        default=None,
        help="with several local meshes: the one whose gateway is HOST:PORT",
    )
    parser.set_defaults(handler=cmd_logs)


@dataclass(slots=True)
class Record:
    ts: str
    level: str
    service: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    more: list[str] = field(default_factory=list)  # lines that followed: a traceback

    @property
    def trace_id(self) -> str:
        return str(self.fields.get("trace_id", ""))


def parse_line(line: str, service: str) -> Record | None:
    """A JSON log line of ``service``'s file as a record; None for any other line."""
    if not line.startswith("{"):
        return None
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(entry, dict) or "msg" not in entry:
        return None
    record = Record(
        ts=str(entry.get("ts", "")),
        level=str(entry.get("level", "INFO")).upper(),
        service=service,  # the file's: replicas of one agent stay apart
        message=str(entry.get("msg", "")),
        fields={k: v for k, v in entry.items() if k not in _SHOWN},
    )
    if entry.get("exc"):
        record.more.extend(str(entry["exc"]).splitlines())
    return record


class LogFile:
    """One service's log, read incrementally; records keep their continuation lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.service = path.stem
        self._file: IO[str] | None = None
        self._partial = ""
        self._last: Record | None = None

    def read(self) -> list[Record]:
        """Records completed since the last read (a record is complete once a next one starts)."""
        if self._file is None:
            try:
                self._file = self.path.open(encoding="utf-8", errors="replace")
            except OSError:
                return []
        chunk = self._partial + self._file.read()
        lines = chunk.split("\n")
        self._partial = lines.pop()
        return self._take(lines)

    def _take(self, lines: list[str]) -> list[Record]:
        done: list[Record] = []
        for line in lines:
            record = parse_line(line, self.service)
            if record is not None:
                if self._last is not None:
                    done.append(self._last)
                self._last = record
            elif line.strip():
                if self._last is None:
                    self._last = Record("", "INFO", self.service, line)
                else:
                    self._last.more.append(line)
        return done

    def flush(self) -> list[Record]:
        """What is still open: a last line without its newline, the last record."""
        partial, self._partial = self._partial, ""
        done = self._take([partial]) if partial else []
        last, self._last = self._last, None
        return [*done, last] if last is not None else done

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def matches(
    record: Record, *, service: str | None, level: str | None, trace_id: str | None
) -> bool:
    if service is not None and not _same_service(record, service):
        return False
    if level is not None and _rank(record.level) < _rank(level):
        return False
    return trace_id is None or record.trace_id.startswith(trace_id.lower())


def _same_service(record: Record, wanted: str) -> bool:
    name = record.service
    return name == wanted or (name.startswith(f"{wanted}-") and name[len(wanted) + 1 :].isdigit())


def _rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else 1


def render(record: Record) -> Text:
    """``HH:MM:SS.mmm LEVEL service  message key=value ...`` and any continuation lines."""
    clock = record.ts[11:23] if len(record.ts) >= 23 else record.ts
    style = _STYLES.get(record.level, "")
    line = Text.assemble(
        (f"{clock} ", "dim"),
        (f"{record.level:<7} ", style),
        (f"{record.service:<14} ", "cyan"),
        (record.message, style),
    )
    extras = " ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in record.fields.items()
    )
    if extras:
        line.append(f"  {extras}", style="dim")
    for more in record.more:
        line.append(f"\n    {more}", style=style or "")
    return line


def resolve_dir(explicit: Path | None, gateway: str | None) -> Path:
    """The run directory to read: the flag's, the running mesh's, or the latest run's."""
    if explicit is not None:
        candidate = explicit / "latest" if (explicit / "latest").is_dir() else explicit
        if not candidate.is_dir():
            fail(f"no log directory {explicit}")
        return candidate
    mesh = find_mesh(gateway)
    if mesh is not None:
        return Path(mesh.log_dir)
    if gateway is not None:
        fail(f"no local mesh is running on {gateway}")
    latest = Path(".agentmesh/logs/latest")
    if not latest.is_dir():
        fail("no mesh is running and there is no .agentmesh/logs/latest here; start one with: "
             "agentmesh up")  # fmt: skip
    return latest


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


def _merged(batches: Iterable[list[Record]]) -> list[Record]:
    records = [r for batch in batches for r in batch]
    return sorted(records, key=lambda r: r.ts)  # stable: each file keeps its order


def cmd_logs(args: argparse.Namespace, console: Console) -> int:
    directory = resolve_dir(args.log_dir, args.gateway)
    wanted = {"service": args.service, "level": args.level, "trace_id": args.trace_id}
    files = {path: LogFile(path) for path in _files(directory)}
    if args.service is not None and not any(
        path.stem == args.service
        or (path.stem.startswith(f"{args.service}-") and path.stem.rsplit("-", 1)[1].isdigit())
        for path in files
    ):
        names = ", ".join(p.stem for p in files) or "none"
        fail(f"no log of {args.service!r} in {directory} (services: {names})")
    try:
        records = _merged([f.read() + f.flush() for f in files.values()])
        shown = [r for r in records if matches(r, **wanted)]
        if args.lines is not None:
            shown = shown[-args.lines :] if args.lines > 0 else []
        for record in shown:
            console.print(render(record), highlight=False, soft_wrap=True)
        if args.follow:
            for record in _follow(directory, files):
                if matches(record, **wanted):
                    console.print(render(record), highlight=False, soft_wrap=True)
    except KeyboardInterrupt:
        return 0
    finally:
        for log in files.values():
            log.close()
    return 0


def _follow(directory: Path, files: dict[Path, LogFile]) -> Iterator[Record]:
    """New records as they are written, until interrupted."""
    quiet = 0
    while True:
        for path in _files(directory):
            if path not in files:
                files[path] = LogFile(path)
        batches = [f.read() for f in files.values()]
        if any(batches):
            quiet = 0
        else:
            quiet += 1
        if quiet == 2:  # nothing new for a moment: what is open is complete
            batches = [f.flush() for f in files.values()]
        yield from _merged(batches)
        time.sleep(_FOLLOW_POLL)
