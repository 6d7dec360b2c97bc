"""Checking a workflow before it runs, and compiling it for the engine.

:func:`compile_workflow` parses every expression once and rejects, naming the
step and field: duplicate ids, bad conditions or templates, dangling
references (to a step that does not exist), references to a step that has not
finished when the referring one starts (a cycle when the two depend on each
other), unknown nested workflows, nested-workflow cycles, and definitions over
the limits on steps, nesting depth and parallel width. :func:`check_agents`
checks agent and skill names against what the gateway knows, separately,
because that changes while the gateway runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentmesh.gateway.targets import fan_out_from_spec
from agentmesh.gateway.workflows.expr import (
    Expression,
    ExpressionError,
    Path,
    Template,
    Value,
    format_path,
    parse_expression,
    parse_template,
    parse_value,
)
from agentmesh.gateway.workflows.spec import (
    CompensationSpec,
    ErrorPolicy,
    MessageSpec,
    StepKind,
    StepSpec,
    WorkflowSpec,
)
from agentmesh.runtime.errors import InvalidInput
from agentmesh.runtime.schema import check_options
from agentmesh.v1 import gateway_pb2

STEP_FIELDS = ("output", "outcome", "agent", "error")
OUTPUT_FIELDS = ("text", "data")
INPUT_FIELDS = ("text", "data")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one workflow, nested workflows included."""

    max_steps: int = 64
    max_depth: int = 4
    max_parallel: int = 16


class AgentDirectory(Protocol):
    """What validation needs to know about agents."""

    def agent_names(self) -> Collection[str]: ...

    def skills_of(self, agent: str) -> frozenset[str] | None:
        """The agent's skills, or None while its card is unknown."""

    def skill_offered(self, skill: str) -> bool | None:
        """Whether some agent offers ``skill``; None when that cannot be known yet."""

    def options_schema(self, agent: str, skill: str) -> Mapping[str, Any] | None:
        """The options schema on the agent's card for ``skill``; None when not known."""


class WorkflowCycle(Exception):
    """Nested workflows refer to each other in a loop; ``chain`` names them in order."""

    def __init__(self, chain: list[str]) -> None:
        super().__init__(" -> ".join(chain))
        self.chain = chain


class UnknownWorkflow(Exception):
    """A nested step names a workflow that is not declared; the message lists those that are."""


Resolver = Callable[[str], "CompiledWorkflow"]
"""Returns a declared workflow by name; raises UnknownWorkflow or WorkflowCycle."""


@dataclass(frozen=True, slots=True)
class InputTemplate:
    """An agent's (or nested workflow's) input: one template, or text and data."""

    text: Template | None = None
    data: Value | None = None
    single: Template | None = None  # ``input: "${...}"``: text, or data when not a string

    @property
    def references(self) -> tuple[Path, ...]:
        parts = (self.text, self.data, self.single)
        return tuple(r for p in parts if p is not None for r in p.references)


@dataclass(frozen=True, slots=True)
class Compose:
    text: Template | None
    data: Value | None

    @property
    def references(self) -> tuple[Path, ...]:
        parts = (self.text, self.data)
        return tuple(r for p in parts if p is not None for r in p.references)


@dataclass(frozen=True, slots=True)
class AgentCall:
    agent: str
    skill: str
    input: InputTemplate | None  # None: the workflow's own input message
    options: Value

    @property
    def references(self) -> tuple[Path, ...]:
        own = self.input.references if self.input is not None else ()
        return own + self.options.references


@dataclass(frozen=True, slots=True)
class Compensation:
    call: AgentCall | None
    compose: Compose | None
    timeout: float | None


@dataclass(frozen=True, slots=True)
class CompiledStep:
    id: str
    kind: StepKind
    when: Expression | None
    timeout: float | None
    policy: ErrorPolicy
    call: AgentCall | None = None
    compose: Compose | None = None
    input: InputTemplate | None = None  # a nested workflow's input
    children: tuple[CompiledStep, ...] = ()
    workflow: CompiledWorkflow | None = None
    fallback: tuple[str, str] | None = None  # (agent, skill)
    compensation: Compensation | None = None
    fan_out: gateway_pb2.FanOutRequest | None = None  # with ``call`` for its input and options
    over: Expression | None = None  # a map's list; ``call`` is made once per item
    max_parallel: int = 1
    ask: Template | None = None  # an ask step's question

    def walk(self) -> Iterator[CompiledStep]:
        """This step and the steps of its parallel groups (not of nested workflows)."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def agent(self) -> str:
        return self.call.agent if self.call is not None else ""

    @property
    def skill(self) -> str:
        return self.call.skill if self.call is not None else ""


@dataclass(frozen=True, slots=True)
class CompiledWorkflow:
    name: str
    description: str
    timeout: float | None
    steps: tuple[CompiledStep, ...]
    output: str | None
    size: int  # steps, counting parallel children, nested workflows and compensations
    depth: int  # 1, plus the deepest nested workflow's depth
    nested: tuple[CompiledWorkflow, ...] = field(default=(), repr=False)

    @property
    def step_ids(self) -> list[str]:
        return [s.id for top in self.steps for s in top.walk()]

    def walk(self) -> Iterator[CompiledStep]:
        for top in self.steps:
            yield from top.walk()

    @property
    def asks(self) -> str | None:
        """The first ``ask`` step (its id; ``outer/inner`` inside a nested workflow), or None:
        such a workflow can only run as a job (someone must be able to answer)."""
        for step in self.walk():
            if step.kind == "ask":
                return step.id
            if step.workflow is not None and (inner := step.workflow.asks) is not None:
                return f"{step.id}/{inner}"
        return None


# -- compiling -----------------------------------------------------------------


def _where(step: StepSpec, name: str) -> str:
    return f"steps.{step.id}.{name}"


def _expression(source: str, where: str) -> Expression:
    try:
        return parse_expression(source)
    except ExpressionError as exc:
        raise InvalidInput(where, str(exc)) from None


def _template(source: str, where: str) -> Template:
    try:
        return parse_template(source)
    except ExpressionError as exc:
        raise InvalidInput(where, str(exc)) from None


def _value(raw: object, where: str) -> Value:
    try:
        return parse_value(raw)
    except ExpressionError as exc:
        raise InvalidInput(where, str(exc)) from None


def _input(spec: str | MessageSpec | None, where: str) -> InputTemplate | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        return InputTemplate(single=_template(spec, where))
    return InputTemplate(
        text=_template(spec.text, f"{where}.text") if spec.text is not None else None,
        data=_value(spec.data, f"{where}.data") if spec.data is not None else None,
    )


def _call(
    agent: str | None,
    skill: str | None,
    input_spec: str | MessageSpec | None,
    options: Mapping[str, object],
    where: str,
) -> AgentCall:
    return AgentCall(
        agent or "",
        skill or "",
        _input(input_spec, f"{where}.input"),
        _value(dict(options), f"{where}.options"),
    )


def _compose(text: str | None, data: object, where: str) -> Compose:
    return Compose(
        _template(text, f"{where}.text") if text is not None else None,
        _value(data, f"{where}.data") if data is not None else None,
    )


MAP_NAMES = ("item", "index")


def _unwrapped(source: str) -> str:
    """``${expr}`` or ``expr``: the expression inside."""
    text = source.strip()
    return text[2:-1] if text.startswith("${") and text.endswith("}") else text


def _without_item(references: tuple[Path, ...]) -> tuple[Path, ...]:
    """A map's own names (``item``, ``index``) are not references to check."""
    return tuple(r for r in references if r[0] not in MAP_NAMES)


def _compensation(spec: CompensationSpec, where: str) -> Compensation:
    if spec.compose is not None:
        return Compensation(None, _compose(spec.compose.text, spec.compose.data, where), None)
    call = _call(spec.agent, spec.skill, spec.input, spec.options, where)
    return Compensation(call, None, spec.timeout)


class _Compiler:
    def __init__(self, spec: WorkflowSpec, resolve: Resolver, limits: Limits) -> None:
        self.spec = spec
        self.resolve = resolve
        self.limits = limits
        self.ids: list[str] = []
        # Per step: ids finished before it starts, and the groups it sits in.
        self.done_before: dict[str, frozenset[str]] = {}
        self.parents: dict[str, str] = {}
        # Per step: (field, references) of its own fields, for the reference checks.
        self.refs: dict[str, list[tuple[str, Path]]] = {}
        self.nested: list[CompiledWorkflow] = []

    def compile(self) -> CompiledWorkflow:
        self._order(self.spec.steps, frozenset(), None)
        steps = tuple(self._step(s) for s in self.spec.steps)
        self._check_references()
        if self.spec.output is not None and self.spec.output not in self.ids:
            raise InvalidInput("output", f"no step {self.spec.output!r} in this workflow")
        size = sum(_size(s) for s in steps)
        if size > self.limits.max_steps:
            raise InvalidInput(
                "steps",
                f"{size} steps (counting parallel, nested and compensation steps) is over "
                f"the limit of {self.limits.max_steps}",
            )
        depth = 1 + max((w.depth for w in self.nested), default=0)
        return CompiledWorkflow(
            self.spec.name,
            self.spec.description,
            self.spec.timeout,
            steps,
            self.spec.output,
            size,
            depth,
            tuple(self.nested),
        )

    def _order(self, steps: list[StepSpec], done: frozenset[str], parent: str | None) -> None:
        """Record, for each step, which steps have finished before it starts."""
        for step in steps:
            if step.id in self.done_before:
                raise InvalidInput(f"steps.{step.id}.id", f"duplicate step id {step.id!r}")
            self.ids.append(step.id)
            self.done_before[step.id] = done
            if parent is not None:
                self.parents[step.id] = parent
            if step.parallel is not None:
                # Children start together: none sees a sibling's output.
                for child in step.parallel:
                    self._order([child], done, step.id)
            if parent is None:  # only the top level is sequential
                done = done | set(self._subtree_ids(step))

    def _subtree_ids(self, step: StepSpec) -> Iterator[str]:
        yield step.id
        for child in step.parallel or ():
            yield from self._subtree_ids(child)

    def _note(self, step: StepSpec, name: str, references: tuple[Path, ...]) -> None:
        self.refs.setdefault(step.id, []).extend((name, r) for r in references)

    def _step(self, spec: StepSpec) -> CompiledStep:
        self.refs.setdefault(spec.id, [])
        when = None
        if spec.when is not None:
            when = _expression(spec.when, _where(spec, "when"))
            self._note(spec, "when", when.references)
        policy = spec.on_error
        fallback = None
        if policy.fallback is not None:
            if spec.kind != "agent":
                raise InvalidInput(
                    _where(spec, "on_error.fallback"), "only an agent call can fall back"
                )
            fallback = (policy.fallback.agent or "", policy.fallback.skill or "")
        if policy.retry and spec.kind == "parallel":
            raise InvalidInput(
                _where(spec, "on_error.retry"),
                "a parallel group is not retried as a whole; set retry on its steps",
            )
        compensation = None
        if policy.compensate is not None:
            where = _where(spec, "on_error.compensate")
            compensation = _compensation(policy.compensate, where)
            refs = (
                compensation.call.references
                if compensation.call is not None
                else compensation.compose.references
                if compensation.compose is not None
                else ()
            )
            self._note(spec, "on_error.compensate", refs)
        common = {
            "id": spec.id,
            "kind": spec.kind,
            "when": when,
            "timeout": spec.timeout,
            "policy": policy,
            "fallback": fallback,
            "compensation": compensation,
        }
        if spec.kind == "agent":
            call = _call(spec.agent, spec.skill, spec.input, spec.options, f"steps.{spec.id}")
            self._note(spec, "input", call.input.references if call.input else ())
            self._note(spec, "options", call.options.references)
            return CompiledStep(**common, call=call)  # type: ignore[arg-type]
        if spec.kind == "ask":
            assert spec.ask is not None
            question = _template(spec.ask, _where(spec, "ask"))
            self._note(spec, "ask", question.references)
            return CompiledStep(**common, ask=question)  # type: ignore[arg-type]
        if spec.kind == "compose":
            assert spec.compose is not None
            compose = _compose(spec.compose.text, spec.compose.data, _where(spec, "compose"))
            self._note(spec, "compose", compose.references)
            return CompiledStep(**common, compose=compose)  # type: ignore[arg-type]
        if spec.kind == "fan_out":
            assert spec.fan_out is not None
            fan_out = fan_out_from_spec(spec.fan_out, where=_where(spec, "fan_out"))
            call = _call("", "", spec.input, spec.options, f"steps.{spec.id}")
            self._note(spec, "input", call.input.references if call.input else ())
            self._note(spec, "options", call.options.references)
            return CompiledStep(**common, call=call, fan_out=fan_out)  # type: ignore[arg-type]
        if spec.kind == "map":
            assert spec.map is not None
            mapped = spec.map
            over = _expression(_unwrapped(mapped.over), _where(spec, "map.over"))
            self._note(spec, "map.over", over.references)
            call = _call(
                mapped.agent, mapped.skill, mapped.input, mapped.options, f"steps.{spec.id}.map"
            )
            self._note(
                spec, "map.input", _without_item(call.input.references if call.input else ())
            )
            self._note(spec, "map.options", _without_item(call.options.references))
            return CompiledStep(
                **common,  # type: ignore[arg-type]
                call=call,
                over=over,
                max_parallel=mapped.max_parallel,
            )
        if spec.kind == "parallel":
            assert spec.parallel is not None
            if len(spec.parallel) > self.limits.max_parallel:
                raise InvalidInput(
                    _where(spec, "parallel"),
                    f"{len(spec.parallel)} steps at once is over the limit of "
                    f"{self.limits.max_parallel}",
                )
            children = tuple(self._step(c) for c in spec.parallel)
            return CompiledStep(**common, children=children)  # type: ignore[arg-type]
        assert spec.workflow is not None
        where = _where(spec, "workflow")
        try:
            nested = self.resolve(spec.workflow)
        except WorkflowCycle as exc:
            raise InvalidInput(where, f"workflows call each other in a cycle: {exc}") from None
        except UnknownWorkflow as exc:
            raise InvalidInput(where, str(exc)) from None
        if 1 + nested.depth > self.limits.max_depth:
            raise InvalidInput(
                where,
                f"nesting depth {1 + nested.depth} (workflow {spec.workflow!r} nests "
                f"{nested.depth} deep) is over the limit of {self.limits.max_depth}",
            )
        self.nested.append(nested)
        input_template = _input(spec.input, _where(spec, "input"))
        self._note(spec, "input", input_template.references if input_template else ())
        return CompiledStep(**common, input=input_template, workflow=nested)  # type: ignore[arg-type]

    # -- references ------------------------------------------------------

    def _check_references(self) -> None:
        for step_id, refs in self.refs.items():
            for name, path in refs:
                self._check_reference(step_id, name, path)

    def _check_reference(self, step_id: str, name: str, path: Path) -> None:
        where = f"steps.{step_id}.{name}"
        shown = format_path(path)
        root = path[0]
        if root in MAP_NAMES:
            raise InvalidInput(
                where, f"{shown}: {root!r} is only defined in a map's input and options"
            )
        if root == "error" and not name.startswith("on_error.compensate"):
            raise InvalidInput(where, f"{shown}: 'error' is only defined in on_error.compensate")
        if root == "input" and len(path) > 1 and path[1] not in INPUT_FIELDS:
            raise InvalidInput(where, f"{shown}: the input has only text and data")
        if root != "steps":
            return
        if len(path) < 2 or not isinstance(path[1], str):
            raise InvalidInput(where, f"{shown}: refer to a step as steps.ID")
        target = path[1]
        if target not in self.done_before:
            known = ", ".join(self.ids)
            raise InvalidInput(
                where, f"{shown}: dangling reference to unknown step {target!r} (steps: {known})"
            )
        if len(path) > 2 and path[2] not in STEP_FIELDS:
            raise InvalidInput(
                where, f"{shown}: a step has no field {path[2]!r}; use {', '.join(STEP_FIELDS)}"
            )
        if len(path) > 3 and path[2] == "output" and path[3] not in OUTPUT_FIELDS:
            raise InvalidInput(where, f"{shown}: an output has only text and data")
        if target in self.done_before[step_id]:
            return
        cycle = self._path_back(target, step_id)
        if cycle is not None:
            raise InvalidInput(where, f"{shown}: cycle: {' -> '.join([step_id, *cycle])}")
        raise InvalidInput(
            where,
            f"{shown}: step {target!r} has not finished when {step_id!r} starts "
            "(it comes later or runs alongside)",
        )

    def _depends_on(self, step_id: str) -> set[str]:
        """Steps ``step_id`` needs to have finished: its references, and its children."""
        needs = {p[1] for _, p in self.refs.get(step_id, []) if p[0] == "steps" and len(p) > 1}
        needs |= {c for c, parent in self.parents.items() if parent == step_id}
        return {n for n in needs if isinstance(n, str)}

    def _path_back(self, start: str, goal: str) -> list[str] | None:
        """A dependency chain from ``start`` to ``goal`` (or a group holding it), if any."""
        goals = {goal}
        parent = self.parents.get(goal)
        while parent is not None:
            goals.add(parent)
            parent = self.parents.get(parent)
        queue: deque[list[str]] = deque([[start]])
        seen = {start}
        while queue:
            chain = queue.popleft()
            if chain[-1] in goals:
                return chain
            for nxt in sorted(self._depends_on(chain[-1])):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append([*chain, nxt])
        return None


def _size(step: CompiledStep) -> int:
    size = 1 + sum(_size(c) for c in step.children)
    if step.workflow is not None:
        size += step.workflow.size
    if step.compensation is not None:
        size += 1
    return size


def compile_workflow(
    spec: WorkflowSpec, *, resolve: Resolver, limits: Limits | None = None
) -> CompiledWorkflow:
    """Check ``spec`` (everything but agent names) and compile it; InvalidInput otherwise."""
    return _Compiler(spec, resolve, limits or Limits()).compile()


# -- agents --------------------------------------------------------------------


def _check_target(directory: AgentDirectory, agent: str, skill: str, where: str) -> None:
    if agent:
        names = directory.agent_names()
        if agent not in names:
            known = ", ".join(sorted(names)) or "none"
            raise InvalidInput(
                f"{where}.agent", f"unknown agent {agent!r}; registered agents: {known}"
            )
        skills = directory.skills_of(agent)
        if skill and skills is not None and skill not in skills:
            offered = ", ".join(sorted(skills)) or "none"
            raise InvalidInput(
                f"{where}.skill", f"agent {agent!r} has no skill {skill!r}; it offers: {offered}"
            )
    elif skill and directory.skill_offered(skill) is False:
        raise InvalidInput(f"{where}.skill", f"no registered agent offers skill {skill!r}")


def _is_literal(value: Any) -> bool:
    """Whether an option's value is known before the run (it holds no ``${...}``)."""
    return not any(t.expressions for t in parse_value(value).templates)


def _check_options(
    directory: AgentDirectory, agent: str, skill: str, call: AgentCall, where: str
) -> None:
    """A call's options against the card's schema: names always, literal values' types."""
    options = call.options.raw
    if not agent or not isinstance(options, Mapping) or not options:
        return
    check_options(
        directory.options_schema(agent, skill),
        options,
        field=f"{where}.options",
        owner=f"skill {skill or '(default)'!r} of agent {agent!r}",
        literal=_is_literal,
    )


def check_agents(workflow: CompiledWorkflow, directory: AgentDirectory) -> None:
    """Check every agent and skill ``workflow`` (and what it nests) names, and the options
    its calls pass against the agents' cards; InvalidInput."""
    _check_agents(workflow, directory, "", set())


def _check_agents(
    workflow: CompiledWorkflow, directory: AgentDirectory, within: str, seen: set[str]
) -> None:
    for step in workflow.walk():
        where = f"{within}steps.{step.id}"
        if step.fan_out is not None:
            for i, leg in enumerate(step.fan_out.targets):
                skill = leg.skill or step.fan_out.skill
                _check_target(directory, leg.agent, skill, f"{where}.fan_out.targets[{i}]")
                if step.call is not None:
                    _check_options(directory, leg.agent, skill, step.call, where)
        elif step.call is not None:
            _check_target(directory, step.call.agent, step.call.skill, where)
            _check_options(directory, step.call.agent, step.call.skill, step.call, where)
        if step.fallback is not None:
            _check_target(directory, *step.fallback, f"{where}.on_error.fallback")
        if step.compensation is not None and step.compensation.call is not None:
            call = step.compensation.call
            _check_target(directory, call.agent, call.skill, f"{where}.on_error.compensate")
            _check_options(directory, call.agent, call.skill, call, f"{where}.on_error.compensate")
        if step.workflow is not None and step.workflow.name not in seen:
            seen.add(step.workflow.name)
            _check_agents(step.workflow, directory, f"{where}.workflow.", seen)
