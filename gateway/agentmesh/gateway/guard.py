"""One admission check for every call the gateway serves, whatever the door.

:meth:`Guard.admit` is the whole check, in this order:

1. the principal from the call's credentials (``auth``; anonymous when
   authentication is off) — UNAUTHENTICATED when refused;
2. its scopes for what the request asks (an A2A message is read as the job it
   becomes) — PERMISSION_DENIED;
3. the rate limit of its identity (its key, or for an anonymous caller the
   ``x-agentmesh-client`` label or peer host), charged the request's *cost*
   (a fan-out its legs, a workflow its steps) — RESOURCE_EXHAUSTED with a
   ``retry-after``;
4. for a request that creates a job (SubmitJob, A2A SendMessage), the key's
   ``max_jobs`` against its open jobs — RESOURCE_EXHAUSTED (the job store
   checks it again atomically when it records the job).

:class:`GuardInterceptor` runs it for every method of every gRPC service on
the gateway's server (the native Gateway service and A2A alike), except the
open ones (health, reflection), and writes one audit line per call
(:class:`AuditLog`). Another door (HTTP, MCP) calls :meth:`Guard.admit` with
its own credentials and request, and :meth:`Guard.audit` with the outcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc
from opentelemetry import propagate, trace

from agentmesh.gateway.auth import (
    ANONYMOUS,
    AuthConfigError,
    Authenticator,
    AuthError,
    Principal,
    authorize,
    set_current_principal,
)
from agentmesh.gateway.policy import RateLimitPolicy
from agentmesh.gateway.resilience.interceptor import client_identity
from agentmesh.gateway.resilience.ratelimit import RateLimiter
from agentmesh.runtime.errors import Reason
from agentmesh.runtime.status import StatusDetails, abort_status
from agentmesh.telemetry.handlers import (
    Behaviour,
    Context,
    Handler,
    MethodInterceptor,
    PerMethod,
    call_metadata,
    responses,
    rewrap,
)
from agentmesh.telemetry.interceptor import METADATA_GETTER
from agentmesh.telemetry.metrics import RATE_LIMITED
from agentmesh.v1 import gateway_pb2

log = logging.getLogger("agentmesh.gateway.guard")

Metadata = Sequence[tuple[str, str | bytes]] | None

ALLOW, DENY = "allow", "deny"
_MAX_TARGET_CHARS = 128


class AuditLog:
    """One JSON line per call: ``true`` writes to stdout, a path appends to that file.

    A line holds the time, principal, method, target, decision, status code
    and trace id; never a key, token or request body.
    """

    def __init__(self, sink: TextIO) -> None:
        self._sink = sink

    @classmethod
    def open(cls, setting: bool | Path | None) -> AuditLog | None:
        if setting is None or setting is False:
            return None
        if setting is True:
            return cls(sys.stdout)
        try:
            return cls(setting.open("a", encoding="utf-8", buffering=1))
        except OSError as exc:
            raise AuthConfigError(f"audit_log: cannot open {setting}: {exc.strerror}") from None

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._sink.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._sink.flush()
        except (OSError, ValueError):  # full disk, closed file: the call goes on
            log.warning("writing the audit log failed", exc_info=True)

    def close(self) -> None:
        if self._sink is not sys.stdout:
            self._sink.close()


class Guard:
    """Authentication, scopes, rate limit and job quota, for every door (see the module)."""

    def __init__(
        self,
        authenticator: Authenticator,
        limiter: RateLimiter,
        *,
        base_policy: RateLimitPolicy,
        open_jobs: Callable[[str], Awaitable[int]],
        cost: Callable[[object], int] = lambda _request: 1,
        work_of: Callable[[object], object | None] = lambda _request: None,
        audit: AuditLog | None = None,
    ) -> None:
        """``open_jobs``: an owner's queued or running jobs; ``cost``: tokens a request
        spends; ``work_of``: the native request a foreign one stands for (an A2A message:
        its job), for scopes and cost; ``audit``: where audit lines go (None: off)."""
        self.authenticator = authenticator
        self.limiter = limiter
        self._base_policy = base_policy
        self._open_jobs = open_jobs
        self._cost = cost
        self._work_of = work_of
        self.audit_log = audit

    def is_open(self, method: str) -> bool:
        return self.authenticator.is_open(method)

    def reload(self) -> bool:
        """Read the keys file again (SIGHUP); on failure keep the keys in force and log why."""
        try:
            count = self.authenticator.reload()
        except AuthConfigError as exc:
            log.error("keys not reloaded; the keys in force stay: %s", exc)
            return False
        self.limiter.update(self.authenticator.rate_policy(self._base_policy))
        log.info("keys reloaded", extra={"keys": count})
        return True

    async def admit(
        self, method: str, metadata: Metadata, request: object | None, peer: Callable[[], str]
    ) -> Principal:
        """The caller's principal once admitted; raises :class:`AuthError` when refused."""
        authenticator = self.authenticator
        principal = authenticator.authenticate(metadata) if authenticator.configured else ANONYMOUS
        try:
            await self._check(principal, metadata, request, peer)
        except AuthError as exc:
            exc.principal = principal.id
            raise
        return principal

    async def _check(
        self,
        principal: Principal,
        metadata: Metadata,
        request: object | None,
        peer: Callable[[], str],
    ) -> None:
        work = self._work_of(request) if request is not None else None
        if work is None:
            work = request
        if work is not None:
            authorize(principal, work)
        if self.limiter.enabled:
            identity = (
                principal.id if principal is not ANONYMOUS else client_identity(metadata, peer)
            )
            wait = await self.limiter.take(identity, self._cost(work) if work is not None else 1)
            if wait:
                RATE_LIMITED.labels(client=identity).inc()
                raise AuthError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"rate limit exceeded for {identity}; retry in {wait:.3f}s",
                    retry_after=wait,
                    reason=Reason.RATE_LIMITED,
                )
        if isinstance(work, gateway_pb2.SubmitJobRequest) and principal.max_jobs is not None:
            open_jobs = await self._open_jobs(principal.owner)
            if open_jobs >= principal.max_jobs:
                raise AuthError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"max_jobs: {open_jobs} jobs of {principal.id} are queued or running; "
                    f"the limit is {principal.max_jobs} (max_jobs of the key)",
                    reason=Reason.QUOTA_EXCEEDED,
                )

    def audit(
        self,
        *,
        principal: str | None,
        method: str,
        request: object | None,
        decision: str,
        status: grpc.StatusCode,
        metadata: Metadata = None,
    ) -> None:
        if self.audit_log is None:
            return
        context = trace.get_current_span().get_span_context()
        if not context.is_valid and metadata:
            # Tracing off here: the caller's trace, as it sent it.
            parent = propagate.extract(metadata, getter=METADATA_GETTER)
            context = trace.get_current_span(parent).get_span_context()
        self.audit_log.write(
            {
                "ts": round(time.time(), 3),
                "principal": principal,
                "method": method,
                "target": target_of(request),
                "decision": decision,
                "status": status.name,
                "trace_id": format(context.trace_id, "032x") if context.is_valid else None,
            }
        )


def target_of(request: object | None) -> str | None:
    """What a request names (agent and skill, workflow, job or task id), for the audit."""
    if request is None:
        return None
    if isinstance(request, gateway_pb2.SubmitJobRequest):
        work = request.WhichOneof("work")
        return None if work is None else target_of(getattr(request, work))
    if isinstance(request, gateway_pb2.FanOutRequest):
        legs = [t.agent or t.skill for t in request.targets] or [f"skill:{request.skill}"]
        return ("fan-out:" + ",".join(legs))[:_MAX_TARGET_CHARS]
    for field, label in (
        ("workflow", "workflow:"),
        ("job_id", "job:"),
        ("id", "task:"),
    ):
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return (label + value)[:_MAX_TARGET_CHARS]
    agent, skill = getattr(request, "agent", None), getattr(request, "skill", None)
    if isinstance(agent, str) and isinstance(skill, str) and (agent or skill):
        return f"{agent}/{skill}"[:_MAX_TARGET_CHARS] if skill else agent[:_MAX_TARGET_CHARS]
    return None


class GuardInterceptor(MethodInterceptor):
    """Runs :meth:`Guard.admit` before every non-open method and audits its outcome.

    The wrapper is built once per method (nothing but the work itself per call): the
    call's metadata and peer come from its context, the principal travels in a
    contextvar to the servicer.
    """

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._wrapped = PerMethod()

    def intercept(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        method: str = details.method
        if self._guard.is_open(method):
            return handler
        return self._wrapped.get(method, handler, _guarded, self._guard, method)


def _status(context: Context, exc: BaseException | None) -> grpc.StatusCode:
    code: object = context.code()  # None until the handler sets one
    if isinstance(code, grpc.StatusCode):
        return code
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _guarded(handler: Handler, guard: Guard, method: str) -> Handler:
    """``handler`` admitted by ``guard`` first and audited after (client-streaming
    methods are admitted without their requests)."""
    whole = handler.stream_unary is None and handler.stream_stream is None

    async def admit(request: Any, context: Context) -> Principal:
        metadata: Metadata = call_metadata(context)
        try:
            principal = await guard.admit(method, metadata, request, context.peer)
        except AuthError as exc:
            guard.audit(
                principal=exc.principal,
                method=method,
                request=request,
                decision=DENY,
                status=exc.code,
                metadata=metadata,
            )
            # Rich details (ErrorInfo reason, RetryInfo; the retry-after trailer as alias).
            details = StatusDetails(exc.reason, retry_after=exc.retry_after)
            await abort_status(context, exc.code, exc.message, details)
        set_current_principal(principal)
        return principal

    def done(
        principal: Principal, request: Any, context: Context, exc: BaseException | None
    ) -> None:
        if guard.audit_log is None:
            return  # no audit: nothing to do per call after the handler
        guard.audit(
            principal=principal.id,
            method=method,
            request=request,
            decision=ALLOW,
            status=_status(context, exc),
            metadata=call_metadata(context),
        )

    def unary(behaviour: Behaviour) -> Behaviour:
        async def serve(request: Any, context: Context) -> Any:
            seen = request if whole else None
            principal = await admit(seen, context)
            try:
                response = await behaviour(request, context)
            except BaseException as exc:
                done(principal, seen, context, exc)
                raise
            done(principal, seen, context, None)
            return response

        return serve

    def stream(behaviour: Behaviour) -> Behaviour:
        async def serve(request: Any, context: Context) -> AsyncIterator[Any]:
            seen = request if whole else None
            principal = await admit(seen, context)
            try:
                async for item in responses(behaviour, request, context):
                    yield item
            except BaseException as exc:
                done(principal, seen, context, exc)
                raise
            done(principal, seen, context, None)

        return serve

    return rewrap(handler, unary=unary, stream=stream)
