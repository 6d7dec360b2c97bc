"""The workflow definition: what a YAML file (or a RunWorkflow ``definition``) holds.

::

    name: document-report
    description: Summary, sentiment and keywords, merged into one report.
    timeout: 60                      # seconds for the whole run (optional)
    output: report                   # the step whose output is the result (default: the last)
    steps:
      - id: analyse
        parallel:                    # children run concurrently
          - id: summary
            agent: summarizer        # agent and/or skill
            input: ${input.text}     # a template, or {text: ..., data: ...}; default: the input
            options: {sentences: 3}
          - id: mood
            skill: sentiment
      - id: report
        when: steps.mood.outcome == 'succeeded'
        compose:                     # built by the gateway, no agent call
          text: "${steps.summary.output.text} (${steps.mood.output.data.label})"
      - id: confirm
        ask: "Send the report on ${steps.summary.output.text}?"   # waits for ResumeJob
      - id: deeper
        workflow: other-workflow     # a declared workflow, by name
        on_error:
          retry: 2                   # extra attempts
          fallback: keywords         # agent tried once all attempts failed
          compensate: {agent: notifier, input: "failed: ${error.message}"}
          then: skip                 # fail (default) or skip

Parsing checks shapes only; :mod:`.validate` checks references, agents and limits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentmesh.runtime.errors import InvalidInput

STEP_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
WORKFLOW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_TIMEOUT = 24 * 3600.0
MAX_RETRIES = 10


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MessageSpec(_Strict):
    """An agent's input as parts: a text template and/or a data value with templates."""

    text: str | None = None
    data: Any = None

    @model_validator(mode="after")
    def _not_empty(self) -> MessageSpec:
        if self.text is None and self.data is None:
            raise ValueError("set text and/or data")
        return self


class ComposeSpec(_Strict):
    """Output built by the gateway from earlier results: a text template and/or data."""

    text: str | None = None
    data: Any = None

    @model_validator(mode="after")
    def _not_empty(self) -> ComposeSpec:
        if self.text is None and self.data is None:
            raise ValueError("set text and/or data")
        return self


class TargetSpec(_Strict):
    agent: str | None = None
    skill: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"agent": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _named(self) -> TargetSpec:
        if not (self.agent or self.skill):
            raise ValueError("set agent and/or skill")
        return self


class CompensationSpec(_Strict):
    """The step run when a step fails for good: an agent call or a compose."""

    agent: str | None = None
    skill: str | None = None
    input: str | MessageSpec | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    compose: ComposeSpec | None = None
    timeout: float | None = Field(None, gt=0, le=MAX_TIMEOUT)

    @model_validator(mode="after")
    def _one_kind(self) -> CompensationSpec:
        calls = bool(self.agent or self.skill)
        if calls == (self.compose is not None):
            raise ValueError("set agent/skill (an agent call) or compose, exactly one")
        if self.compose is not None and (self.input is not None or self.options):
            raise ValueError("input and options go with an agent call, not compose")
        return self


RETRYABLE_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL")
RETRY_CODES = (*RETRYABLE_CODES, "NOT_FOUND", "FAILED_PRECONDITION", "PERMISSION_DENIED")


class ErrorPolicy(_Strict):
    """What a failed step does: retry, then fall back, then compensate, then fail or skip.

    Retries wait with exponential backoff and full jitter (the upstream's backoff):
    up to ``retry_delay * retry_backoff**(n-1)`` seconds before retry ``n``, at most
    ``retry_max_delay``. Only failures whose code is in ``retry_on`` are retried;
    INVALID_ARGUMENT never is (the same input would fail the same way).
    """

    retry: int = Field(0, ge=0, le=MAX_RETRIES)
    retry_on: tuple[str, ...] = RETRYABLE_CODES
    retry_delay: float = Field(0.1, ge=0, le=60)
    retry_backoff: float = Field(2.0, ge=1, le=10)
    retry_max_delay: float = Field(10.0, ge=0, le=300)

    @field_validator("retry_on")
    @classmethod
    def _known_codes(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        for code in codes:
            if code == "INVALID_ARGUMENT":
                raise ValueError("INVALID_ARGUMENT is never retried: the same input fails again")
            if code not in RETRY_CODES:
                raise ValueError(
                    f"{code!r} is not a code to retry on; use {', '.join(RETRY_CODES)}"
                )
        return codes

    fallback: TargetSpec | None = None
    compensate: CompensationSpec | None = None
    then: Literal["fail", "skip"] = "fail"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # ``on_error: skip`` is short for ``on_error: {then: skip}``.
        return {"then": data} if isinstance(data, str) else data


StepKind = Literal["agent", "parallel", "workflow", "compose", "fan_out", "map", "ask"]

MAX_MAP_ITEMS = 1000


class MapSpec(_Strict):
    """One agent call per item of a list: ``${item}`` and ``${index}`` in its input and
    options; results in input order."""

    over: str = Field(description="an expression that yields a list, e.g. ${input.data.files}")
    max_parallel: int = Field(4, ge=1, le=256)
    agent: str | None = None
    skill: str | None = None
    input: str | MessageSpec | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _calls_something(self) -> MapSpec:
        if not (self.agent or self.skill):
            raise ValueError("set agent and/or skill: the call made for each item")
        return self


class StepSpec(_Strict):
    """One step: an agent call, a parallel group, a nested workflow, a compose, a fan-out
    (the FanOut request's fields, its aggregate as the output), a map, or an ask (a
    question to the job's caller: the run waits in INPUT_REQUIRED, and ResumeJob's
    message becomes the step's output)."""

    id: str
    description: str = ""
    when: str | None = None
    timeout: float | None = Field(None, gt=0, le=MAX_TIMEOUT)
    on_error: ErrorPolicy = Field(default_factory=ErrorPolicy)
    # an agent call
    agent: str | None = None
    skill: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    # an agent call or a nested workflow
    input: str | MessageSpec | None = None
    # the other kinds
    parallel: list[StepSpec] | None = None
    workflow: str | None = None
    compose: ComposeSpec | None = None
    fan_out: dict[str, Any] | None = None
    map: MapSpec | None = None
    ask: str | None = Field(None, min_length=1, max_length=500)

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not STEP_ID.match(value):
            raise ValueError(
                "must start with a letter or '_' and hold only letters, digits and '_' "
                "(at most 64): steps are referenced as steps.ID"
            )
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> StepSpec:
        kinds = [
            name
            for name, present in (
                ("agent/skill", bool(self.agent or self.skill)),
                ("parallel", self.parallel is not None),
                ("workflow", self.workflow is not None),
                ("compose", self.compose is not None),
                ("fan_out", self.fan_out is not None),
                ("map", self.map is not None),
                ("ask", self.ask is not None),
            )
            if present
        ]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(
                f"a step is exactly one of agent/skill, parallel, workflow, compose, fan_out, "
                f"map or ask (found: {found})"
            )
        if self.ask is not None and self.on_error != ErrorPolicy():
            raise ValueError("an ask step has no on_error: it waits for its answer")
        if self.options and self.kind not in ("agent", "fan_out"):
            raise ValueError("options go with an agent call or a fan-out")
        if self.input is not None and self.kind not in ("agent", "workflow", "fan_out"):
            raise ValueError("input goes with an agent call, a fan-out or a nested workflow")
        if self.parallel is not None and not self.parallel:
            raise ValueError("parallel needs at least one step")
        return self

    @property
    def kind(self) -> StepKind:
        if self.parallel is not None:
            return "parallel"
        if self.workflow is not None:
            return "workflow"
        if self.compose is not None:
            return "compose"
        if self.fan_out is not None:
            return "fan_out"
        if self.map is not None:
            return "map"
        if self.ask is not None:
            return "ask"
        return "agent"


class WorkflowSpec(_Strict):
    name: str
    description: str = ""
    timeout: float | None = Field(None, gt=0, le=MAX_TIMEOUT)
    output: str | None = None
    steps: list[StepSpec] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not WORKFLOW_NAME.match(value):
            raise ValueError("must be letters, digits, '_', '.' or '-' (at most 64)")
        return value


def _located(raw: Any, loc: Sequence[int | str]) -> str:
    """A pydantic error location with list indices of steps replaced by their ids.

    ``("steps", 1, "parallel", 0, "agent")`` becomes ``steps.analyse.parallel.summary.agent``
    when those steps have ids, so the message names the step the user wrote.
    """
    names: list[str] = []
    node = raw
    for key in loc:
        if isinstance(key, int):
            item = node[key] if isinstance(node, list) and 0 <= key < len(node) else None
            step_id = item.get("id") if isinstance(item, Mapping) else None
            if isinstance(step_id, str) and step_id:
                names.append(step_id)
            else:
                names.append(f"[{key}]")
            node = item
        else:
            if key.startswith(("function-", "constrained-")) or key in ("str", "MessageSpec"):
                continue  # pydantic's union-member labels say nothing to the user
            names.append(key)
            node = node.get(key) if isinstance(node, Mapping) else None
    return ".".join(names).replace(".[", "[") or "definition"


def parse_workflow(raw: Any, *, default_name: str | None = None) -> WorkflowSpec:
    """Validate the shape of a definition; InvalidInput names the first bad field.

    ``default_name`` is used when the definition has no ``name`` (a file's stem).
    """
    if not isinstance(raw, Mapping):
        raise InvalidInput("definition", "must be a mapping with name and steps")
    data = dict(raw)
    if default_name is not None and not data.get("name"):
        data["name"] = default_name
    try:
        return WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        raise InvalidInput(_located(data, error["loc"]), message) from None
