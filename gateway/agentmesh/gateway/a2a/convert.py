"""Wire mapping between the A2A v1 types and agentmesh's: messages, tasks, events, the card.

agentmesh's ``Part``, ``Message`` and ``Artifact`` were laid out field for
field like A2A's (same numbers, same types), so a message crosses between the
two by re-parsing its bytes: nothing is lost, and A2A fields agentmesh does not
know (``extensions``, ``reference_task_ids``) travel on as unknown fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, cast

import grpc
from a2a.types import a2a_pb2 as a2a
from google.protobuf.message import Message as ProtoMessage
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.gateway.registry import AgentEntry
from agentmesh.runtime.errors import InvalidInput
from agentmesh.runtime.schema import describe
from agentmesh.runtime.wire import struct_to_dict
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

PROTOCOL_VERSION = "1.0"
GRPC_BINDING = "GRPC"
JSONRPC_BINDING = "JSONRPC"
HTTP_JSON_BINDING = "HTTP+JSON"
WORKFLOW_PREFIX = "workflow:"
SKILL_PREFIX = "skill:"
DEFAULT_MODES = ("text/plain", "application/json")
#: The card extension whose params hold each skill's JSON Schemas, by A2A skill id.
SKILL_SCHEMAS_URI = "https://agentmesh.dev/extensions/skill-schemas/v1"
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}

T = TypeVar("T", bound=ProtoMessage)


def _reparsed(source: ProtoMessage, target: T) -> T:
    target.ParseFromString(source.SerializeToString())
    return target


def message_to_mesh(message: a2a.Message) -> pb.Message:
    return _reparsed(message, pb.Message())


def artifact_to_a2a(artifact: pb.Artifact) -> a2a.Artifact:
    return _reparsed(artifact, a2a.Artifact())


def parts_to_a2a(parts: Iterable[pb.Part]) -> list[a2a.Part]:
    return [_reparsed(part, a2a.Part()) for part in parts]


# -- choosing the work a message asks for -------------------------------------------


def _metadata_text(metadata: Mapping[str, Any], key: str) -> str:
    value = metadata.get(key, "")
    if not isinstance(value, str):
        raise InvalidInput(f"metadata.{key}", "must be a string")
    return value.strip()


def _metadata_object(metadata: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = metadata.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(f"metadata.{key}", "must be an object")
    return value


def work_for(
    request: a2a.SendMessageRequest, agent_names: Iterable[str]
) -> gateway_pb2.SubmitJobRequest:
    """The job a SendMessage asks for, from its metadata (the request's, then the message's).

    ``skill`` takes an id from the mesh's A2A card: ``workflow:NAME``,
    ``AGENT/SKILL``, ``skill:SKILL``, an agent's name, or a bare skill id;
    ``agent`` names an agent; ``options`` (object) are the skill's options and
    ``state`` (object) a workflow's initial state. Without ``skill`` or
    ``agent`` the gateway's declared routes (or router agent, or default
    route) choose, exactly as for an Invoke naming neither.
    """
    metadata: dict[str, Any] = {}
    if request.message.HasField("metadata"):
        metadata.update(struct_to_dict(request.message.metadata))
    if request.HasField("metadata"):
        metadata.update(struct_to_dict(request.metadata))
    skill = _metadata_text(metadata, "skill")
    agent = _metadata_text(metadata, "agent")
    options = _metadata_object(metadata, "options")
    message = message_to_mesh(request.message)
    if skill.startswith(WORKFLOW_PREFIX):
        workflow = gateway_pb2.RunWorkflowRequest(
            workflow=skill.removeprefix(WORKFLOW_PREFIX), input=message
        )
        if not workflow.workflow:
            raise InvalidInput("metadata.skill", "workflow: must be followed by a workflow name")
        state = _metadata_object(metadata, "state")
        if state is not None:
            workflow.state.update(state)
        return gateway_pb2.SubmitJobRequest(workflow=workflow)
    if "/" in skill:
        agent, _, skill = skill.partition("/")
    elif skill.startswith(SKILL_PREFIX):
        skill = skill.removeprefix(SKILL_PREFIX)
    elif skill and not agent and skill in set(agent_names):
        agent, skill = skill, ""
    invoke = pb.InvokeRequest(agent=agent, skill=skill, message=message)
    if options is not None:
        invoke.options.update(options)
    return gateway_pb2.SubmitJobRequest(invoke=invoke)


def aimed_at(
    request: a2a.SendMessageRequest, name: str, *, workflow: bool
) -> a2a.SendMessageRequest:
    """``request`` as sent to one agent's (or declared workflow's) own A2A endpoint.

    Its metadata ``skill`` may name one of that agent's skills (``SKILL`` or
    ``AGENT/SKILL``); without one the agent's default skill answers. A skill of
    another agent, or any skill for a workflow, is refused. The choice is written
    into the request's metadata, where :func:`work_for` reads it.
    """
    metadata: dict[str, Any] = {}
    if request.message.HasField("metadata"):
        metadata.update(struct_to_dict(request.message.metadata))
    if request.HasField("metadata"):
        metadata.update(struct_to_dict(request.metadata))
    skill = _metadata_text(metadata, "skill")
    agent = _metadata_text(metadata, "agent")
    if workflow:
        if skill not in ("", name, f"{WORKFLOW_PREFIX}{name}") or agent:
            raise InvalidInput("metadata.skill", f"workflow {name!r} has no skills to choose")
        request.metadata.update({"skill": f"{WORKFLOW_PREFIX}{name}", "agent": ""})
        return request
    if agent and agent != name:
        raise InvalidInput("metadata.agent", f"this endpoint is agent {name!r}'s, not {agent!r}'s")
    if skill.startswith((WORKFLOW_PREFIX, SKILL_PREFIX)):
        raise InvalidInput(
            "metadata.skill", f"name a skill of agent {name!r} (SKILL or {name}/SKILL)"
        )
    owner, slash, own = skill.partition("/")
    if slash and owner != name:
        raise InvalidInput("metadata.skill", f"{skill[:80]!r} is not a skill of agent {name!r}")
    own = own if slash else ("" if skill == name else skill)
    request.metadata.update({"agent": name, "skill": f"{name}/{own}" if own else ""})
    return request


# -- jobs as tasks ------------------------------------------------------------------


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _struct(values: Mapping[str, Any]) -> Struct:
    struct = Struct()
    struct.update(dict(values))
    return struct


def agent_message(message_id: str, text: str, **metadata: Any) -> a2a.Message:
    """A message from the agent (the mesh) carrying ``text``."""
    message = a2a.Message(message_id=message_id, role=a2a.ROLE_AGENT, parts=[a2a.Part(text=text)])
    if metadata:
        message.metadata.CopyFrom(_struct(metadata))
    return message


def a2a_state(state: int) -> a2a.TaskState:
    """agentmesh.v1.TaskState was numbered like A2A's: the values carry over."""
    return cast("a2a.TaskState", state)


def status_of(job: gateway_pb2.Job, context_id: str) -> a2a.TaskStatus:
    status = a2a.TaskStatus(state=a2a_state(job.state), timestamp=_timestamp(job.updated_at))
    if job.state == pb.TASK_STATE_INPUT_REQUIRED and job.inputs:
        # The question, from the agent (or step) that asked, with its data payload.
        asked = job.inputs[-1]
        about = {k: v for k, v in (("agent", asked.agent), ("step", asked.step)) if v}
        message = agent_message(f"{job.job_id}-{job.event_count}", asked.question, **about)
        if asked.HasField("data"):
            message.parts.add(media_type="application/json").data.CopyFrom(asked.data)
        message.context_id, message.task_id = context_id, job.job_id
        status.message.CopyFrom(message)
    elif job.message:
        code = _CODE_NAMES.get(job.code, str(job.code))
        message = agent_message(f"{job.job_id}-{job.event_count}", job.message, code=code)
        message.context_id, message.task_id = context_id, job.job_id
        status.message.CopyFrom(message)
    return status


def job_artifacts(job: gateway_pb2.Job) -> list[pb.Artifact]:
    kind = job.WhichOneof("result")
    if kind == "invoke":
        return list(job.invoke.artifacts)
    if kind == "workflow":
        return list(job.workflow.result.artifacts)
    if kind == "fan_out":
        return list(job.fan_out.result.artifacts)
    return []


def task_from_job(
    job: gateway_pb2.Job, context_id: str, *, include_artifacts: bool = True
) -> a2a.Task:
    """The A2A task a job is: same id and state, its result's artifacts, its kind in metadata."""
    task = a2a.Task(
        id=job.job_id,
        context_id=context_id,
        status=status_of(job, context_id),
        metadata=_struct({"kind": job.kind, "description": job.description}),
    )
    if include_artifacts:
        task.artifacts.extend(artifact_to_a2a(a) for a in job_artifacts(job))
    return task


# -- the mesh's card ------------------------------------------------------------------


def _modes(values: Iterable[str]) -> list[str]:
    return list(values) or list(DEFAULT_MODES)


def agent_skills(entry: AgentEntry) -> list[a2a.AgentSkill]:
    """The agent itself (id: its name), then each of its skills (id: ``AGENT/SKILL``)."""
    card = entry.card
    description = card.description if card is not None and card.description else entry.name
    skills = [
        a2a.AgentSkill(
            id=entry.name,
            name=entry.name,
            description=f"{description} (agent {entry.name!r}, its default skill)",
            tags=["agent"],
        )
    ]
    offered = {s.id: s for s in card.skills} if card is not None else {}
    for skill_id in sorted(entry.skills):
        skill = offered.get(skill_id, pb.AgentSkill(id=skill_id))
        description = skill.description or f"skill {skill_id!r} of agent {entry.name!r}"
        options = entry.options_schema(skill_id)
        if options is not None:
            description += f" [options: {describe(options)}]"
        skills.append(
            a2a.AgentSkill(
                id=f"{entry.name}/{skill_id}",
                name=skill.name or skill_id,
                description=description,
                tags=["skill", *skill.tags],
                examples=list(skill.examples),
                input_modes=list(skill.input_modes),
                output_modes=list(skill.output_modes),
            )
        )
    return skills


def skill_schemas(entries: Iterable[AgentEntry]) -> a2a.AgentExtension:
    """The card extension carrying the JSON Schemas of every skill that declares them:
    ``params[AGENT/SKILL] = {options, input, output}`` (a schema each, when declared)."""
    params: dict[str, Any] = {}
    for entry in entries:
        for skill in entry.card.skills if entry.card is not None else ():
            schemas = {
                key: struct_to_dict(getattr(skill, f"{key}_schema"))
                for key in ("options", "input", "output")
                if skill.HasField(f"{key}_schema")  # type: ignore[arg-type]
            }
            if schemas:
                params[f"{entry.name}/{skill.id}"] = schemas
    extension = a2a.AgentExtension(
        uri=SKILL_SCHEMAS_URI,
        description="JSON Schemas of the skills' options, input data and output data; "
        "an option a schema does not name is refused",
        required=False,
    )
    extension.params.update(params)
    return extension


def workflow_skill(name: str, description: str) -> a2a.AgentSkill:
    return a2a.AgentSkill(
        id=f"{WORKFLOW_PREFIX}{name}",
        name=name,
        description=description or f"workflow {name!r}",
        tags=["workflow"],
    )


MESH_DESCRIPTION = (
    "agentmesh gateway: every agent, agent skill and workflow of the mesh as a skill. "
    "Choose one with message metadata 'skill' (a skill id below); without it the "
    "gateway's declared routes choose."
)


def interface(url: str, binding: str) -> a2a.AgentInterface:
    return a2a.AgentInterface(url=url, protocol_binding=binding, protocol_version=PROTOCOL_VERSION)


def http_interfaces(base_url: str) -> list[a2a.AgentInterface]:
    """The HTTP bindings of an A2A endpoint at ``base_url`` (``http(s)://host:port/path/``):
    JSON-RPC at the base URL itself, HTTP+JSON under ``rest``."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    return [interface(base, JSONRPC_BINDING), interface(base + "rest", HTTP_JSON_BINDING)]


API_KEY_SCHEME = "apiKey"
BEARER_SCHEME = "bearer"


def security_schemes(card: a2a.AgentCard) -> a2a.AgentCard:
    """``card`` declaring the gateway's credentials: an API key header or a bearer token."""
    card.security_schemes[API_KEY_SCHEME].api_key_security_scheme.CopyFrom(
        a2a.APIKeySecurityScheme(location="header", name="x-api-key")
    )
    card.security_schemes[BEARER_SCHEME].http_auth_security_scheme.CopyFrom(
        a2a.HTTPAuthSecurityScheme(scheme="Bearer", description="an API key or a JWT")
    )
    for scheme in (API_KEY_SCHEME, BEARER_SCHEME):
        card.security_requirements.append(
            a2a.SecurityRequirement(schemes={scheme: a2a.StringList()})
        )
    return card


def mesh_card(
    *,
    name: str,
    url: str | Iterable[a2a.AgentInterface],
    version: str,
    skills: Iterable[a2a.AgentSkill],
    description: str = MESH_DESCRIPTION,
    extensions: Iterable[a2a.AgentExtension] = (),
) -> a2a.AgentCard:
    """A card of the mesh (or of one agent in it); ``url``: its gRPC address, or its
    interfaces."""
    interfaces = [interface(url, GRPC_BINDING)] if isinstance(url, str) else list(url)
    return a2a.AgentCard(
        name=name,
        description=description,
        version=version,
        supported_interfaces=interfaces,
        capabilities=a2a.AgentCapabilities(
            streaming=True,
            push_notifications=False,
            extended_agent_card=True,
            extensions=list(extensions),
        ),
        default_input_modes=_modes(()),
        default_output_modes=_modes(()),
        skills=list(skills),
    )


def agent_card(
    entry: AgentEntry, interfaces: Iterable[a2a.AgentInterface], version: str
) -> a2a.AgentCard:
    """One agent of the mesh as an A2A agent of its own: its skills only."""
    card = entry.card
    description = card.description if card is not None and card.description else entry.name
    return mesh_card(
        name=entry.name,
        url=interfaces,
        version=version,
        skills=agent_skills(entry),
        description=f"{description} (agent {entry.name!r} of an agentmesh gateway; "
        "choose a skill with message metadata 'skill', else its default skill answers)",
    )


def workflow_card(
    name: str, description: str, interfaces: Iterable[a2a.AgentInterface], version: str
) -> a2a.AgentCard:
    """One declared workflow as an A2A agent of its own (each message runs it)."""
    return mesh_card(
        name=name,
        url=interfaces,
        version=version,
        skills=[workflow_skill(name, description)],
        description=f"{description or 'workflow ' + repr(name)} (a declared workflow of an "
        "agentmesh gateway: each message runs it on the message's text)",
    )
