"""Running a compiled workflow: plain asyncio, no gRPC.

The engine calls agents through an :class:`AgentCaller` and reports progress
by calling ``emit`` with the events of ``events.py``. Top-level steps run in
order; a parallel group's steps run as tasks of one TaskGroup, so a failure
(or the caller's cancellation) cancels the siblings still running, and the
cancellation reaches their agent calls.

A step's life: its ``when`` is false -> SKIPPED. Otherwise up to
``1 + retry`` attempts; then the fallback agent (FELL_BACK when it answers);
then the compensation step (COMPENSATED when it ran); then ``then: skip``
(SKIPPED, the run goes on) or ``then: fail`` (FAILED, the run fails with the
step's error).

An ``ask`` step raises :class:`InputRequired` with its question (past every error
policy: the run stops there) unless the run was given its answer: a job waits
for it and runs the workflow again with ``answers`` (by step) and the steps that
had finished (``done``, by step), which are kept rather than run again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace

from agentmesh.gateway.workflows.events import (
    Event,
    Outcome,
    RunFinished,
    RunStarted,
    StepError,
    StepFinished,
    StepOutput,
    StepPartial,
    StepStarted,
)
from agentmesh.gateway.workflows.expr import (
    MAX_VALUE_LENGTH,
    ExpressionError,
    RenderTooLarge,
    to_text,
)
from agentmesh.gateway.workflows.spec import MAX_MAP_ITEMS, ErrorPolicy
from agentmesh.gateway.workflows.validate import (
    AgentCall,
    CompiledStep,
    CompiledWorkflow,
    Compose,
    InputTemplate,
)
from agentmesh.runtime.errors import (
    MAX_QUESTION_BYTES,
    AgentError,
    DeadlineExceeded,
    InputRequired,
    InvalidInput,
    LimitExceeded,
)
from agentmesh.runtime.resilience import Backoff
from agentmesh.runtime.types import (
    DataPart,
    JSONValue,
    Message,
    Part,
    Partial,
    Result,
    TextPart,
    Usage,
)
from agentmesh.telemetry.metrics import WORKFLOW_RUNS, WORKFLOW_STEPS
from agentmesh.v1 import gateway_pb2

_tracer = trace.get_tracer("agentmesh.gateway.workflows")


class AgentCaller(Protocol):
    """How the engine calls an agent (the gateway implements it over routing and upstream)."""

    def call(
        self,
        agent: str,
        skill: str,
        message: Message,
        options: Mapping[str, JSONValue],
        *,
        time_remaining: float | None,
    ) -> AsyncIterator[Partial | StepOutput]:
        """Yield the call's partial outputs, then one StepOutput; AgentError on failure."""
        ...

    async def fan_out(
        self,
        request: gateway_pb2.FanOutRequest,
        message: Message,
        options: Mapping[str, JSONValue],
        *,
        time_remaining: float | None,
    ) -> StepOutput:
        """Run the fan-out on ``message``; its aggregate as one output."""
        ...


class StepFailed(AgentError):
    """A step failed for good; the run (or the enclosing step) fails with its code."""

    def __init__(self, step: str, cause: AgentError) -> None:
        super().__init__(f"step {step!r} failed: {cause.message}", code=cause.code)
        self.step = step
        self.cause = cause


@dataclass(slots=True)
class _Shared:
    """What every level of one run (nested workflows included) shares."""

    emit: Callable[[Event], None]
    caller: AgentCaller
    label: str  # the workflow's name for metrics and spans
    state: Mapping[str, JSONValue]
    room: int  # characters the run's step outputs may still take
    usage: Usage = field(default_factory=Usage)
    answers: Mapping[str, Message] = field(default_factory=dict)  # ask steps' answers
    done: Mapping[str, StepFinished] = field(default_factory=dict)  # kept from a run before

    def take(self, output: StepOutput, where: str) -> None:
        """Count a step's output against the run's budget (max_bytes)."""
        size = _size(output)
        if size > self.room:
            raise LimitExceeded(
                "workflow_max_bytes",
                f"{where}: the run's step outputs would pass the workflow budget",
            )
        self.room -= size


@dataclass(slots=True)
class _Level:
    """One workflow being run: the top-level one or a nested one."""

    workflow: CompiledWorkflow
    shared: _Shared
    prefix: str  # "" at the top, "outer/" inside a nested workflow step
    input: Message
    deadline: float | None  # loop time
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, StepOutput] = field(default_factory=dict)

    def scope(self, error: AgentError | None = None) -> dict[str, Any]:
        scope: dict[str, Any] = {
            "input": {"text": self.input.text, "data": self.input.data},
            "steps": self.records,
            "state": self.shared.state,
        }
        if error is not None:
            scope["error"] = {"code": error.code.value, "message": error.message}
        return scope

    def remaining(self, step_timeout: float | None) -> float | None:
        left = None if self.deadline is None else self.deadline - _now()
        if step_timeout is not None:
            left = step_timeout if left is None else min(left, step_timeout)
        return left


# Outcomes of a step a resumed run keeps instead of running it again.
_KEPT = frozenset({Outcome.SUCCEEDED, Outcome.FELL_BACK, Outcome.SKIPPED, Outcome.COMPENSATED})


def _retry_wait(policy: ErrorPolicy, attempt: int) -> float:
    """Seconds before retry ``attempt`` (1 for the first): the resilience kernel's backoff."""
    if not policy.retry_delay:
        return 0.0
    maximum = max(policy.retry_max_delay, policy.retry_delay)
    return Backoff(policy.retry_delay, maximum, policy.retry_backoff).delay(attempt)


def _now() -> float:
    return asyncio.get_running_loop().time()


def _record(
    outcome: Outcome, output: StepOutput | None, error: AgentError | None
) -> dict[str, Any]:
    """How later steps see a finished step (``steps.ID...`` in expressions)."""
    return {
        "outcome": outcome.value,
        "agent": output.agent if output else "",
        "output": {"text": output.result.text, "data": output.result.data} if output else None,
        "error": {"code": error.code.value, "message": error.message} if error else None,
    }


def _evaluate_error(where: str, exc: ExpressionError) -> AgentError:
    return InvalidInput(where, str(exc))


def build_message(template: InputTemplate, scope: Mapping[str, Any], where: str) -> Message:
    """The message a step sends, from its input template."""
    parts: list[Part] = []
    try:
        if template.single is not None:
            value = template.single.render(scope)
            if value is None or value == "":
                raise InvalidInput(where, f"{template.single.source!r} resolved to nothing")
            parts.append(TextPart(value) if isinstance(value, str) else DataPart(value))
        if template.text is not None:
            parts.append(TextPart(str(template.text.render(scope))))
        if template.data is not None:
            parts.append(DataPart(template.data.render(scope)))
    except ExpressionError as exc:
        raise _evaluate_error(where, exc) from None
    return Message(parts=tuple(parts))


def _size(output: StepOutput) -> int:
    result = output.result
    data = 0 if result.data is None else len(to_text(result.data))
    return len(result.text or "") + data


def _compose(compose: Compose, scope: Mapping[str, Any], where: str, *, room: int) -> StepOutput:
    # Rendered within what the run may still hold: the bytes are refused before they exist.
    limit = min(room, MAX_VALUE_LENGTH)
    try:
        text = compose.text.render(scope, limit) if compose.text is not None else None
        data = compose.data.render(scope, limit) if compose.data is not None else None
    except RenderTooLarge as exc:
        if exc.limit < MAX_VALUE_LENGTH:
            raise LimitExceeded(
                "workflow_max_bytes", f"{where}: would pass the run's budget of step outputs"
            ) from None
        raise _evaluate_error(where, exc) from None
    except ExpressionError as exc:
        raise _evaluate_error(where, exc) from None
    return StepOutput(Result.of(text=None if text is None else to_text(text), data=data))


class Engine:
    """Runs compiled workflows, calling agents through ``caller``."""

    def __init__(self, caller: AgentCaller, *, max_bytes: int = 32 * 1024 * 1024) -> None:
        """``max_bytes``: characters all step outputs of one run may take together."""
        self._caller = caller
        self._max_bytes = max_bytes

    async def run(
        self,
        workflow: CompiledWorkflow,
        message: Message,
        *,
        state: Mapping[str, JSONValue],
        emit: Callable[[Event], None],
        time_remaining: float | None,
        label: str | None = None,
        run_id: str | None = None,
        answers: Mapping[str, Message] | None = None,
        done: Mapping[str, StepFinished] | None = None,
    ) -> RunFinished:
        """Run ``workflow`` to the end; StepFailed (after its events) when a step fails,
        InputRequired when an ``ask`` step has no answer in ``answers``."""
        run_id = run_id or uuid.uuid4().hex
        label = label or workflow.name
        limits = [t for t in (time_remaining, workflow.timeout) if t is not None]
        deadline = _now() + min(limits) if limits else None
        finished: list[StepFinished] = []

        def record(event: Event) -> None:
            if isinstance(event, StepFinished):
                finished.append(event)
                WORKFLOW_STEPS.labels(workflow=label, outcome=event.outcome.value).inc()
            emit(event)

        shared = _Shared(
            record, self._caller, label, state, self._max_bytes,
            answers=answers or {}, done=done or {},
        )  # fmt: skip
        level = _Level(workflow, shared, "", message, deadline)
        started = time.perf_counter()
        state_label = "failed"
        with _tracer.start_as_current_span(
            f"workflow {workflow.name}",
            kind=trace.SpanKind.INTERNAL,
            attributes={"workflow": workflow.name, "run_id": run_id},
        ) as span:
            try:
                record(RunStarted(run_id, workflow.name, tuple(workflow.step_ids)))
                output = await self._run_level(level)
                state_label = "completed"
                return RunFinished(
                    run_id,
                    workflow.name,
                    output,
                    shared.usage,
                    tuple(finished),
                    (time.perf_counter() - started) * 1000,
                )
            except asyncio.CancelledError:
                state_label = "cancelled"
                raise
            finally:
                span.set_attribute("outcome", state_label)
                WORKFLOW_RUNS.labels(workflow=label, state=state_label).inc()

    async def _run_level(self, level: _Level) -> StepOutput | None:
        last: StepOutput | None = None
        for step in level.workflow.steps:
            await self._run_step(level, step)
            last = level.outputs.get(step.id, last)
        if level.workflow.output is not None:
            return level.outputs.get(level.workflow.output)
        return last

    # -- one step --------------------------------------------------------

    def _finish(
        self,
        level: _Level,
        step: CompiledStep,
        outcome: Outcome,
        *,
        output: StepOutput | None = None,
        error: AgentError | None = None,
        agent: str = "",
        started: float | None = None,
        attempts: int = 0,
    ) -> None:
        level.records[step.id] = _record(outcome, output, error)
        if output is not None:
            level.outputs[step.id] = output
        level.shared.emit(
            StepFinished(
                level.prefix + step.id,
                outcome,
                agent=(output.agent if output else "") or agent,
                code=error.code if error else None,
                message=error.message if error else "",
                latency_ms=0.0 if started is None else (time.perf_counter() - started) * 1000,
                attempts=attempts,
                output=output,
            )
        )

    def _skip_tree(self, level: _Level, step: CompiledStep, reason: str) -> None:
        for inner in step.walk():
            level.records[inner.id] = _record(Outcome.SKIPPED, None, None)
            level.shared.emit(
                StepFinished(level.prefix + inner.id, Outcome.SKIPPED, message=reason)
            )

    def _kept(self, level: _Level, step: CompiledStep) -> bool:
        """Replay ``step`` (and its group's steps) as a run before finished it, if it did."""
        prior = level.shared.done.get(level.prefix + step.id)
        if prior is None or prior.outcome not in _KEPT:
            return False
        for inner in step.walk():
            kept = level.shared.done.get(level.prefix + inner.id)
            if kept is None or kept.outcome not in _KEPT:
                continue
            error = AgentError(kept.message, code=kept.code) if kept.code is not None else None
            level.records[inner.id] = _record(kept.outcome, kept.output, error)
            if kept.output is not None:
                level.outputs[inner.id] = kept.output
                level.shared.take(kept.output, f"steps.{inner.id}")
                if inner.kind in ("agent", "fan_out", "map"):
                    level.shared.usage = level.shared.usage + kept.output.result.usage
            level.shared.emit(kept)
        return True

    async def _run_step(self, level: _Level, step: CompiledStep) -> None:
        name = level.prefix + step.id
        if self._kept(level, step):
            return
        if step.when is not None:
            try:
                go = bool(step.when.evaluate(level.scope()))
            except ExpressionError as exc:
                error = _evaluate_error(f"steps.{step.id}.when", exc)
                self._finish(level, step, Outcome.FAILED, error=error)
                raise StepFailed(name, error) from None
            if not go:
                self._skip_tree(level, step, f"condition is false: {step.when.source}")
                return
        with _tracer.start_as_current_span(
            f"workflow step {step.id}",
            kind=trace.SpanKind.INTERNAL,
            attributes={"workflow": level.shared.label, "step": name, "agent": step.agent},
        ) as span:
            outcome = await self._attempts(level, step, span)
            span.set_attribute("outcome", outcome.value)

    async def _attempts(self, level: _Level, step: CompiledStep, span: trace.Span) -> Outcome:
        name = level.prefix + step.id
        policy = step.policy
        started = time.perf_counter()
        attempts = 0
        error: AgentError | None = None
        # A map retries each item itself; its step runs once.
        retries = 0 if step.kind == "map" else policy.retry
        try:
            for attempt in range(1, retries + 2):
                attempts = attempt
                span.set_attribute("attempt", attempt)
                level.shared.emit(StepStarted(name, step.agent, step.skill, attempt))
                try:
                    output = await self._attempt(level, step)
                except InputRequired:
                    raise  # not a failure: the run waits for the answer
                except AgentError as exc:
                    error = exc
                    if attempt <= retries and exc.code.value in policy.retry_on:
                        level.shared.emit(
                            StepError(name, exc.code, f"attempt {attempt}: {exc.message}")
                        )
                        await asyncio.sleep(_retry_wait(policy, attempt))
                        continue
                    break
                self._finish(
                    level,
                    step,
                    Outcome.SUCCEEDED,
                    output=output,
                    started=started,
                    attempts=attempts,
                )
                return Outcome.SUCCEEDED
            assert error is not None
            if step.fallback is not None:
                agent, skill = step.fallback
                level.shared.emit(StepError(name, error.code, error.message))
                attempts += 1
                span.set_attribute("attempt", attempts)
                level.shared.emit(StepStarted(name, agent, skill, attempts))
                assert step.call is not None
                fallback = AgentCall(agent, skill, step.call.input, step.call.options)
                try:
                    output = await self._with_timeout(
                        self._call(level, name, fallback, level.remaining(step.timeout)),
                        step.timeout,
                        name,
                    )
                except AgentError as exc:
                    error = exc
                else:
                    self._finish(
                        level,
                        step,
                        Outcome.FELL_BACK,
                        output=output,
                        started=started,
                        attempts=attempts,
                    )
                    return Outcome.FELL_BACK
        except asyncio.CancelledError:
            self._finish(
                level, step, Outcome.CANCELLED, agent=step.agent, started=started, attempts=attempts
            )
            raise
        return await self._give_up(level, step, error, started, attempts)

    async def _give_up(
        self, level: _Level, step: CompiledStep, error: AgentError, started: float, attempts: int
    ) -> Outcome:
        name = level.prefix + step.id
        policy = step.policy
        if step.compensation is not None:
            level.shared.emit(StepError(name, error.code, error.message))
            compensated = await self._compensate(level, step, error)
            if compensated is not None:
                self._finish(
                    level,
                    step,
                    Outcome.COMPENSATED,
                    output=compensated,
                    error=error,
                    agent=step.agent,
                    started=started,
                    attempts=attempts,
                )
                if policy.then == "fail":
                    raise StepFailed(name, error)
                return Outcome.COMPENSATED
        if policy.then == "skip":
            level.shared.emit(StepError(name, error.code, error.message))
            self._finish(
                level,
                step,
                Outcome.SKIPPED,
                error=error,
                agent=step.agent,
                started=started,
                attempts=attempts,
            )
            return Outcome.SKIPPED
        self._finish(
            level,
            step,
            Outcome.FAILED,
            error=error,
            agent=step.agent,
            started=started,
            attempts=attempts,
        )
        raise StepFailed(name, error)

    async def _compensate(
        self, level: _Level, step: CompiledStep, error: AgentError
    ) -> StepOutput | None:
        """Run ``step``'s compensation; its output, or None when it failed too."""
        compensation = step.compensation
        assert compensation is not None
        name = f"{level.prefix}{step.id}.compensate"
        agent = compensation.call.agent if compensation.call else ""
        skill = compensation.call.skill if compensation.call else ""
        level.shared.emit(StepStarted(name, agent, skill, 1))
        started = time.perf_counter()
        try:
            if compensation.compose is not None:
                output = _compose(
                    compensation.compose,
                    level.scope(error),
                    f"steps.{step.id}.on_error.compensate",
                    room=level.shared.room,
                )
            else:
                assert compensation.call is not None
                output = await self._with_timeout(
                    self._call(
                        level,
                        name,
                        compensation.call,
                        level.remaining(compensation.timeout),
                        scope=level.scope(error),
                    ),
                    compensation.timeout,
                    name,
                )
        except AgentError as exc:
            level.shared.emit(
                StepFinished(
                    name,
                    Outcome.FAILED,
                    agent=agent,
                    code=exc.code,
                    message=exc.message,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    attempts=1,
                )
            )
            return None
        level.shared.emit(
            StepFinished(
                name,
                Outcome.SUCCEEDED,
                agent=output.agent,
                latency_ms=(time.perf_counter() - started) * 1000,
                attempts=1,
                output=output,
            )
        )
        return output

    async def _with_timeout(self, work: Any, timeout: float | None, name: str) -> StepOutput:
        if timeout is None:
            result: StepOutput = await work
            return result
        try:
            async with asyncio.timeout(timeout):
                result = await work
                return result
        except TimeoutError:
            raise DeadlineExceeded(f"step {name!r} did not finish within {timeout:g}s") from None

    async def _attempt(self, level: _Level, step: CompiledStep) -> StepOutput:
        name = level.prefix + step.id
        remaining = level.remaining(step.timeout)
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded(f"no time left for step {name!r}")
        if step.kind == "agent":
            assert step.call is not None
            work: Any = self._call(level, name, step.call, remaining)
        elif step.kind == "compose":
            assert step.compose is not None
            output = _compose(
                step.compose, level.scope(), f"steps.{step.id}.compose", room=level.shared.room
            )
            level.shared.take(output, f"steps.{step.id}")
            return output
        elif step.kind == "parallel":
            work = self._parallel(level, step)
        elif step.kind == "fan_out":
            work = self._fan_out(level, step, remaining)
        elif step.kind == "map":
            work = self._map(level, step, remaining)
        elif step.kind == "ask":
            output = self._ask(level, step, name)
            level.shared.take(output, f"steps.{step.id}")
            return output
        else:
            work = self._nested(level, step, remaining)
        output = await self._with_timeout(work, step.timeout, name)
        level.shared.take(output, f"steps.{step.id}")
        return output

    def _ask(self, level: _Level, step: CompiledStep, name: str) -> StepOutput:
        """The answer to the step's question, or InputRequired asking it."""
        answer = level.shared.answers.get(name)
        if answer is not None:
            return StepOutput(Result.of(text=answer.text or None, data=answer.data))
        assert step.ask is not None
        where = f"steps.{step.id}.ask"
        try:
            question = to_text(step.ask.render(level.scope())).strip()
        except ExpressionError as exc:
            raise _evaluate_error(where, exc) from None
        if not question:
            raise InvalidInput(where, "the question resolved to nothing")
        # A question that quotes long outputs is cut to what an InputRequired carries.
        clipped = question.encode()[:MAX_QUESTION_BYTES].decode(errors="ignore")
        raise InputRequired(clipped, step=name)

    async def _call(
        self,
        level: _Level,
        name: str,
        call: AgentCall,
        remaining: float | None,
        *,
        scope: Mapping[str, Any] | None = None,
    ) -> StepOutput:
        scope = scope if scope is not None else level.scope()
        where = f"steps.{name.rsplit('/', 1)[-1]}"
        message = (
            build_message(call.input, scope, f"{where}.input")
            if call.input is not None
            else level.input
        )
        try:
            options = call.options.render(scope)
        except ExpressionError as exc:
            raise _evaluate_error(f"{where}.options", exc) from None
        output: StepOutput | None = None
        async for item in level.shared.caller.call(
            call.agent, call.skill, message, options, time_remaining=remaining
        ):
            if isinstance(item, StepOutput):
                output = item
            else:
                level.shared.emit(StepPartial(name, item))
        if output is None:
            raise AgentError(f"agent {call.agent or call.skill!r} ended without a result")
        level.shared.usage = level.shared.usage + output.result.usage
        return output

    async def _fan_out(
        self, level: _Level, step: CompiledStep, remaining: float | None
    ) -> StepOutput:
        assert step.call is not None
        assert step.fan_out is not None
        scope = level.scope()
        where = f"steps.{step.id}"
        message = (
            build_message(step.call.input, scope, f"{where}.input")
            if step.call.input is not None
            else level.input
        )
        try:
            options = step.call.options.render(scope)
        except ExpressionError as exc:
            raise _evaluate_error(f"{where}.options", exc) from None
        output = await level.shared.caller.fan_out(
            step.fan_out, message, options, time_remaining=remaining
        )
        level.shared.usage = level.shared.usage + output.result.usage
        return output

    async def _map(self, level: _Level, step: CompiledStep, remaining: float | None) -> StepOutput:
        """The step's call once per item, ``max_parallel`` at a time, results in input order;
        under ``on_error: skip`` a failed item is null in its slot."""
        assert step.call is not None
        assert step.over is not None
        name = level.prefix + step.id
        where = f"steps.{step.id}.map"
        try:
            items = step.over.evaluate(level.scope())
        except ExpressionError as exc:
            raise _evaluate_error(f"{where}.over", exc) from None
        if not isinstance(items, list):
            raise InvalidInput(f"{where}.over", f"must yield a list, not {type(items).__name__}")
        if len(items) > MAX_MAP_ITEMS:
            raise InvalidInput(f"{where}.over", f"{len(items)} items; at most {MAX_MAP_ITEMS}")
        policy = step.policy
        call = step.call
        gate = asyncio.Semaphore(step.max_parallel)
        results: list[StepOutput | None] = [None] * len(items)

        async def one(index: int, item: Any) -> None:
            scope = {**level.scope(), "item": item, "index": index}
            for attempt in range(1, policy.retry + 2):
                try:
                    async with gate:
                        results[index] = await self._call(
                            level, f"{name}[{index}]", call, remaining, scope=scope
                        )
                    return
                except AgentError as exc:
                    retry = attempt <= policy.retry and exc.code.value in policy.retry_on
                    if retry:
                        await asyncio.sleep(_retry_wait(policy, attempt))
                        continue
                    if policy.then != "skip":
                        raise StepFailed(f"{name}[{index}]", exc) from None
                    level.shared.emit(StepError(name, exc.code, f"item {index}: {exc.message}"))
                    return

        try:
            async with asyncio.TaskGroup() as group:
                for index, item in enumerate(items):
                    group.create_task(one(index, item), name=f"{name}[{index}]")
        except BaseExceptionGroup as grouped:
            failures = [e for e in grouped.exceptions if isinstance(e, StepFailed)]
            if failures:
                raise failures[0].cause from None
            raise
        texts = [r.result.text for r in results if r is not None and r.result.text]
        data = [
            None if r is None else {"text": r.result.text, "data": r.result.data} for r in results
        ]
        return StepOutput(Result.of(text="\n\n".join(texts) or None, data=data))

    async def _parallel(self, level: _Level, step: CompiledStep) -> StepOutput:
        try:
            async with asyncio.TaskGroup() as group:
                for child in step.children:
                    group.create_task(self._run_step(level, child), name=f"step {child.id}")
        except BaseExceptionGroup as grouped:
            failures = [e for e in grouped.exceptions if isinstance(e, AgentError)]
            if failures:
                raise failures[0] from None
            raise
        texts = [level.outputs[c.id].result.text for c in step.children if c.id in level.outputs]
        data = {c.id: level.records.get(c.id, {}).get("output") for c in step.children}
        return StepOutput(Result.of(text="\n\n".join(t for t in texts if t) or None, data=data))

    async def _nested(
        self, level: _Level, step: CompiledStep, remaining: float | None
    ) -> StepOutput:
        assert step.workflow is not None
        message = (
            build_message(step.input, level.scope(), f"steps.{step.id}.input")
            if step.input is not None
            else level.input
        )
        deadline = None if remaining is None else _now() + remaining
        inner = _Level(step.workflow, level.shared, f"{level.prefix}{step.id}/", message, deadline)
        if inner.workflow.timeout is not None:
            limit = _now() + inner.workflow.timeout
            inner.deadline = limit if deadline is None else min(deadline, limit)
        output = await self._run_level(inner)
        return output or StepOutput(Result())
