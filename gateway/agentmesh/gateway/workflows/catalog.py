"""Declared workflows: from the gateway config and from ``workflow_dir``, checked at startup."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentmesh.gateway.config import ConfigError
from agentmesh.gateway.workflows.spec import WorkflowSpec, parse_workflow
from agentmesh.gateway.workflows.validate import (
    CompiledWorkflow,
    Limits,
    UnknownWorkflow,
    WorkflowCycle,
    check_agents,
    compile_workflow,
)
from agentmesh.runtime.errors import InvalidInput, NotFound, Reason


class WorkflowConfigError(ConfigError):
    """A declared workflow is invalid; the message names the file (or config key), step, field."""


@dataclass(frozen=True, slots=True)
class _Source:
    spec: WorkflowSpec
    where: str  # "workflow file x.yaml" or "gateway config workflows.x"


def read_workflow_file(path: Path) -> WorkflowSpec:
    """Parse one YAML file; named by its ``name:`` or, without one, by the file stem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkflowConfigError(f"cannot read workflow file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise WorkflowConfigError(f"workflow file {path} is not valid YAML: {exc}") from None
    try:
        return parse_workflow(raw, default_name=path.stem)
    except InvalidInput as exc:
        raise WorkflowConfigError(f"workflow file {path}: {exc.message}") from None


class _DeclaredAgents:
    """Agent names from the config; skills are unknown until cards arrive."""

    def __init__(self, names: Collection[str]) -> None:
        self._names = names

    def agent_names(self) -> Collection[str]:
        return self._names

    def skills_of(self, agent: str) -> frozenset[str] | None:
        return None

    def options_schema(self, agent: str, skill: str) -> Mapping[str, Any] | None:
        return None

    def skill_offered(self, skill: str) -> bool | None:
        return None


class WorkflowCatalog:
    """The declared workflows, compiled, by name."""

    def __init__(self, workflows: Mapping[str, CompiledWorkflow], limits: Limits) -> None:
        self._workflows = dict(workflows)
        self.limits = limits

    @classmethod
    def load(
        cls,
        config_workflows: Mapping[str, Any],
        workflow_dir: Path | None,
        agent_names: Collection[str],
        limits: Limits,
    ) -> WorkflowCatalog:
        """Parse, compile and check every declared workflow; WorkflowConfigError otherwise."""
        sources: dict[str, _Source] = {}
        for key, raw in config_workflows.items():
            where = f"gateway config workflows.{key}"
            try:
                spec = parse_workflow(raw, default_name=key)
            except InvalidInput as exc:
                raise WorkflowConfigError(f"{where}: {exc.message}") from None
            sources[spec.name] = _Source(spec, where)
        if workflow_dir is not None:
            if not workflow_dir.is_dir():
                raise WorkflowConfigError(f"workflow_dir {workflow_dir} is not a directory")
            for path in sorted(workflow_dir.glob("*.yaml")):
                spec = read_workflow_file(path)
                if spec.name in sources:
                    raise WorkflowConfigError(
                        f"workflow file {path}: workflow {spec.name!r} is already declared "
                        f"in {sources[spec.name].where}"
                    )
                sources[spec.name] = _Source(spec, f"workflow file {path}")

        compiled: dict[str, CompiledWorkflow] = {}
        in_progress: list[str] = []

        def resolve(name: str) -> CompiledWorkflow:
            if name in compiled:
                return compiled[name]
            if name in in_progress:
                raise WorkflowCycle([*in_progress[in_progress.index(name) :], name])
            if name not in sources:
                raise _unknown(name, sources)
            in_progress.append(name)
            try:
                compiled[name] = compile_workflow(
                    sources[name].spec, resolve=resolve, limits=limits
                )
            except InvalidInput as exc:
                if isinstance(exc, _Attributed):
                    raise
                raise _Attributed(sources[name].where, exc) from None
            finally:
                in_progress.pop()
            return compiled[name]

        directory = _DeclaredAgents(frozenset(agent_names))
        for name, source in sources.items():
            try:
                check_agents(resolve(name), directory)
            except _Attributed as exc:
                raise WorkflowConfigError(f"{exc.where}: {exc.cause.message}") from None
            except InvalidInput as exc:
                raise WorkflowConfigError(f"{source.where}: {exc.message}") from None
        return cls(compiled, limits)

    def names(self) -> list[str]:
        return sorted(self._workflows)

    def get(self, name: str) -> CompiledWorkflow:
        """The workflow called ``name``; NOT_FOUND listing the declared ones otherwise."""
        workflow = self._workflows.get(name)
        if workflow is None:
            known = ", ".join(self.names()) or "none"
            raise NotFound(
                f"no workflow {name!r} is declared; declared workflows: {known}",
                reason=Reason.WORKFLOW_NOT_FOUND,
            )
        return workflow

    def resolve_nested(self, name: str) -> CompiledWorkflow:
        """For inline definitions: a nested step's workflow (INVALID_ARGUMENT when unknown)."""
        workflow = self._workflows.get(name)
        if workflow is None:
            raise _unknown(name, self._workflows)
        return workflow


class _Attributed(InvalidInput):
    """An error inside one declared workflow, carrying where that workflow came from."""

    def __init__(self, where: str, cause: InvalidInput) -> None:
        super().__init__(cause.field, cause.problem)
        self.where = where
        self.cause = cause


def _unknown(name: str, known: Mapping[str, object]) -> UnknownWorkflow:
    names = ", ".join(sorted(known)) or "none"
    return UnknownWorkflow(f"unknown workflow {name!r}; declared workflows: {names}")
