"""The expression language and the checks a definition passes before it runs."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import pytest

from agentmesh.gateway.workflows import Limits, WorkflowCatalog, WorkflowConfigError
from agentmesh.gateway.workflows.expr import ExpressionError, parse_expression, parse_template
from agentmesh.gateway.workflows.spec import parse_workflow
from agentmesh.gateway.workflows.validate import check_agents, compile_workflow
from agentmesh.runtime.errors import InvalidInput

SCOPE: dict[str, Any] = {
    "input": {"text": "hello", "data": None},
    "steps": {"review": {"output": {"text": "3 findings", "data": {"counts": {"high": 2}}}}},
    "state": {"strict": True, "modes": ["a", "b"]},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("steps.review.output.data.counts.high > 0 and state.strict", True),
        ("steps.review.output.data.counts.high > 5 or not state.strict", False),
        ("steps.missing.output.text or 'fallback'", "fallback"),
        ("steps.review.output.data.counts.high * 10 + 1", 21),
        ("state.modes[1] == 'b' and 'a' in state.modes", True),
        ("null > 0", False),  # ordering with null is false, not an error
        ("len(input.text) if input.text else 0", 5),
        ("'ell' in input.text and str(1) == '1'", True),
    ],
)
def test_expressions_evaluate(source: str, expected: object) -> None:
    assert parse_expression(source).evaluate(SCOPE) == expected


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("__import__('os').system('id')", "can be called"),
        ("input.__class__", "'__class__' is not allowed"),
        ("lambda: 1", "lambda is not allowed"),
        ("[x for x in state.modes]", "is not allowed"),
        ("os.getcwd()", "can be called"),
        ("name", "unknown name 'name'"),
        ("1 +", "invalid syntax"),
        ("1" * 2000, "longer than"),
    ],
)
def test_unsafe_or_malformed_expressions_are_refused(source: str, fragment: str) -> None:
    with pytest.raises(ExpressionError, match=fragment):
        parse_expression(source)


def test_templates_keep_values_or_format_text() -> None:
    assert parse_template("${steps.review.output.data}").render(SCOPE) == {"counts": {"high": 2}}
    rendered = parse_template("high=${steps.review.output.data.counts.high} $${x}").render(SCOPE)
    assert rendered == "high=2 ${x}"
    with pytest.raises(ExpressionError, match="cannot compute string \\* number"):
        parse_template("${input.text * 3}").render(SCOPE)


class Agents:
    """A directory of agents for validation: ``skills`` None means cards not fetched yet."""

    def __init__(self, skills: dict[str, frozenset[str] | None]) -> None:
        self._skills = skills

    def agent_names(self) -> Collection[str]:
        return self._skills.keys()

    def skills_of(self, agent: str) -> frozenset[str] | None:
        return self._skills.get(agent)

    def options_schema(self, agent: str, skill: str) -> Mapping[str, Any] | None:
        return None

    def skill_offered(self, skill: str) -> bool | None:
        return any(skill in (s or ()) for s in self._skills.values())


AGENTS = Agents({"probe": frozenset({"echo", "spell"}), "other": None})


def check(definition: dict[str, Any], limits: Limits | None = None) -> None:
    def no_nested(name: str) -> Any:
        from agentmesh.gateway.workflows.validate import UnknownWorkflow

        raise UnknownWorkflow(f"unknown workflow {name!r}; declared workflows: none")

    workflow = compile_workflow(parse_workflow(definition), resolve=no_nested, limits=limits)
    check_agents(workflow, AGENTS)


def steps(*items: dict[str, Any]) -> dict[str, Any]:
    return {"name": "t", "steps": list(items)}


@pytest.mark.parametrize(
    ("definition", "field", "fragment"),
    [
        (steps({"id": "a", "agent": "ghost"}), "steps.a.agent", "unknown agent 'ghost'"),
        (steps({"id": "a", "agent": "probe", "skill": "fly"}), "steps.a.skill", "no skill 'fly'"),
        (steps({"id": "a", "skill": "translate"}), "steps.a.skill", "offers skill 'translate'"),
        (
            steps({"id": "a", "agent": "probe", "on_error": {"fallback": "ghost"}}),
            "steps.a.on_error.fallback.agent",
            "unknown agent",
        ),
        (
            steps({"id": "a", "agent": "probe", "input": "${steps.sumary.output.text}"}),
            "steps.a.input",
            "dangling reference to unknown step 'sumary'",
        ),
        (
            steps(
                {"id": "a", "agent": "probe", "input": "${steps.b.output.text}"},
                {"id": "b", "agent": "probe", "input": "${steps.a.output.text}"},
            ),
            "steps.a.input",
            "cycle: a -> b -> a",
        ),
        (
            steps(
                {"id": "a", "agent": "probe", "input": "${steps.b.output.text}"},
                {"id": "b", "agent": "probe"},
            ),
            "steps.a.input",
            "has not finished when 'a' starts",
        ),
        (
            steps(
                {
                    "id": "g",
                    "parallel": [
                        {"id": "x", "agent": "probe"},
                        {"id": "y", "agent": "probe", "input": "${steps.x.output.text}"},
                    ],
                }
            ),
            "steps.y.input",
            "runs alongside",
        ),
        (
            steps({"id": "a", "agent": "probe", "when": "steps.a.outcome == 'x'"}),
            "steps.a.when",
            "cycle: a -> a",
        ),
        (steps({"id": "a", "agent": "probe", "when": "1 +"}), "steps.a.when", "invalid syntax"),
        (
            steps({"id": "a", "agent": "probe", "when": "steps.a.result"}),
            "steps.a.when",
            "no field 'result'",
        ),
        (
            steps({"id": "a", "agent": "probe"}, {"id": "a", "agent": "probe"}),
            "steps.a.id",
            "duplicate",
        ),
        (
            steps({"id": "a", "workflow": "elsewhere"}),
            "steps.a.workflow",
            "unknown workflow 'elsewhere'",
        ),
        (steps({"id": "a", "agnt": "probe"}), "steps.a.agnt", "Extra inputs"),
        ({"name": "t", "output": "zzz", "steps": [{"id": "a", "agent": "probe"}]}, "output", "zzz"),
    ],
)
def test_invalid_definitions_name_step_and_field(
    definition: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        check(definition)
    assert caught.value.field == field
    assert fragment in caught.value.problem


def test_an_agent_whose_card_is_unknown_is_not_held_to_skills() -> None:
    check(steps({"id": "a", "agent": "other", "skill": "anything"}))


def test_limits_on_steps_and_width() -> None:
    group = steps({"id": "g", "parallel": [{"id": f"s{i}", "agent": "probe"} for i in range(5)]})
    with pytest.raises(InvalidInput, match="5 steps at once is over the limit of 4"):
        check(group, Limits(max_parallel=4))
    with pytest.raises(InvalidInput, match=r"6 steps .* over the limit of 5") as caught:
        check(group, Limits(max_steps=5))
    assert caught.value.field == "steps"


def chain(name: str, calls: str | None) -> dict[str, Any]:
    step = {"id": "next", "workflow": calls} if calls else {"id": "leaf", "agent": "probe"}
    return {"name": name, "steps": [step]}


def test_declared_workflows_nesting_depth_and_cycles() -> None:
    declared = {"a": chain("a", "b"), "b": chain("b", "c"), "c": chain("c", None)}
    catalog = WorkflowCatalog.load(declared, None, ["probe"], Limits(max_depth=3))
    assert catalog.get("a").depth == 3

    with pytest.raises(WorkflowConfigError, match=r"workflows\.a: steps\.next\.workflow: nesting"):
        WorkflowCatalog.load(declared, None, ["probe"], Limits(max_depth=2))

    looped = {"a": chain("a", "b"), "b": chain("b", "a")}
    with pytest.raises(WorkflowConfigError, match="cycle: a -> b -> a"):
        WorkflowCatalog.load(looped, None, ["probe"], Limits())


def test_a_bad_workflow_file_is_named_with_step_and_field(tmp_path: Any) -> None:
    (tmp_path / "good.yaml").write_text("steps: [{id: a, agent: probe}]\n")
    catalog = WorkflowCatalog.load({}, tmp_path, ["probe"], Limits())
    assert catalog.names() == ["good"]  # named by the file stem without a name field

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsteps:\n  - id: s1\n    agent: ghost\n")
    with pytest.raises(WorkflowConfigError) as caught:
        WorkflowCatalog.load({}, tmp_path, ["probe"], Limits())
    assert str(caught.value).startswith(f"workflow file {bad}: steps.s1.agent: unknown agent")


def test_templates_cannot_blow_up_memory() -> None:
    scope = {"state": {"big": "x" * 3_000_000}}
    with pytest.raises(ExpressionError, match="longer than"):
        parse_expression("state.big + state.big + state.big").evaluate(scope)
    with pytest.raises(ExpressionError, match="renders to more than"):
        parse_template("${state.big}${state.big}${state.big}").render(scope)
