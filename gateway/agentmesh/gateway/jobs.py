"""Jobs: long work run in the background, watched, cancelled and read back later.

A job is an invocation, a workflow run or a fan-out. Submitting records it
and queues it; one of this gateway's workers (or any replica's, with Redis)
runs it, appending its events to the job's log: the job's state changes, and
the invocation's or workflow's own events. Watchers read the log from any
offset and follow it live until the job ends. Finished jobs are kept for
``job_ttl`` seconds.

Cancelling a job cancels the task running it, wherever it runs, and so every
agent call under it. A gateway that stops hands its running jobs back to the
queue when the store is shared (Redis), so another replica finishes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import context as otel_context

from agentmesh.gateway.fanout import FanOut
from agentmesh.gateway.jobstore import TERMINAL_STATES, JobStore
from agentmesh.gateway.routing import Router, addressed, route
from agentmesh.gateway.upstream import Upstream
from agentmesh.runtime.errors import AgentError, ErrorCode, InvalidInput, LimitExceeded, NotFound
from agentmesh.runtime.status import grpc_code, internal_message
from agentmesh.telemetry.metrics import JOBS, JOBS_ACTIVE
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

log = logging.getLogger("agentmesh.gateway.jobs")

MAX_JOB_ID_CHARS = 64


class WorkflowRunner(Protocol):
    def run_workflow(
        self, request: gateway_pb2.RunWorkflowRequest, *, time_remaining: float | None
    ) -> AsyncIterator[gateway_pb2.WorkflowEvent]: ...


@dataclass(frozen=True, slots=True)
class JobSettings:
    workers: int = 16  # jobs this gateway runs at once
    timeout: float = 3600.0  # longest a job may run when it asks for no limit
    ttl: float = 3600.0  # how long a finished job is kept
    max_active: int = 1000  # submitted-or-running jobs this gateway accepts
    lease: float = 15.0  # seconds a runner's claim lasts without renewal


_STATE = {
    pb.TASK_STATE_COMPLETED: "completed",
    pb.TASK_STATE_FAILED: "failed",
    pb.TASK_STATE_CANCELED: "canceled",
}


class JobManager:
    def __init__(
        self,
        store: JobStore,
        *,
        router: Router,
        upstream: Upstream,
        fanout: FanOut,
        workflows: Callable[[], WorkflowRunner | None],
        settings: JobSettings,
        shared: bool,
    ) -> None:
        self._store = store
        self._router = router
        self._upstream = upstream
        self._fanout = fanout
        self._workflows = workflows
        self._settings = settings
        self._shared = shared  # the store outlives this process: hand jobs back on stop
        self._owner = uuid.uuid4().hex
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancel_asked: set[str] = set()
        # The submitter's trace context, so a job run here joins the submitter's trace.
        self._trace_contexts: dict[str, otel_context.Context] = {}
        self._background: list[asyncio.Task[None]] = []
        self._active = 0
        self._closing = False

    async def start(self) -> None:
        for i in range(self._settings.workers):
            self._background.append(asyncio.create_task(self._work(), name=f"job-worker-{i}"))
        self._background.append(asyncio.create_task(self._follow_cancellations()))
        if self._shared:
            self._background.append(asyncio.create_task(self._requeue_lapsed()))

    async def close(self) -> None:
        """Stop taking jobs; hand running ones back (shared store) or cancel them."""
        self._closing = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        running = list(self._running.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await self._store.close()

    # -- the API -----------------------------------------------------------

    async def submit(self, request: gateway_pb2.SubmitJobRequest) -> gateway_pb2.Job:
        kind = request.WhichOneof("work")
        if kind is None:
            raise InvalidInput("work", "set invoke, workflow or fan_out")
        timeout = request.timeout_seconds
        if not math.isfinite(timeout) or timeout < 0:
            raise InvalidInput("timeout_seconds", "must be a non-negative number of seconds")
        active = self._active + await self._store.queued()
        if active >= self._settings.max_active:
            raise LimitExceeded(
                "jobs",
                f"{active} jobs are queued or running, the limit is {self._settings.max_active}",
            )
        description = self._validate(request, kind)
        now = time.time()
        job = gateway_pb2.Job(
            job_id=uuid.uuid4().hex,
            state=pb.TASK_STATE_SUBMITTED,
            kind=kind,
            description=description,
            created_at=now,
            updated_at=now,
            event_count=1,
        )
        # Before it is queued: a worker may claim it at once.
        self._trace_contexts[job.job_id] = otel_context.get_current()
        if len(self._trace_contexts) > self._settings.max_active:  # run elsewhere or never
            self._trace_contexts.pop(next(iter(self._trace_contexts)))
        await self._store.create(job, request)
        await self._emit_state(job, 0)
        return job

    async def get(self, job_id: str) -> gateway_pb2.Job:
        _check_id(job_id)
        job = await self._store.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} does not exist (or has expired)")
        return job

    async def watch(self, job_id: str, from_offset: int) -> AsyncIterator[gateway_pb2.JobEvent]:
        """The job's events from ``from_offset``, live until the job has ended."""
        if from_offset < 0:
            raise InvalidInput("from_offset", "must be 0 or more")
        await self.get(job_id)
        offset = from_offset
        while True:
            events = await self._store.events(job_id, offset, wait=1.0)
            for event in events:
                yield event
                offset = event.offset + 1
            if events:
                continue
            job = await self._store.get(job_id)
            if job is None:
                return  # expired while watched
            if job.state in TERMINAL_STATES and offset >= await self._store.event_count(job_id):
                return

    async def cancel(self, job_id: str, *, wait: float) -> gateway_pb2.Job:
        """Cancel the job and wait (up to ``wait`` seconds) for it to have stopped."""
        job = await self.get(job_id)
        if job.state in TERMINAL_STATES:
            return job
        await self._store.request_cancel(job_id)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + max(wait, 0.0)
        while job.state not in TERMINAL_STATES and loop.time() < give_up:
            count = await self._store.event_count(job_id)
            await self._store.events(job_id, count, wait=min(0.5, give_up - loop.time()))
            job = await self.get(job_id)
        return job

    async def list(self, limit: int, state: int) -> list[gateway_pb2.Job]:
        limit = limit or 100
        if limit > 1000:
            raise InvalidInput("limit", "at most 1000")
        jobs = await self._store.recent(limit if not state else 1000)
        if state:
            jobs = [j for j in jobs if j.state == state]
        return jobs[:limit]

    # -- running -----------------------------------------------------------

    def _validate(self, request: gateway_pb2.SubmitJobRequest, kind: str) -> str:
        if kind == "invoke":
            invoke = request.invoke
            if invoke.agent or invoke.skill:
                route(self._router.registry, invoke.agent, invoke.skill)
            return invoke.agent + (f"/{invoke.skill}" if invoke.skill else "") or "routed"
        if kind == "workflow":
            if self._workflows() is None:
                raise AgentError("workflows are not available", code=ErrorCode.UNIMPLEMENTED)
            workflow = request.workflow
            if not workflow.workflow and not workflow.HasField("definition"):
                raise InvalidInput("workflow", "set workflow (a declared name) or definition")
            return f"workflow {workflow.workflow or 'inline'}"
        self._fanout.validate(request.fan_out)
        if request.fan_out.targets:
            return f"fan-out ({len(request.fan_out.targets)} legs)"
        return f"fan-out to skill {request.fan_out.skill}"

    async def _work(self) -> None:
        while True:
            try:
                claimed = await self._store.claim(self._owner, wait=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # a store outage must not end the worker for good
                log.exception("claiming a job failed")
                await asyncio.sleep(1.0)
                continue
            if claimed is None:
                continue
            job_id, work = claimed
            trace_context = self._trace_contexts.pop(job_id, None)
            task = asyncio.create_task(self._run(job_id, work, trace_context), name=f"job-{job_id}")
            self._running[job_id] = task
            try:
                await asyncio.shield(task)
            finally:
                self._running.pop(job_id, None)

    async def _run(
        self,
        job_id: str,
        work: gateway_pb2.SubmitJobRequest,
        trace_context: otel_context.Context | None = None,
    ) -> None:
        if trace_context is not None:
            otel_context.attach(trace_context)  # this task's own context: no detach needed
        job = await self._store.get(job_id)
        if job is None or job.state in TERMINAL_STATES:
            await self._store.release(job_id, self._owner)
            return  # cancelled (or expired) while it waited in the queue
        offset = await self._store.event_count(job_id)
        self._active += 1
        JOBS_ACTIVE.inc()
        renewing = asyncio.create_task(self._renew(job_id))
        handed_back = False

        async def emit(event: gateway_pb2.JobEvent) -> None:
            nonlocal offset
            event.offset = offset
            await self._store.append(job_id, offset, event)
            offset += 1

        try:
            job.state = pb.TASK_STATE_WORKING
            offset = await self._save_and_emit(job, offset)
            timeout = work.timeout_seconds or self._settings.timeout
            try:
                async with asyncio.timeout(timeout):
                    await self._execute(job, work, emit, timeout)
                job.state = pb.TASK_STATE_COMPLETED
            except TimeoutError:
                self._fail(job, ErrorCode.DEADLINE_EXCEEDED, f"job ran longer than {timeout:g}s")
            except asyncio.CancelledError:
                if job_id not in self._cancel_asked and self._closing and self._shared:
                    handed_back = True
                    job.state, job.message = (
                        pb.TASK_STATE_SUBMITTED,
                        "handed back: gateway stopping",
                    )
                else:
                    self._fail(
                        job, ErrorCode.CANCELLED, _cancel_reason(job_id in self._cancel_asked)
                    )
                    job.state = pb.TASK_STATE_CANCELED
            except AgentError as exc:
                self._fail(job, exc.code, exc.message)
            except Exception as exc:
                self._fail(job, ErrorCode.INTERNAL, internal_message(exc, where=f"job {job_id}"))
            # Events first, then the record: a watcher that sees the job ended has every event.
            offset = await self._save_and_emit(job, offset)
            if handed_back:
                await self._store.requeue(job_id)
            else:
                JOBS.labels(kind=job.kind, state=_STATE.get(job.state, "other")).inc()
        finally:
            renewing.cancel()
            self._cancel_asked.discard(job_id)
            self._active -= 1
            JOBS_ACTIVE.dec()
            await self._store.release(job_id, self._owner)

    async def _execute(
        self,
        job: gateway_pb2.Job,
        work: gateway_pb2.SubmitJobRequest,
        emit: Callable[[gateway_pb2.JobEvent], Awaitable[None]],
        timeout: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def remaining() -> float:
            return deadline - loop.time()

        if job.kind == "invoke":
            selection = await self._router.select(work.invoke, time_remaining=remaining())
            stream = self._upstream.stream(
                selection.entry, addressed(work.invoke, selection), time_remaining=remaining()
            )
            async for event in stream:
                await emit(gateway_pb2.JobEvent(invoke=event))
                if event.HasField("final"):
                    job.invoke.CopyFrom(event.final)
        elif job.kind == "workflow":
            runner = self._workflows()
            if runner is None:
                raise AgentError("workflows are not available", code=ErrorCode.UNIMPLEMENTED)
            events = runner.run_workflow(work.workflow, time_remaining=remaining())
            async for workflow_event in events:
                await emit(gateway_pb2.JobEvent(workflow=workflow_event))
                if workflow_event.HasField("final"):
                    job.workflow.CopyFrom(workflow_event.final)
        else:
            job.fan_out.CopyFrom(await self._fanout.run(work.fan_out, time_remaining=remaining()))

    async def _save_and_emit(self, job: gateway_pb2.Job, offset: int) -> int:
        job.updated_at = time.time()
        job.event_count = offset + 1
        ended = job.state in TERMINAL_STATES
        if ended:
            job.expires_at = job.updated_at + self._settings.ttl
        await self._emit_state(job, offset)
        await self._store.save(job, keep_for=self._settings.ttl if ended else None)
        return offset + 1

    async def _emit_state(self, job: gateway_pb2.Job, offset: int) -> None:
        event = gateway_pb2.JobEvent(offset=offset)
        event.state.CopyFrom(job)
        await self._store.append(job.job_id, offset, event)

    @staticmethod
    def _fail(job: gateway_pb2.Job, code: ErrorCode, message: str) -> None:
        job.state = pb.TASK_STATE_FAILED
        job.code = grpc_code(code).value[0]
        job.message = message

    async def _renew(self, job_id: str) -> None:
        while True:
            await asyncio.sleep(self._settings.lease / 3)
            with contextlib.suppress(Exception):
                await self._store.renew(job_id, self._owner, self._settings.lease)

    async def _follow_cancellations(self) -> None:
        while True:
            try:
                async for job_id in self._store.cancellations():
                    task = self._running.get(job_id)
                    if task is not None:
                        self._cancel_asked.add(job_id)
                        task.cancel()
                    else:
                        await self._cancel_queued(job_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following job cancellations failed")
                await asyncio.sleep(1.0)

    async def _cancel_queued(self, job_id: str) -> None:
        """A job cancelled before any gateway started it ends here and now."""
        job = await self._store.get(job_id)
        if job is None or job.state != pb.TASK_STATE_SUBMITTED:
            return  # running elsewhere (that gateway cancels it) or already ended
        self._fail(job, ErrorCode.CANCELLED, _cancel_reason(True))
        job.state = pb.TASK_STATE_CANCELED
        await self._save_and_emit(job, await self._store.event_count(job_id))
        JOBS.labels(kind=job.kind, state="canceled").inc()

    async def _requeue_lapsed(self) -> None:
        while True:
            await asyncio.sleep(self._settings.lease / 2)
            try:
                for job_id in await self._store.stale(200):
                    job = await self._store.get(job_id)
                    if job is None:
                        continue
                    job.state, job.message = pb.TASK_STATE_SUBMITTED, "requeued: its runner stopped"
                    await self._save_and_emit(job, await self._store.event_count(job_id))
                    await self._store.requeue(job_id)
                    log.warning("job requeued", extra={"job_id": job_id})
            except Exception:
                log.exception("requeueing lapsed jobs failed")


def _cancel_reason(asked: bool) -> str:
    return "cancelled by request" if asked else "cancelled: the gateway stopped"


def _check_id(job_id: str) -> None:
    if not job_id:
        raise InvalidInput("job_id", "required")
    if len(job_id) > MAX_JOB_ID_CHARS or not job_id.isalnum():
        raise InvalidInput("job_id", "not a job id (letters and digits, at most 64)")


__all__ = ["JobManager", "JobSettings", "WorkflowRunner"]
