"""``agentmesh.yaml``: the project file that describes a local mesh for ``agentmesh up``.

One file says which reference agents run, which agents of the project's own run
(a module or a script, on a fixed port or any free one, with replicas and
environment), how the gateway is configured (routes, cache, resilience, auth)
and where declared workflows live::

    reference_agents: all            # all (default), none, or a list of names
    workflow_dir: workflows          # every *.yaml in it is a declared workflow
    agents:                          # the project's own agents
      word-counter:
        script: agents/wordcount.py  # or module: word_counter (python -m word_counter)
        port: 0                      # 0 (default): any free port
        replicas: 2
        env: {WORD_COUNTER_TOP: "5"}
        gateway: {timeout: 5}        # how the gateway treats it (any gateway agents.NAME field)
    gateway:
      port: 50051
      config: gateway.yaml           # a gateway config file, merged under the keys below
      routes: [...]                  # gateway config keys inline: routes, default_route,
                                     # router, defaults, rate_limit, agents, workflows
      auth: {required: true, keys_file: keys.yaml}
      settings: {job_workers: 4}     # any other gateway setting (AGENTMESH_<NAME>)
    metrics_port: 9464               # first metrics port (unset: no metrics endpoints)

Paths are relative to the file's directory. :func:`load_project` validates it
and raises :class:`ProjectError` with a message naming the bad field.
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentmesh.agents import REFERENCE_AGENTS

PROJECT_FILE = "agentmesh.yaml"
AGENT_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Gateway settings the runner sets itself; the project says them elsewhere.
RUNNER_SETTINGS = frozenset({"host", "port", "config", "workflow_dir", "metrics_port"})
#: Keys of the gateway config (agentmesh.gateway.config.GatewayConfig) that may be inline.
GATEWAY_CONFIG_KEYS = (
    "agents",
    "routes",
    "default_route",
    "router",
    "defaults",
    "rate_limit",
    "workflows",
)


class ProjectError(ValueError):
    """The project file is invalid; the message names the file and the field."""


Scalar = str | int | float | bool


class UserAgent(BaseModel):
    """One of the project's own agents."""

    model_config = ConfigDict(extra="forbid")

    module: str | None = Field(None, description="run as python -m MODULE from the project dir")
    script: Path | None = Field(None, description="run as python SCRIPT (relative to the file)")
    port: int = Field(0, ge=0, le=65535, description="0: any free port; replicas count up")
    replicas: int = Field(1, ge=1, le=16, description="processes serving this agent")
    env: dict[str, Scalar] = Field(default_factory=dict, description="extra environment")
    args: list[str] = Field(default_factory=list, description="extra command-line arguments")
    watch: list[Path] = Field(
        default_factory=list,
        description="what --reload watches (default: the module's package or the script's dir)",
    )
    gateway: dict[str, Any] = Field(
        default_factory=dict,
        description="the gateway's view of the agent: skills, timeout, cache, breaker, retry...",
    )

    @field_validator("module")
    @classmethod
    def _module_name(cls, module: str | None) -> str | None:
        if module is not None and not MODULE_NAME.match(module):
            raise ValueError(f"{module!r} is not a Python module name, e.g. word_counter")
        return module

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, Scalar]) -> dict[str, Scalar]:
        for name in env:
            if not ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return env

    @field_validator("gateway")
    @classmethod
    def _not_addresses(cls, fields: dict[str, Any]) -> dict[str, Any]:
        for key in ("address", "addresses"):
            if key in fields:
                raise ValueError(f"{key}: agentmesh up sets the addresses itself; use port")
        return fields

    @model_validator(mode="after")
    def _one_entry_point(self) -> UserAgent:
        if (self.module is None) == (self.script is None):
            raise ValueError("give module (python -m MODULE) or script (a .py file), not both")
        return self


class AuthSection(BaseModel):
    """The gateway's authentication (settings AGENTMESH_AUTH_*)."""

    model_config = ConfigDict(extra="forbid")

    required: bool | None = Field(None, description="refuse calls without valid credentials")
    keys_file: Path | None = Field(None, description="file of hashed API keys")
    jwt_hs256_secret_file: Path | None = None
    jwt_rs256_public_key_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None


class GatewaySection(BaseModel):
    """How ``agentmesh up`` runs the gateway."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="interface of every service")
    port: int = Field(50051, ge=1, le=65535, description="the gateway's port")
    config: Path | None = Field(None, description="a gateway config file")
    auth: AuthSection = Field(default_factory=AuthSection)
    settings: dict[str, Scalar | list[str]] = Field(
        default_factory=dict, description="other gateway settings by name"
    )
    # Gateway config keys, validated by the gateway's own model when merged.
    agents: dict[str, Any] | None = None
    routes: list[Any] | None = None
    default_route: Any = None
    router: Any = None
    defaults: dict[str, Any] | None = None
    rate_limit: dict[str, Any] | None = None
    workflows: dict[str, Any] | None = None

    @field_validator("settings")
    @classmethod
    def _known_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        from agentmesh.gateway.config import GatewaySettings

        known = set(GatewaySettings.model_fields) - RUNNER_SETTINGS
        for name in settings:
            if name in RUNNER_SETTINGS:
                raise ValueError(f"{name}: set it as gateway.{name} or on the command line")
            if name not in known:
                raise ValueError(
                    f"{name}: not a gateway setting (see python -m agentmesh.gateway --help)"
                )
        return settings

    def inline_config(self) -> dict[str, Any]:
        """The gateway config keys given inline."""
        return {
            key: getattr(self, key) for key in GATEWAY_CONFIG_KEYS if getattr(self, key) is not None
        }


class Project(BaseModel):
    """The whole ``agentmesh.yaml``."""

    model_config = ConfigDict(extra="forbid")

    reference_agents: Literal["all", "none"] | list[str] = Field(
        "all", description="reference agents to run: all, none or a list of names"
    )
    agent_port_base: int = Field(
        50061, ge=1, le=65535, description="first reference agent's port; the next take +1"
    )
    agents: dict[str, UserAgent] = Field(default_factory=dict)
    gateway: GatewaySection = Field(default_factory=GatewaySection)
    workflow_dir: Path | None = Field(None, description="directory of declared workflows")
    log_dir: Path = Field(Path(".agentmesh/logs"), description="one directory per run inside")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="first metrics port; each service takes the next"
    )
    #: The file's directory; relative paths are resolved against it. Not read from the file.
    root: Path = Field(Path(), exclude=True)

    @field_validator("reference_agents")
    @classmethod
    def _known_reference_agents(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            unknown = [name for name in value if name not in REFERENCE_AGENTS]
            if unknown:
                raise ValueError(
                    f"unknown reference agent {unknown[0]!r}; choose from "
                    f"{', '.join(REFERENCE_AGENTS)}"
                )
        return value

    @field_validator("agents")
    @classmethod
    def _agent_names(cls, agents: dict[str, UserAgent]) -> dict[str, UserAgent]:
        for name in agents:
            if not AGENT_NAME.match(name):
                raise ValueError(
                    f"agent name {name!r} must be lower-case letters, digits and '-', "
                    "starting with a letter"
                )
            if name in REFERENCE_AGENTS or name == "gateway":
                raise ValueError(f"agent name {name!r} is taken by agentmesh itself")
        return agents

    def reference_names(self) -> list[str]:
        if self.reference_agents == "all":
            return list(REFERENCE_AGENTS)
        if self.reference_agents == "none":
            return []
        return list(self.reference_agents)

    def path(self, value: Path) -> Path:
        """``value`` resolved against the project's directory."""
        return value if value.is_absolute() else self.root / value

    def gateway_env(self) -> dict[str, str]:
        """The gateway settings the project sets, as ``AGENTMESH_*`` variables."""
        env: dict[str, str] = {}
        for name, value in self.gateway.auth.model_dump(exclude_none=True).items():
            if isinstance(value, Path):
                value = self.path(value)
            env[f"AGENTMESH_AUTH_{name.upper()}"] = _env_value(value)
        for name, value in self.gateway.settings.items():
            env[f"AGENTMESH_{name.upper()}"] = _env_value(value)
        return env


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def describe_errors(exc: ValidationError) -> str:
    """Pydantic's errors as ``field.path: message``, unknown fields listing the known ones."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field" + _known_fields(error["loc"])
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def _known_fields(loc: tuple[int | str, ...]) -> str:
    """``(expected one of: ...)`` for the model an unknown field was found in."""
    model: type[BaseModel] | None = Project
    parts = list(loc[:-1])
    while parts and model is not None:
        info = model.model_fields.get(str(parts.pop(0)))
        if info is None:
            return ""
        model = _model_in(info.annotation)
        if model is not None and typing.get_origin(info.annotation) is dict and parts:
            parts.pop(0)  # the mapping's key, e.g. an agent's name
    if model is None:
        return ""
    names = [n for n, f in model.model_fields.items() if not f.exclude]
    return f" (expected one of: {', '.join(names)})"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: ``M``, ``dict[str, M]`` or ``M | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def load_project(path: Path) -> Project:
    """Read and validate ``path``; :class:`ProjectError` names what is wrong."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProjectError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ProjectError(f"{path} is not valid YAML: {exc}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ProjectError(f"{path}: the top level must be a mapping (reference_agents, agents...)")
    try:
        project = Project.model_validate(loaded)
    except ValidationError as exc:
        raise ProjectError(f"{path}: {describe_errors(exc)}") from None
    return project.model_copy(update={"root": path.parent})


def find_project(explicit: Path | None, cwd: Path | None = None) -> Path | None:
    """The project file to read: ``explicit``, or ``agentmesh.yaml`` in ``cwd`` when present."""
    if explicit is not None:
        return explicit
    candidate = cwd / PROJECT_FILE if cwd is not None else Path(PROJECT_FILE)
    return candidate if candidate.is_file() else None
