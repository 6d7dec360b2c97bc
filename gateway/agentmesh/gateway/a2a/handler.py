"""The mesh as one A2A agent: A2A requests onto the gateway's jobs, routing and workflows.

Every message becomes a gateway job (an invocation routed like Invoke, or a
workflow run), so the A2A task id is the job id and GetTask, ListTasks,
CancelTask and SubscribeToTask read the job store. The job runs through the
same router, upstream calls (breakers, retries, deadlines) and workflow
engine as the native API; its deadline is the A2A caller's.

Task failures (an agent's error, an open breaker) end the task FAILED with
the gRPC code and message in the status message, as A2A expects; a request
that cannot start (bad metadata, unknown agent or workflow) is refused with
the gRPC status the native API would give.

A task whose work asks a question waits in TASK_STATE_INPUT_REQUIRED with the
question as its status message; a blocking SendMessage returns then, and a
stream ends there. A message whose ``task_id`` names that task answers it
(ResumeJob); naming a task in any other state is refused (FAILED_PRECONDITION;
UnsupportedOperationError on the HTTP bindings).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, NoReturn

import grpc
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import (
    A2AError,
    InternalError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

from agentmesh.gateway.a2a.convert import (
    GRPC_BINDING,
    agent_card,
    agent_message,
    agent_skills,
    aimed_at,
    artifact_to_a2a,
    http_interfaces,
    interface,
    mesh_card,
    message_to_mesh,
    parts_to_a2a,
    security_schemes,
    skill_schemas,
    status_of,
    task_from_job,
    work_for,
    workflow_card,
    workflow_skill,
)
from agentmesh.gateway.a2a.push import PushNotifier, check_webhook
from agentmesh.gateway.auth import caller
from agentmesh.gateway.jobs import JobManager
from agentmesh.gateway.jobstore import TERMINAL_STATES
from agentmesh.gateway.registry import Registry
from agentmesh.gateway.workflows.catalog import WorkflowCatalog
from agentmesh.runtime.errors import (
    AgentError,
    DeadlineExceeded,
    ErrorCode,
    InvalidInput,
    NotFound,
)
from agentmesh.runtime.status import abort
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

Event = a2a.Task | a2a.Message | a2a.TaskStatusUpdateEvent | a2a.TaskArtifactUpdateEvent

CARD_NAME = "agentmesh"
CARD_VERSION = "1"
MAX_REMEMBERED_CONTEXTS = 10_000
MAX_PAGE_SIZE = 1000  # the job store's listing limit
AGENT_STATE = "agentmesh_agent"  # ServerCallContext.state: the agent whose endpoint was called


GrpcContext = grpc.aio.ServicerContext[Any, Any] | None  # None: an HTTP binding's call


def _grpc_context(context: ServerCallContext) -> GrpcContext:
    grpc_context: GrpcContext = context.state.get("grpc_context")
    return grpc_context


class MeshRequestHandler(RequestHandler):
    """a2a-sdk's request handler interface, served by the gateway's parts."""

    def __init__(
        self,
        *,
        registry: Registry,
        jobs: JobManager,
        workflows: WorkflowCatalog,
        url: Callable[[], str],
        http_url: Callable[[], str | None] = lambda: None,
        secured: bool = False,
        push: PushNotifier | None = None,
    ) -> None:
        """``url``: the gRPC binding's address; ``http_url``: the HTTP port's base URL
        (``http://host:port/``, None without one); ``secured``: credentials are checked
        (the cards declare the schemes); ``push``: webhooks of tasks (None: push
        notifications not offered)."""
        self._registry = registry
        self._jobs = jobs
        self._catalog = workflows
        self._url = url
        self._http_url = http_url
        self._secured = secured
        self._push = push
        # Jobs do not record an A2A context id: remember the ones clients sent
        # (a task read on another replica shows its own id as its context).
        self._contexts: OrderedDict[str, str] = OrderedDict()

    # -- messages -------------------------------------------------------------

    async def on_message_send(
        self, params: a2a.SendMessageRequest, context: ServerCallContext
    ) -> a2a.Task | a2a.Message:
        grpc_context = _grpc_context(context)
        try:
            params = self.aimed(params, context.state.get(AGENT_STATE))
            job, context_id = await self._submit(params, grpc_context)
            if not params.configuration.return_immediately:
                # From this message's own state event on: until the job ends or waits again.
                async for _ in self._jobs.watch(job.job_id, job.event_count - 1, until_input=True):
                    pass
                job = await self._jobs.get(job.job_id)
            return task_from_job(job, context_id)
        except AgentError as exc:
            await _refuse(exc, grpc_context, "A2A.SendMessage")

    async def on_message_send_stream(
        self, params: a2a.SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        grpc_context = _grpc_context(context)
        try:
            params = self.aimed(params, context.state.get(AGENT_STATE))
            job, context_id = await self._submit(params, grpc_context)
        except AgentError as exc:
            await _refuse(exc, grpc_context, "A2A.SendStreamingMessage")
        yield task_from_job(job, context_id)
        async for event in self._events(job.job_id, job.event_count, context_id):
            yield event

    async def on_subscribe_to_task(
        self, params: a2a.SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        job = await self._job(params.id, _grpc_context(context))
        if job.state in TERMINAL_STATES:
            raise UnsupportedOperationError(
                f"task {job.job_id!r} has ended ({a2a.TaskState.Name(job.state)}); use GetTask"
            )
        context_id = self._context_of(job.job_id)
        yield task_from_job(job, context_id)
        if job.state == pb.TASK_STATE_INPUT_REQUIRED:
            return  # it waits for a message: nothing more until one comes
        async for event in self._events(job.job_id, job.event_count, context_id):
            yield event

    async def _submit(
        self, params: a2a.SendMessageRequest, grpc_context: GrpcContext
    ) -> tuple[gateway_pb2.Job, str]:
        if not params.message.parts:
            raise InvalidParamsError("message.parts: required (at least one part)")
        if params.message.task_id:
            return await self._continue(params.message)
        names = [entry.name for entry in self._registry.entries]
        work = work_for(params, names)
        # Scopes, rate limit and max_jobs were checked by the gateway's guard (on this job).
        principal = caller()
        remaining = grpc_context.time_remaining() if grpc_context is not None else None
        if remaining is not None:
            if remaining <= 0:
                raise DeadlineExceeded("the call's deadline has passed")
            work.timeout_seconds = remaining
        if params.message.message_id:
            # A client that resends a message (same id) gets the task it first made.
            work.idempotency_key = f"a2a:{params.message.message_id}"
        webhook = None
        if params.configuration.HasField("task_push_notification_config"):
            if self._push is None:
                raise PushNotificationNotSupportedError
            webhook = params.configuration.task_push_notification_config
            await check_webhook(webhook.url, allow_private=self._push.allow_private)
        job = await self._jobs.submit(work, owner=principal.owner, max_jobs=principal.max_jobs)
        context_id = params.message.context_id or job.job_id
        if webhook is not None and self._push is not None:
            webhook.task_id = job.job_id
            await self._push.set(webhook, context_id)
        if params.message.context_id:
            self._contexts[job.job_id] = context_id
            while len(self._contexts) > MAX_REMEMBERED_CONTEXTS:
                self._contexts.popitem(last=False)
        return job, context_id

    async def _continue(self, message: a2a.Message) -> tuple[gateway_pb2.Job, str]:
        """A follow-up message: the answer to the question of the task it names."""
        task_id = message.task_id
        answer = message_to_mesh(message)
        try:
            job = await self._jobs.resume(task_id, answer, owner=caller().owner)
        except NotFound:
            raise TaskNotFoundError(
                f"task {task_id[:80]!r} does not exist (or has expired)"
            ) from None
        except InvalidInput as exc:
            if exc.field == "job_id":
                raise InvalidParamsError(
                    f"message.task_id: {task_id[:80]!r} is not a task id"
                ) from None
            raise
        context_id = message.context_id or self._context_of(job.job_id)
        return job, context_id

    def aimed(self, params: a2a.SendMessageRequest, name: str | None) -> a2a.SendMessageRequest:
        """``params`` as sent to agent (or workflow) ``name``'s own endpoint; None: the mesh's."""
        if name is None:
            return params
        return aimed_at(params, name, workflow=self._is_workflow(name))

    def _is_workflow(self, name: str) -> bool:
        agents = {entry.name for entry in self._registry.entries}
        return name not in agents and name in set(self._catalog.names())

    def _context_of(self, job_id: str) -> str:
        return self._contexts.get(job_id, job_id)

    async def _events(self, job_id: str, offset: int, context_id: str) -> AsyncIterator[Event]:
        """The job's events from ``offset`` as A2A status and artifact updates, until it ends
        or waits for input (an interrupted state ends an A2A stream too)."""
        async for job_event in self._jobs.watch(job_id, offset, until_input=True):
            for event in _a2a_events(job_event, job_id, context_id):
                yield event

    # -- tasks ------------------------------------------------------------------

    async def on_get_task(
        self, params: a2a.GetTaskRequest, context: ServerCallContext
    ) -> a2a.Task | None:
        job = await self._job(params.id, _grpc_context(context))
        return task_from_job(job, self._context_of(job.job_id))

    async def on_list_tasks(
        self, params: a2a.ListTasksRequest, context: ServerCallContext
    ) -> a2a.ListTasksResponse:
        if params.page_token:
            raise InvalidParamsError("page_token: paging is not supported; ask a larger page_size")
        if params.page_size > MAX_PAGE_SIZE:
            raise InvalidParamsError(f"page_size: at most {MAX_PAGE_SIZE}")
        grpc_context = _grpc_context(context)
        try:
            jobs = await self._jobs.list(params.page_size, params.status, viewer=caller().viewer)
        except AgentError as exc:
            await _refuse(exc, grpc_context, "A2A.ListTasks")
        tasks = [
            task_from_job(
                job, self._context_of(job.job_id), include_artifacts=params.include_artifacts
            )
            for job in jobs
        ]
        if params.context_id:
            tasks = [t for t in tasks if t.context_id == params.context_id]
        return a2a.ListTasksResponse(tasks=tasks, page_size=len(tasks), total_size=len(tasks))

    async def on_cancel_task(
        self, params: a2a.CancelTaskRequest, context: ServerCallContext
    ) -> a2a.Task | None:
        grpc_context = _grpc_context(context)
        job = await self._job(params.id, grpc_context)
        if job.state in TERMINAL_STATES:
            raise TaskNotCancelableError(
                f"task {job.job_id!r} has already ended ({a2a.TaskState.Name(job.state)})"
            )
        try:
            job = await self._jobs.cancel(job.job_id, viewer=caller().viewer)
        except AgentError as exc:
            await _refuse(exc, grpc_context, "A2A.CancelTask")
        return task_from_job(job, self._context_of(job.job_id))

    async def _job(self, task_id: str, grpc_context: GrpcContext) -> gateway_pb2.Job:
        if not task_id:
            raise InvalidParamsError("id: required")
        try:
            return await self._jobs.get(task_id, viewer=caller().viewer)
        except NotFound:
            raise TaskNotFoundError(f"task {task_id!r} does not exist (or has expired)") from None
        except InvalidInput:
            raise InvalidParamsError(
                f"id: {task_id[:80]!r} is not a task id (letters and digits, at most 64)"
            ) from None
        except AgentError as exc:
            await _refuse(exc, grpc_context, "A2A.GetTask")

    # -- the card -----------------------------------------------------------------

    async def on_get_extended_agent_card(
        self, params: a2a.GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> a2a.AgentCard:
        name = context.state.get(AGENT_STATE)
        try:
            return self.card(name, extended=True)
        except NotFound as exc:
            raise InvalidParamsError(exc.message) from None

    def card(self, name: str | None = None, *, extended: bool) -> a2a.AgentCard:
        """The mesh's card (``name`` None) or one agent's or declared workflow's own.

        The public card (not ``extended``) of a gateway that checks credentials lists
        no skills: those are for authenticated callers (the extended card).
        Raises :class:`NotFound` for a name that is neither an agent nor a workflow.
        """
        http = self._http_url()
        catalog = self._catalog
        if name is None:
            skills = [s for entry in self._registry.entries for s in agent_skills(entry)]
            skills += [workflow_skill(n, catalog.get(n).description) for n in catalog.names()]
            interfaces = [interface(self._url(), GRPC_BINDING)]
            if http is not None:
                interfaces += http_interfaces(http)
            card = mesh_card(
                name=CARD_NAME,
                url=interfaces,
                version=CARD_VERSION,
                skills=skills,
                extensions=[skill_schemas(self._registry.entries)],
            )
        else:
            own = http_interfaces(f"{http}agents/{name}/") if http is not None else []
            entry = next((e for e in self._registry.entries if e.name == name), None)
            if entry is not None:
                card = agent_card(entry, own, CARD_VERSION)
                card.capabilities.extensions.append(skill_schemas([entry]))
            elif name in set(catalog.names()):
                card = workflow_card(name, catalog.get(name).description, own, CARD_VERSION)
            else:
                raise NotFound(f"{name[:80]!r} is neither an agent nor a declared workflow")
        card.capabilities.push_notifications = self._push is not None
        if self._secured:
            security_schemes(card)
            if not extended:
                del card.skills[:]
        return card

    # -- push notifications ----------------------------------------------------------

    def _pushing(self) -> PushNotifier:
        if self._push is None:
            raise PushNotificationNotSupportedError
        return self._push

    async def on_create_task_push_notification_config(
        self, params: a2a.TaskPushNotificationConfig, context: ServerCallContext
    ) -> a2a.TaskPushNotificationConfig:
        push = self._pushing()
        job = await self._job(params.task_id, _grpc_context(context))
        if job.state in TERMINAL_STATES:
            raise UnsupportedOperationError(
                f"task {job.job_id!r} has ended ({a2a.TaskState.Name(job.state)}); "
                "there is nothing left to notify"
            )
        return await push.set(params, self._context_of(job.job_id))

    async def on_get_task_push_notification_config(
        self, params: a2a.GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> a2a.TaskPushNotificationConfig:
        push = self._pushing()
        job = await self._job(params.task_id, _grpc_context(context))
        return push.get(job.job_id, params.id)

    async def on_list_task_push_notification_configs(
        self, params: a2a.ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> a2a.ListTaskPushNotificationConfigsResponse:
        push = self._pushing()
        job = await self._job(params.task_id, _grpc_context(context))
        return a2a.ListTaskPushNotificationConfigsResponse(configs=push.list(job.job_id))

    async def on_delete_task_push_notification_config(
        self, params: a2a.DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        push = self._pushing()
        job = await self._job(params.task_id, _grpc_context(context))
        push.delete(job.job_id, params.id)


async def _refuse(exc: AgentError, grpc_context: GrpcContext, where: str) -> NoReturn:
    """An agentmesh error as the status the native API gives (bad input as A2A InvalidParams).

    Over an HTTP binding (no gRPC context) as the nearest A2A error, its message
    led by the status name.
    """
    if isinstance(exc, InvalidInput):
        raise InvalidParamsError(exc.message) from None
    if grpc_context is None:
        raise a2a_error(exc) from None
    await abort(grpc_context, exc, where=where)


def a2a_error(exc: AgentError) -> A2AError:
    """The A2A error an agentmesh error is on the HTTP bindings (they carry no gRPC status)."""
    message = f"{exc.code.value}: {exc.message}"
    if exc.code in (ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND):
        return InvalidParamsError(message)
    if exc.code in (ErrorCode.FAILED_PRECONDITION, ErrorCode.UNIMPLEMENTED):
        return UnsupportedOperationError(message)
    return InternalError(message)


def _a2a_events(event: gateway_pb2.JobEvent, task_id: str, context_id: str) -> list[Event]:
    """One job event as A2A events: state changes, output chunks, progress notes."""
    kind = event.WhichOneof("event")

    def status(state: a2a.TaskState, text: str = "", **metadata: Any) -> a2a.TaskStatusUpdateEvent:
        update = a2a.TaskStatusUpdateEvent(
            task_id=task_id, context_id=context_id, status=a2a.TaskStatus(state=state)
        )
        if text:
            message = agent_message(f"{task_id}-{event.offset}", text, **metadata)
            message.task_id, message.context_id = task_id, context_id
            update.status.message.CopyFrom(message)
        return update

    def artifact(
        artifact: a2a.Artifact, *, append: bool, last: bool
    ) -> a2a.TaskArtifactUpdateEvent:
        return a2a.TaskArtifactUpdateEvent(
            task_id=task_id,
            context_id=context_id,
            artifact=artifact,
            append=append,
            last_chunk=last,
        )

    if kind == "state":
        job = event.state
        if job.state == pb.TASK_STATE_SUBMITTED and event.offset == 0:
            return []  # the stream's first Task already said so
        return [
            a2a.TaskStatusUpdateEvent(
                task_id=task_id, context_id=context_id, status=status_of(job, context_id)
            )
        ]
    working = a2a.TASK_STATE_WORKING
    if kind == "invoke":
        invoke = event.invoke
        which = invoke.WhichOneof("event")
        if which == "partial":
            chunk = a2a.Artifact(
                artifact_id=invoke.partial.artifact_id or "output",
                parts=parts_to_a2a(invoke.partial.parts),
            )
            return [artifact(chunk, append=invoke.partial.append, last=False)]
        if which == "final":
            return [
                artifact(artifact_to_a2a(a), append=False, last=True)
                for a in invoke.final.artifacts
            ]
        if which == "error":
            error = invoke.error
            return [status(working, error.message, event="error", source=error.source)]
        return []  # started: the WORKING state said so
    if kind == "workflow":
        flow = event.workflow
        step_kind = flow.WhichOneof("event")
        if step_kind == "step_started":
            step = flow.step_started
            return [
                status(working, f"step {step.step!r} started on agent {step.agent!r}",
                       event="step_started", step=step.step, agent=step.agent)
            ]  # fmt: skip
        if step_kind == "step_partial":
            partial = flow.step_partial
            chunk = a2a.Artifact(
                artifact_id=f"{partial.step}/{partial.partial.artifact_id or 'output'}",
                parts=parts_to_a2a(partial.partial.parts),
            )
            return [artifact(chunk, append=partial.partial.append, last=False)]
        if step_kind == "step_finished":
            done = flow.step_finished
            outcome = gateway_pb2.StepOutcome.Name(done.outcome).removeprefix("STEP_OUTCOME_")
            return [
                status(working, f"step {done.step!r} {outcome.lower()}",
                       event="step_finished", step=done.step, outcome=outcome)
            ]  # fmt: skip
        if step_kind == "final":
            return [
                artifact(artifact_to_a2a(a), append=False, last=True)
                for a in flow.final.result.artifacts
            ]
        if step_kind == "error":
            return [status(working, flow.error.message, event="error", source=flow.error.source)]
    return []


__all__ = ["AGENT_STATE", "MeshRequestHandler", "a2a_error"]
