"""Jobs: long work run in the background, watched, cancelled and read back later.

A job is an invocation, a workflow run or a fan-out. Submitting records it
and queues it; one of this gateway's workers (or any replica's, with Redis)
runs it, appending its events to the job's log: the job's state changes, and
the invocation's or workflow's own events. Watchers read the log from any
offset, woken as it grows, until its terminal state event (always its last).
Finished jobs are kept for ``job_ttl`` seconds.

Every job belongs to its *owner* (the submitting principal's id). Reads take
the ``viewer``: the owner id the caller may see, or None for a caller that
sees every job (an operator, or the gateway itself). A job of another owner
is NOT_FOUND with the same message as one that does not exist.

Work may ask its caller a question (an agent's ``InputRequired``, a workflow's
``ask`` step): the job then waits in INPUT_REQUIRED, a stored state that holds no
worker and no lease, until ResumeJob answers (its owner only; any replica), which
queues it again with the conversation so far (see ``inputs``), or until
``input_timeout`` passes and it fails with DEADLINE_EXCEEDED.

Every state change is a compare-and-set in the store (see ``jobstore``): a
cancel and a completion cannot both win, and CancelJob answers the state that
won; nor can a resume, a cancel and the input timeout of one waiting job. A
worker never dies with a job: whatever the job's run raises, or however
it is cancelled, the job ends in a terminal state (or goes back on the queue
when its gateway stops and the store is shared), and the worker takes the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import context as otel_context

from agentmesh.gateway import inputs
from agentmesh.gateway.auth import set_work_owner
from agentmesh.gateway.dispatch import Dispatcher
from agentmesh.gateway.fanout import FanOut
from agentmesh.gateway.jobstore import (
    OPEN_STATES,
    TERMINAL_STATES,
    UNFINISHED_STATES,
    Claim,
    Fenced,
    IdempotencyConflict,
    JobStore,
)
from agentmesh.runtime import wire
from agentmesh.runtime.errors import (
    AgentError,
    ErrorCode,
    FailedPrecondition,
    InputRequired,
    InvalidInput,
    LimitExceeded,
    NotFound,
    Reason,
)
from agentmesh.runtime.status import grpc_code, internal_message
from agentmesh.telemetry.metrics import JOB_WORKERS, JOBS, JOBS_ACTIVE
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

log = logging.getLogger("agentmesh.gateway.jobs")

MAX_JOB_ID_CHARS = 64
MAX_IDEMPOTENCY_KEY_CHARS = 128
ANONYMOUS_OWNER = "anonymous"  # the one owner when authentication is off
WATCH_WAIT = 10.0  # a watcher re-reads the job this often when nothing wakes it


class WorkflowRunner(Protocol):
    def run_workflow(
        self, request: gateway_pb2.RunWorkflowRequest, *, time_remaining: float | None
    ) -> AsyncIterator[gateway_pb2.WorkflowEvent]: ...


@dataclass(frozen=True, slots=True)
class JobSettings:
    workers: int = 16  # jobs this gateway runs at once
    timeout: float = 3600.0  # longest a job may run when it asks for no limit
    ttl: float = 3600.0  # how long a finished job (and an idempotency key) is kept
    max_active: int = 1000  # submitted-or-running jobs this gateway accepts
    lease: float = 15.0  # seconds a runner's claim lasts without renewal
    max_job_bytes: int = 16 * 1024 * 1024  # request, events and result of one job
    max_message_bytes: int = 4 * 1024 * 1024  # what one GetJob or WatchJob message may carry
    input_timeout: float = 3600.0  # how long a job waits in INPUT_REQUIRED for its answer
    max_inputs: int = 20  # questions one job may ask


_STATE = {
    pb.TASK_STATE_COMPLETED: "completed",
    pb.TASK_STATE_FAILED: "failed",
    pb.TASK_STATE_CANCELED: "canceled",
}

# Why a run's work was stopped (set before its task is cancelled).
_CANCELLED, _STOPPING, _LEASE_LOST = "cancelled", "stopping", "lease lost"


class JobManager:
    def __init__(
        self,
        store: JobStore,
        *,
        dispatcher: Dispatcher,
        fanout: FanOut,
        workflows: Callable[[], WorkflowRunner | None],
        settings: JobSettings,
        shared: bool,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._fanout = fanout
        self._workflows = workflows
        self._settings = settings
        self._shared = shared  # the store outlives this process: hand jobs back on stop
        self._work_tasks: dict[str, asyncio.Task[None]] = {}  # job id -> its work, cancellable
        self._stop_reasons: dict[str, str] = {}
        self._runs: set[asyncio.Task[None]] = set()
        # The submitter's trace context, so a job run here joins the submitter's trace.
        self._trace_contexts: dict[str, otel_context.Context] = {}
        self._background: list[asyncio.Task[None]] = []
        self._active = 0
        self._live_workers = 0

    @property
    def live_workers(self) -> int:
        """Worker loops alive now (``workers`` from start to close, whatever jobs did)."""
        return self._live_workers

    async def start(self) -> None:
        start = getattr(self._store, "start", None)
        if start is not None:
            await start()
        for i in range(self._settings.workers):
            self._background.append(asyncio.create_task(self._work(), name=f"job-worker-{i}"))
        self._background.append(asyncio.create_task(self._follow_cancellations()))
        self._background.append(asyncio.create_task(self._expire_waiting()))
        if self._shared:
            self._background.append(asyncio.create_task(self._requeue_lapsed()))

    async def close(self, grace: float = 5.0) -> None:
        """Stop taking jobs; hand running ones back (shared store) or cancel them."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for job_id, work in list(self._work_tasks.items()):
            self._stop(job_id, work, _STOPPING)
        if self._runs:
            # Each run records its outcome itself; bounded, so a store outage cannot hang stop.
            await asyncio.wait(set(self._runs), timeout=grace)
        await self._store.close()

    # -- the API -----------------------------------------------------------

    async def submit(
        self,
        request: gateway_pb2.SubmitJobRequest,
        *,
        owner: str = ANONYMOUS_OWNER,
        max_jobs: int | None = None,
    ) -> gateway_pb2.Job:
        """Record and queue the job of ``owner``. A repeated ``idempotency_key`` (within
        the owner's own keys) returns the job the key first made. ``max_jobs``: the most
        jobs the owner may have queued or running (counted by the store, so shared by
        every replica on a shared store)."""
        kind = request.WhichOneof("work")
        if kind is None:
            raise InvalidInput("work", "set invoke, workflow or fan_out")
        timeout = request.timeout_seconds
        if not math.isfinite(timeout) or timeout < 0:
            raise InvalidInput("timeout_seconds", "must be a non-negative number of seconds")
        key = request.idempotency_key
        if len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
            raise InvalidInput(
                "idempotency_key", f"at most {MAX_IDEMPOTENCY_KEY_CHARS} printable characters"
            )
        size = request.ByteSize()
        if size > self._settings.max_job_bytes // 2:
            raise LimitExceeded(
                "max_job_bytes",
                f"the request is {size} bytes; a job may hold {self._settings.max_job_bytes} "
                "bytes in all, its request at most half of that",
            )
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
        )
        # Before it is queued: a worker may claim it at once.
        self._trace_contexts[job.job_id] = otel_context.get_current()
        if len(self._trace_contexts) > self._settings.max_active:  # run elsewhere or never
            self._trace_contexts.pop(next(iter(self._trace_contexts)))
        try:
            created, new = await self._store.create(
                job,
                request,
                owner=owner,
                max_open=max_jobs,
                idempotency_key=f"{owner}\x00{key}" if key else "",
                keep_key_for=self._settings.ttl,
            )
        except IdempotencyConflict:
            self._trace_contexts.pop(job.job_id, None)
            raise InvalidInput("idempotency_key", "already used for a different request") from None
        except BaseException:
            self._trace_contexts.pop(job.job_id, None)
            raise
        if not new:
            self._trace_contexts.pop(job.job_id, None)
        return created

    async def get(self, job_id: str, *, viewer: str | None = None) -> gateway_pb2.Job:
        """The job; NOT_FOUND when it does not exist or belongs to another than ``viewer``."""
        _check_id(job_id)
        job = await self._store.get(job_id, owner=viewer)
        if job is None:
            raise NotFound(
                f"job {job_id!r} does not exist (or has expired)", reason=Reason.JOB_NOT_FOUND
            )
        return job

    async def watch(
        self,
        job_id: str,
        from_offset: int,
        *,
        viewer: str | None = None,
        until_input: bool = False,
    ) -> AsyncIterator[gateway_pb2.JobEvent]:
        """The job's events from ``from_offset``, each once, until its terminal state event
        (``until_input``: or until it waits for input)."""
        last = TERMINAL_STATES | {pb.TASK_STATE_INPUT_REQUIRED} if until_input else TERMINAL_STATES
        if from_offset < 0:
            raise InvalidInput("from_offset", "must be 0 or more")
        await self.get(job_id, viewer=viewer)
        offset = from_offset
        while True:
            events = await self._store.events(job_id, offset, wait=WATCH_WAIT)
            for event in events:
                yield event
                offset = event.offset + 1
                if event.HasField("state") and event.state.state in last:
                    return  # the last event a job ever gets (or the question it waits on)
            if events:
                continue
            job = await self._store.get(job_id)
            if job is None:
                return  # expired while watched
            if job.state in TERMINAL_STATES and offset >= job.event_count:
                return

    async def cancel(self, job_id: str, *, viewer: str | None = None) -> gateway_pb2.Job:
        """Cancel the job unless it has ended; the state that stands (CANCELED if this won)."""
        job = await self.get(job_id, viewer=viewer)
        if job.state in TERMINAL_STATES:
            return job
        record = _copy(job)
        record.ClearField("result")
        record.state = pb.TASK_STATE_CANCELED
        record.code = grpc_code(ErrorCode.CANCELLED).value[0]
        record.message = "cancelled by request"
        record.updated_at = time.time()
        record.expires_at = record.updated_at + self._settings.ttl
        outcome = await self._store.transition(
            record, allowed=UNFINISHED_STATES, keep_for=self._settings.ttl
        )
        if outcome.job is None:
            raise NotFound(
                f"job {job_id!r} does not exist (or has expired)", reason=Reason.JOB_NOT_FOUND
            )
        if outcome.won:
            JOBS.labels(kind=record.kind, state="canceled").inc()
            # The state is final; now stop the work, wherever it runs.
            await self._store.request_cancel(job_id)
        return outcome.job

    async def resume(self, job_id: str, message: pb.Message, *, owner: str) -> gateway_pb2.Job:
        """Answer the question of ``owner``'s job waiting in INPUT_REQUIRED and queue it again.

        Another owner's job is NOT_FOUND (even for an operator: only the asker's caller
        answers); a job in another state, or one that left INPUT_REQUIRED while this
        answer was on its way (cancelled, timed out, answered), FAILED_PRECONDITION.
        """
        job = await self.get(job_id, viewer=owner)
        if not message.parts:
            raise InvalidInput("message.parts", "required: the answer (at least one part)")
        size = message.ByteSize()
        if size > self._settings.max_job_bytes // 8:
            most = self._settings.max_job_bytes // 8
            raise LimitExceeded("message", f"the answer is {size} bytes; at most {most}")
        if job.state != pb.TASK_STATE_INPUT_REQUIRED or not job.inputs:
            raise _not_waiting(job)
        record = _copy(job)
        answer = record.inputs[-1].answer
        answer.CopyFrom(message)
        answer.role = pb.ROLE_USER
        record.state = pb.TASK_STATE_SUBMITTED
        record.message = ""
        record.input_deadline = 0.0
        record.updated_at = time.time()
        outcome = await self._store.transition(
            record, allowed=frozenset({pb.TASK_STATE_INPUT_REQUIRED}), requeue=True
        )
        if outcome.job is None:
            raise NotFound(
                f"job {job_id!r} does not exist (or has expired)", reason=Reason.JOB_NOT_FOUND
            )
        if not outcome.won:
            raise _not_waiting(outcome.job)
        return outcome.job

    async def list(
        self, limit: int, state: int, *, viewer: str | None = None
    ) -> list[gateway_pb2.Job]:
        """Summaries (no results), newest first: ``viewer``'s own (filtered in the store,
        so a page is full of them), or every owner's when ``viewer`` is None."""
        limit = limit or 100
        if limit > 1000:
            raise InvalidInput("limit", "at most 1000")
        return await self._store.recent(limit, state, owner=viewer)

    # -- running -----------------------------------------------------------

    def _validate(self, request: gateway_pb2.SubmitJobRequest, kind: str) -> str:
        if kind == "invoke":
            target = self._dispatcher.check(request.invoke)
            return "routed" if target.routed else str(target)
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
        """One worker: claim a job, run it to its end, repeat; survives anything but close."""
        self._live_workers += 1
        JOB_WORKERS.inc()
        try:
            while True:
                try:
                    claim = await self._store.claim(self._settings.lease, wait=1.0)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a store outage must not end the worker
                    log.exception("claiming a job failed")
                    await asyncio.sleep(1.0)
                    continue
                if claim is None:
                    continue
                run = asyncio.create_task(self._run(claim), name=f"job-{claim.job_id}")
                self._runs.add(run)
                run.add_done_callback(self._runs.discard)
                # wait(), not await: the run's own cancellation never reaches this loop.
                await asyncio.wait({run})
                if not run.cancelled() and run.exception() is not None:
                    log.error("job run ended abnormally", exc_info=run.exception())
        finally:
            self._live_workers -= 1
            JOB_WORKERS.dec()

    async def _run(self, claim: Claim) -> None:
        """Run one claimed job and record how it ended; never raises."""
        job_id = claim.job_id
        trace_context = self._trace_contexts.pop(job_id, None)
        counted = False
        try:
            job = await self._store.get(job_id)
            owner = await self._store.owner_of(job_id)
            if job is None or owner is None:
                return  # expired while queued
            job.state = pb.TASK_STATE_WORKING
            job.message = ""
            job.updated_at = time.time()
            started = await self._store.transition(
                job, allowed=frozenset({pb.TASK_STATE_SUBMITTED}), fence=claim.fence
            )
            if not started.won:
                return  # cancelled while it waited in the queue
            self._active += 1
            JOBS_ACTIVE.inc()
            counted = True
            timeout = claim.work.timeout_seconds or self._settings.timeout
            work = asyncio.create_task(
                self._work_on(job, claim, timeout),
                name=f"job-work-{job_id}",
                context=_context_with(trace_context, owner),
            )
            self._work_tasks[job_id] = work
            renewing = asyncio.create_task(self._renew(claim, work))
            try:
                await asyncio.wait({work})
            finally:
                renewing.cancel()
                self._work_tasks.pop(job_id, None)
            await self._record(job, claim, work, timeout)
        except Exception:
            # The store failed us: with Redis the lease lapses and another replica requeues it.
            log.exception("recording job %s failed", job_id)
        finally:
            self._stop_reasons.pop(job_id, None)
            if counted:
                self._active -= 1
                JOBS_ACTIVE.dec()
            with contextlib.suppress(Exception):
                await self._store.release(claim)

    async def _work_on(self, job: gateway_pb2.Job, claim: Claim, timeout: float) -> None:
        """The job's work, in its own task (the one cancellation stops)."""
        budget = self._settings.max_job_bytes
        # Room for the envelope: a message must still fit with its job id and offset.
        largest = self._settings.max_message_bytes - 1024
        used = claim.work.ByteSize() + 2 * job.ByteSize()

        async def emit(event: gateway_pb2.JobEvent) -> None:
            nonlocal used
            size = event.ByteSize()
            if size > largest:
                raise LimitExceeded(
                    "max_message_bytes",
                    f"the job produced an event of {size} bytes; a watcher can receive {largest}",
                )
            used += size
            if used > budget:
                raise LimitExceeded(
                    "max_job_bytes", f"the job's events grew past {budget} bytes; it was stopped"
                )
            await self._store.append(job.job_id, event, fence=claim.fence)

        async with asyncio.timeout(timeout):
            await self._execute(job, claim.work, emit, timeout)
        size = job.ByteSize()
        if used + 2 * size > budget or size > largest:
            job.ClearField("result")
            raise LimitExceeded(
                "max_job_bytes", f"the job's result ({size} bytes) does not fit what a job may hold"
            )

    async def _record(
        self, job: gateway_pb2.Job, claim: Claim, work: asyncio.Task[None], timeout: float
    ) -> None:
        """Write how the work ended, unless another writer (a cancel) won first."""
        reason = self._stop_reasons.get(job.job_id)
        requeue = False
        job.updated_at = time.time()
        if work.cancelled():
            if reason in (_LEASE_LOST, _CANCELLED):
                return  # the state that stands was written by whoever took the job from us
            if reason == _STOPPING and self._shared:
                requeue = True
                job.state, job.message = pb.TASK_STATE_SUBMITTED, "handed back: gateway stopping"
            else:
                self._fail(job, ErrorCode.CANCELLED, "cancelled: the gateway stopped")
                job.state = pb.TASK_STATE_CANCELED
        else:
            exc = work.exception()
            if exc is None:
                job.state = pb.TASK_STATE_COMPLETED
            elif isinstance(exc, Fenced):
                return  # ended or taken elsewhere: nothing of ours may be written
            elif isinstance(exc, TimeoutError):
                self._fail(job, ErrorCode.DEADLINE_EXCEEDED, f"job ran longer than {timeout:g}s")
            elif (asked := InputRequired.of(exc)) is not None:
                self._park(job, asked)
            elif isinstance(exc, AgentError):
                self._fail(job, exc.code, exc.message)
            else:
                message = internal_message(exc, where=f"job {job.job_id}")
                self._fail(job, ErrorCode.INTERNAL, message)
        ended = job.state in TERMINAL_STATES
        if ended:
            job.expires_at = job.updated_at + self._settings.ttl
        outcome = await self._store.transition(
            job,
            allowed=frozenset({pb.TASK_STATE_WORKING}),
            fence=claim.fence,
            keep_for=self._settings.ttl if ended else None,
            requeue=requeue,
        )
        if outcome.won and ended:
            JOBS.labels(kind=job.kind, state=_STATE[job.state]).inc()

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

        # A resumed job's work runs with the answers so far (see ``inputs``).
        inputs.answers.set(inputs.answers_by_step(list(job.inputs)))
        if job.kind == "invoke":
            request = inputs.resumed_request(work.invoke, list(job.inputs))
            stream = self._dispatcher.stream(request, time_remaining=remaining())
            async for event in stream:
                await emit(gateway_pb2.JobEvent(invoke=event))
                if event.HasField("final"):
                    job.invoke.CopyFrom(event.final)
        elif job.kind == "workflow":
            runner = self._workflows()
            if runner is None:
                raise AgentError("workflows are not available", code=ErrorCode.UNIMPLEMENTED)
            if job.inputs:  # resumed: the steps that finished before it waited are kept
                log_so_far = await _whole_log(self._store, job.job_id)
                inputs.finished.set(inputs.finished_steps(log_so_far))
            events = runner.run_workflow(work.workflow, time_remaining=remaining())
            async for workflow_event in events:
                await emit(gateway_pb2.JobEvent(workflow=workflow_event))
                if workflow_event.HasField("final"):
                    job.workflow.CopyFrom(workflow_event.final)
        else:
            job.fan_out.CopyFrom(await self._fanout.run(work.fan_out, time_remaining=remaining()))

    def _park(self, job: gateway_pb2.Job, asked: InputRequired) -> None:
        """``job`` as waiting for the answer to ``asked`` (or failed: too many questions)."""
        if len(job.inputs) >= self._settings.max_inputs:
            self._fail(
                job,
                ErrorCode.RESOURCE_EXHAUSTED,
                f"the job asked more than {self._settings.max_inputs} questions "
                f"(the last: {asked.question!r})",
            )
            return
        job.ClearField("result")
        job.state = pb.TASK_STATE_INPUT_REQUIRED
        job.code = 0
        job.message = asked.question
        job.input_deadline = job.updated_at + self._settings.input_timeout
        entry = job.inputs.add(
            question=asked.question,
            agent=asked.metadata.get("agent", ""),
            step=asked.step,
            asked_at=job.updated_at,
        )
        if asked.data is not None:
            wire.python_to_value(asked.data, entry.data)

    @staticmethod
    def _fail(job: gateway_pb2.Job, code: ErrorCode, message: str) -> None:
        job.state = pb.TASK_STATE_FAILED
        job.code = grpc_code(code).value[0]
        job.message = message

    def _stop(self, job_id: str, work: asyncio.Task[None], reason: str) -> None:
        """Cancel a run's work once, remembering why (the first reason stands)."""
        if job_id not in self._stop_reasons:
            self._stop_reasons[job_id] = reason
            work.cancel()

    async def _renew(self, claim: Claim, work: asyncio.Task[None]) -> None:
        while True:
            await asyncio.sleep(self._settings.lease / 3)
            try:
                held = await self._store.renew(claim, self._settings.lease)
            except Exception:  # Redis away for a moment: the lease still has time
                log.warning("renewing the lease of job %s failed", claim.job_id, exc_info=True)
                continue
            if not held:  # ended, cancelled or requeued elsewhere: stop working on it
                self._stop(claim.job_id, work, _LEASE_LOST)
                return

    async def _follow_cancellations(self) -> None:
        while True:
            try:
                async for job_id in self._store.cancellations():
                    work = self._work_tasks.get(job_id)
                    if work is not None:
                        self._stop(job_id, work, _CANCELLED)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following job cancellations failed")
                await asyncio.sleep(1.0)

    async def _expire_waiting(self) -> None:
        """Fail every job whose wait for input outlasted ``input_timeout`` (any replica's:
        the deadline is in the store, and the transition a compare-and-set)."""
        every = min(1.0, self._settings.input_timeout / 4)
        while True:
            await asyncio.sleep(every)
            try:
                now = time.time()
                for job_id in await self._store.overdue(now):
                    job = await self._store.get(job_id)
                    if job is None or job.state != pb.TASK_STATE_INPUT_REQUIRED:
                        continue
                    question = job.message
                    self._fail(
                        job,
                        ErrorCode.DEADLINE_EXCEEDED,
                        f"no answer arrived within {self._settings.input_timeout:g}s: the job "
                        f"waited for input ({question!r})",
                    )
                    job.updated_at = now
                    job.expires_at = now + self._settings.ttl
                    outcome = await self._store.transition(
                        job,
                        allowed=frozenset({pb.TASK_STATE_INPUT_REQUIRED}),
                        keep_for=self._settings.ttl,
                    )
                    if outcome.won:
                        JOBS.labels(kind=job.kind, state="failed").inc()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("failing jobs that waited too long for input failed")

    async def _requeue_lapsed(self) -> None:
        """Put back every job whose runner's lease lapsed (its gateway died)."""
        while True:
            await asyncio.sleep(self._settings.lease / 3)
            try:
                now = time.time()
                for job_id in await self._store.lapsed(now):
                    job = await self._store.get(job_id)
                    if job is None or job.state in TERMINAL_STATES:
                        continue
                    job.state, job.message = pb.TASK_STATE_SUBMITTED, "requeued: its runner stopped"
                    job.updated_at = now
                    outcome = await self._store.transition(
                        job, allowed=OPEN_STATES, lapsed_before=now, requeue=True
                    )
                    if outcome.won:
                        log.warning("job requeued", extra={"job_id": job_id})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("requeueing lapsed jobs failed")


def _context_with(
    trace_context: otel_context.Context | None, owner: str | None
) -> contextvars.Context:
    """A copy of the current context for the job's task, joined to the submitter's trace
    and working for the job's owner (agents are told whose work it is)."""
    context = contextvars.copy_context()
    context.run(set_work_owner, owner)
    if trace_context is not None:
        context.run(otel_context.attach, trace_context)  # that task's own: no detach needed
    return context


async def _whole_log(store: JobStore, job_id: str) -> list[gateway_pb2.JobEvent]:
    """The job's whole event log (bounded by what a job may hold)."""
    events: list[gateway_pb2.JobEvent] = []
    while batch := await store.events(job_id, len(events), wait=0):
        events += batch
    return events


def _not_waiting(job: gateway_pb2.Job) -> FailedPrecondition:
    state = pb.TaskState.Name(job.state).removeprefix("TASK_STATE_")
    return FailedPrecondition(
        f"job {job.job_id!r} is {state}, not INPUT_REQUIRED: only a job waiting for input "
        "can be resumed"
    )


def _copy(job: gateway_pb2.Job) -> gateway_pb2.Job:
    copy = gateway_pb2.Job()
    copy.CopyFrom(job)
    return copy


def _check_id(job_id: str) -> None:
    if not job_id:
        raise InvalidInput("job_id", "required")
    if len(job_id) > MAX_JOB_ID_CHARS or not job_id.isalnum():
        raise InvalidInput("job_id", "not a job id (letters and digits, at most 64)")


__all__ = ["ANONYMOUS_OWNER", "JobManager", "JobSettings", "WorkflowRunner"]
