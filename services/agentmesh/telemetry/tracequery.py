"""Questions asked of collected traces: how long, how it ended, which to keep.

Shared by ``agentmesh trace`` (a terminal waterfall) and the gateway's web
dashboard (``/dashboard/``), which both read the spans
:mod:`agentmesh.telemetry.collector` stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from agentmesh.telemetry.collector import SpanRecord
from agentmesh.telemetry.rpcstatus import CODE_NAMES, STATUS_CODE_ATTRIBUTE

AGENT_ATTRIBUTE = "agentmesh.agent"
# A status filter takes a trace outcome or the gRPC code its root span ended with.
STATUS_CHOICES = ("ok", "error", *(code.name.lower() for code in grpc.StatusCode))


def roots(spans: Sequence[SpanRecord]) -> list[SpanRecord]:
    """The spans whose parent is not in ``spans`` (a trace's request, or its fragments)."""
    ids = {s.span_id for s in spans}
    return [s for s in spans if not s.parent_id or s.parent_id not in ids]


def ordered(spans: Sequence[SpanRecord]) -> list[tuple[int, SpanRecord]]:
    """Depth-first (depth, span) pairs, children in start order."""
    children: dict[str, list[SpanRecord]] = {}
    for span in sorted(spans, key=lambda s: s.start_ns):
        children.setdefault(span.parent_id, []).append(span)
    out: list[tuple[int, SpanRecord]] = []

    def visit(span: SpanRecord, depth: int) -> None:
        out.append((depth, span))
        for child in children.get(span.span_id, ()):
            visit(child, depth + 1)

    for root in roots(sorted(spans, key=lambda s: s.start_ns)):
        visit(root, 0)
    return out


def duration_ns(spans: Sequence[SpanRecord]) -> int:
    """From the first span's start to the last span's end."""
    return max(s.end_ns for s in spans) - min(s.start_ns for s in spans)


def grpc_code_name(code: object) -> str:
    return CODE_NAMES.get(code, str(code)) if isinstance(code, int) else str(code)


def outcome(spans: Sequence[SpanRecord]) -> tuple[str, bool]:
    """The gRPC code name the trace's request ended with, and whether any span failed.

    The code is the root span's ``rpc.grpc.status_code`` (``OK`` when it has
    none); a cancelled request is ``CANCELLED`` and no failure.
    """
    code = roots(spans)[0].attributes.get(STATUS_CODE_ATTRIBUTE)
    name = grpc_code_name(code) if code is not None else "OK"
    return name, any(s.status == "ERROR" for s in spans)


def agents_of(spans: Sequence[SpanRecord]) -> list[str]:
    """The agents a trace's spans name (``agentmesh.agent``), in first-seen order."""
    names = (s.attributes.get(AGENT_ATTRIBUTE) for s in spans)
    return list(dict.fromkeys(str(n) for n in names if n))


@dataclass(frozen=True, slots=True)
class TraceFilter:
    """Which traces to keep; unset fields keep everything.

    ``service``: a span from that service; ``agent``: a span naming that agent;
    ``status``: ``ok``, ``error`` (any span failed) or the request's gRPC code
    name in lower case; ``min_ms``: at least that long.
    """

    service: str | None = None
    status: str | None = None
    min_ms: float | None = None
    agent: str | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.service, self.status, self.min_ms, self.agent))

    def keeps(self, spans: Sequence[SpanRecord]) -> bool:
        if self.service is not None and all(s.service != self.service for s in spans):
            return False
        if self.agent is not None and self.agent not in agents_of(spans):
            return False
        if self.min_ms is not None and duration_ns(spans) < self.min_ms * 1e6:
            return False
        if self.status is not None:
            code, failed = outcome(spans)
            if self.status == "error":
                return failed
            if self.status == "ok":
                return code == "OK" and not failed
            return code == self.status.upper()
        return True

    def describe(self) -> str:
        words = [f"--service {self.service}"] if self.service is not None else []
        words += [f"--agent {self.agent}"] if self.agent is not None else []
        words += [f"--status {self.status}"] if self.status is not None else []
        words += [f"--min-ms {self.min_ms:g}"] if self.min_ms is not None else []
        return " ".join(words)


def select(
    grouped: dict[str, list[SpanRecord]], wanted: TraceFilter
) -> dict[str, list[SpanRecord]]:
    """The traces ``wanted`` keeps."""
    if not wanted:
        return grouped
    return {tid: spans for tid, spans in grouped.items() if wanted.keeps(spans)}


def newest_first(grouped: dict[str, list[SpanRecord]]) -> list[list[SpanRecord]]:
    return sorted(grouped.values(), key=lambda spans: spans[0].start_ns, reverse=True)
