"""Where a server's time goes under load: py-spy samples, summarized.

:func:`record` samples a running process with py-spy (``--nonblocking``: the
target is never paused, so the load it serves is undisturbed) and keeps the
raw collapsed stacks; :func:`summarize` turns them into:

* ``threads``: the share of samples in the event-loop thread, in other threads
  (gRPC's completion-queue poller, where its C core does the HTTP/2 I/O, and
  the span exporter's) and waiting in ``epoll``; py-spy leaves out most
  samples of a thread it sees idle, so the shares are mostly of busy time;
* ``buckets``: the event loop's busy samples by their innermost frame:
  ``C under a loop callback`` (the innermost Python frame is the event loop
  running a callback or a task step: the time is in gRPC's Cython and C core
  or asyncio's C task machinery, which py-spy sees into only with
  ``--native``), ``grpc-python`` (grpc.aio's Python layer and the Cython calls
  it makes), ``asyncio``, ``agentmesh``, ``prometheus``, ``opentelemetry``,
  ``pybreaker``, ``protobuf``, ``redis``, ``other``; with ``--native``, C
  frames split further: ``grpc (cygrpc)``, ``libc (system calls)``,
  ``asyncio (C)``, ``protobuf (upb)``, ``CPython (C)``;
* ``top_self``: the functions most often innermost;
* ``top_agentmesh``: agentmesh's functions by inclusive share (the function or
  anything it calls), i.e. what each layer of the gateway's call path costs.

``python -m bench.profile --pid PID --seconds 8 --out DIR [--native]``
profiles any running process (``--native`` pauses it at each sample, so it
slows the process it measures); ``make bench`` profiles the gateway and the
bare proxy (without ``--native``) while h2load drives each at concurrency 64.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")
AGENTMESH_DIRS = ("gateway/", "runtime/", "telemetry/", "agents/", "client/", "cli/", "bench/")
BUCKETS = (
    ("grpc-python", ("grpc/",)),
    ("asyncio", ("asyncio/", "selectors.py", "threading.py", "contextvars", "<frozen abc>")),
    ("prometheus", ("prometheus_client/",)),
    ("opentelemetry", ("opentelemetry/",)),
    ("pybreaker", ("pybreaker/",)),
    ("protobuf", ("protobuf/", "google/")),
    ("redis", ("redis/",)),
    ("agentmesh", AGENTMESH_DIRS),
)


def py_spy() -> str | None:
    """py-spy from PATH or beside this Python (the ``bench`` extra installs it)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


async def record(
    pid: int, seconds: float, out: Path, *, rate: int = 100, native: bool = False
) -> Path:
    """py-spy's raw collapsed stacks of ``pid`` over ``seconds`` into ``out``."""
    tool = py_spy()
    if tool is None:
        raise RuntimeError("py-spy not found (pip install py-spy, or the bench extra)")
    argv = [
        tool, "record", "--pid", str(pid), "--duration", f"{max(1, round(seconds))}",
        "--rate", str(rate), "--format", "raw", "--output", str(out),
        "--native" if native else "--nonblocking",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), seconds + 60)
    if process.returncode != 0 or not _written(out):
        text = output.decode(errors="replace").strip()
        raise RuntimeError(f"py-spy failed ({process.returncode}): {text[-600:]}")
    return out


def _written(path: Path) -> bool:
    return path.exists()


def _function(frame: str) -> str:
    return _LINE.sub(")", frame)


def _file(frame: str) -> str:
    start = frame.rfind("(")
    return frame[start + 1 :] if start >= 0 else frame


C_UNDER_CALLBACK = "C under a loop callback"
# Innermost frames of a thread waiting for I/O (with --native: the system call itself).
IDLE = ("EpollSelector.select", "select (selectors.py", "epoll_wait (", "epoll_pwait (")


def _bucket(frame: str) -> str:
    if frame.startswith("Handle._run (asyncio/events.py"):
        return C_UNDER_CALLBACK  # gRPC's Cython coroutines and asyncio's C: no Python frame
    where = _file(frame)
    if "cygrpc" in where:
        return "grpc (cygrpc)"
    if "libc.so" in where or "libpthread" in where:
        return "libc (system calls)"
    if where.endswith("_asynciomodule.c"):
        return "asyncio (C)"
    if "_message.abi3.so" in where:
        return "protobuf (upb)"
    if where.endswith((".c", ".h")) or ".so" in where:
        return "CPython (C)"
    for name, markers in BUCKETS:
        if any(m in where for m in markers):
            return name
    return "other"


def _is_agentmesh(frame: str) -> bool:
    where = _file(frame)
    return where.startswith(AGENTMESH_DIRS) and "site-packages" not in where


def summarize(raw: str, *, top: int = 15) -> dict[str, Any]:
    """Shares (percent of all samples) of threads, buckets and functions; see the module doc."""
    total = 0
    threads: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    innermost: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_function(f) for f in stack.split(";") if f]
        if not frames:
            continue
        leaf = frames[-1]
        if leaf.startswith(IDLE):
            threads["idle (epoll wait)"] += count
            continue
        loop = next(
            (i for i, f in enumerate(frames) if f.startswith("BaseEventLoop.run_forever")), None
        )
        threads["event loop" if loop is not None else "other threads"] += count
        if loop is None:
            continue
        buckets[_bucket(leaf)] += count
        innermost[leaf] += count
        # Below the loop only: the frames that started the process are in every sample.
        for function in {f for f in frames[loop:] if _is_agentmesh(f)}:
            inclusive[function] += count

    def shares(counter: Counter[str], limit: int | None = None) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in counter.most_common(limit)}

    return {
        "samples": total,
        "threads": shares(threads) if total else {},
        "buckets": shares(buckets) if total else {},
        "top_self": shares(innermost, top) if total else {},
        "top_agentmesh": shares(inclusive, top) if total else {},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--pid", type=int, required=True, help="process to sample")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--native", action="store_true", help="C frames too (pauses the target)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"profile-{args.pid}{'-native' if args.native else ''}.txt"
    raw = asyncio.run(
        record(args.pid, args.seconds, args.out / name, rate=args.rate, native=args.native)
    )
    print(json.dumps(summarize(raw.read_text()), indent=2))


if __name__ == "__main__":
    main()
