"""Gateway settings and its registry configuration.

Settings come from ``AGENTMESH_*`` variables and flags like every service's.
The agent registry comes from a YAML file (``--config`` or
``AGENTMESH_CONFIG``) plus per-agent environment overrides::

    agents:
      summarizer:
        addresses: ["127.0.0.1:50061"]        # or: address: 127.0.0.1:50061
      qa:
        address: dns:///qa.agentmesh.svc.cluster.local:50051
        skills: [answer]                      # known before the card is fetched
        timeout: 20                           # cap on one call, in seconds

    AGENTMESH_AGENT_CODE_REVIEWER_ADDRESSES=127.0.0.1:50065,127.0.0.1:50075
    AGENTMESH_AGENT_QA_SKILLS=answer

An agent that speaks A2A v1 instead of ``agentmesh.v1.Agent`` says so with
``a2a`` (see docs/a2a.md)::

      currency:
        address: http://127.0.0.1:10000/     # JSON-RPC endpoint URL
        a2a: {binding: jsonrpc, headers: {x-api-key: "${CURRENCY_KEY}"}}
      translator:
        address: 127.0.0.1:50070             # host:port of its gRPC binding
        a2a: grpc                            # short for {binding: grpc}

    AGENTMESH_AGENT_CURRENCY_A2A=jsonrpc

A variable names the agent in upper case with ``_`` for ``-``; it creates the
agent when the file does not declare it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from agentmesh.gateway.auth import AuthSettings
from agentmesh.gateway.policy import (
    RateLimitPolicy,
    ResilienceDefaults,
    ResilienceOverrides,
    check_policies,
)
from agentmesh.gateway.sessions import SessionPolicy
from agentmesh.gateway.targets import Target, fan_out_from_spec, parse_target
from agentmesh.runtime.errors import AgentError

AGENT_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_ENV_AGENT = re.compile(r"^AGENTMESH_AGENT_([A-Z0-9_]+)_(ADDRESSES|SKILLS|TIMEOUT|A2A)$")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class GatewaySettings(AuthSettings):
    """Settings of the gateway process."""

    config: Path | None = Field(None, description="YAML file declaring the agents")
    max_delegation_depth: int = Field(
        8,
        ge=0,
        le=100,
        description="most delegations (agents calling the mesh from a handler) in one chain; "
        "past it a call is refused with FAILED_PRECONDITION",
    )
    default_timeout: float = Field(
        30.0, gt=0, le=3600, description="deadline for calls whose client set none (seconds)"
    )
    deadline_margin: float = Field(
        0.02,
        ge=0,
        le=5,
        description="seconds kept back from the caller's deadline when calling an agent, "
        "so the gateway can still answer in time",
    )
    card_refresh_interval: float = Field(
        30.0, gt=0, description="seconds between card refreshes from the agents"
    )
    card_timeout: float = Field(2.0, gt=0, description="deadline of one GetCard call (seconds)")
    cache_max_entries: int = Field(
        1024, ge=1, description="responses kept by the in-memory cache (without Redis)"
    )
    cache_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="bytes kept by the in-memory cache (without Redis)"
    )
    job_workers: int = Field(16, ge=1, le=1024, description="jobs this gateway runs at once")
    job_timeout: float = Field(
        3600.0, gt=0, description="longest a job may run when it sets no timeout (seconds)"
    )
    job_ttl: float = Field(
        3600.0, gt=0, description="seconds a finished job (and an idempotency key) is kept"
    )
    job_input_timeout: float = Field(
        3600.0,
        gt=0,
        le=7 * 24 * 3600,
        description="seconds a job waits in INPUT_REQUIRED for ResumeJob before it fails",
    )
    job_lease: float = Field(
        15.0, gt=0, le=3600, description="seconds a runner's claim on a job lasts unrenewed (Redis)"
    )
    job_max_bytes: int = Field(
        16 * 1024 * 1024, ge=64 * 1024, description="bytes one job holds: request, events, result"
    )
    job_store_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024 * 1024,
        description="bytes the in-memory job store holds; the oldest finished jobs go first",
    )
    max_jobs: int = Field(
        1000, ge=1, description="jobs queued or running at once; more are refused"
    )
    max_fanout_legs: int = Field(64, ge=1, le=1024, description="most legs one fan-out may have")
    workflow_dir: Path | None = Field(
        None, description="directory of workflow YAML files (every *.yaml is one workflow)"
    )
    workflow_max_steps: int = Field(
        64, ge=1, le=10_000, description="most steps one workflow may have, nested ones counted"
    )
    workflow_max_depth: int = Field(
        4, ge=1, le=32, description="how deep workflows may nest (1: no nested workflows)"
    )
    workflow_max_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="characters all step outputs of one workflow run may take together",
    )
    workflow_max_parallel: int = Field(
        16, ge=1, le=1024, description="most steps one parallel group may run at once"
    )
    upstream_tls_ca_file: Path | None = Field(
        None, description="PEM CA bundle trusted for agents; set: the gateway calls agents over TLS"
    )
    upstream_tls_cert_file: Path | None = Field(
        None, description="PEM client certificate the gateway presents to agents (mTLS)"
    )
    upstream_tls_key_file: Path | None = Field(
        None, description="PEM private key of upstream_tls_cert_file"
    )
    redis_url: str | None = Field(
        None,
        description="Redis for jobs, the response cache and shared breaker state "
        "(e.g. redis://redis:6379/0); unset: in-memory, per gateway process",
    )
    redis_max_connections: int = Field(
        64, ge=4, le=10_000, description="connections this gateway opens to Redis at most"
    )
    redis_password: SecretStr | None = Field(
        None, description="Redis password (AUTH), e.g. from a Secret; overrides one in redis_url"
    )
    redis_password_file: Path | None = Field(
        None, description="file holding the Redis password (a mounted Secret); beats redis_password"
    )
    redis_tls_ca_file: Path | None = Field(
        None, description="PEM CA bundle trusted for a rediss:// Redis (default: the system's)"
    )
    session_ttl: float = Field(
        24 * 3600.0, gt=0, description="seconds a conversation is kept after its last turn"
    )
    session_max_sessions: int = Field(
        10_000, ge=1, description="sessions the in-memory store keeps (without Redis)"
    )
    audit_log: bool | Path = Field(
        False,
        description="one JSON line per gateway call: true (stdout) or a file path to append to",
    )
    http_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="port of the HTTP port on host (A2A JSON-RPC and HTTP+JSON, agent cards, "
        "MCP at /mcp), with the gRPC port's TLS and credentials; 0: a free one; unset: off",
    )
    mcp: bool = Field(True, description="serve MCP at /mcp on the HTTP port")
    push_notifications: bool = Field(
        True, description="offer A2A push notifications (webhooks of tasks)"
    )
    push_allow_private: bool = Field(
        False,
        description="let push-notification webhooks be loopback, link-local or private "
        "addresses (off: only public ones, so callers cannot reach internal services)",
    )
    dashboard: bool = Field(
        True, description="serve the operator's web dashboard at /dashboard/ on the HTTP port"
    )
    dashboard_traces_file: Path | None = Field(
        None,
        description="span file of the local OTLP receiver (traces.jsonl) the dashboard's "
        "traces page reads; agentmesh up sets it",
    )
    dashboard_interval: float = Field(
        1.0, gt=0, le=60, description="seconds between the dashboard's live agent updates"
    )
    dashboard_window: float = Field(
        300.0,
        ge=10,
        le=86_400,
        description="seconds of recent calls behind the dashboard's error rate and latency "
        "per agent (read from the gateway's metrics every window/30 seconds)",
    )


class TargetConfig(BaseModel):
    """Where a route sends a request: an agent and/or skill, a declared workflow, or a fan-out.

    ``agent`` takes any target form (``NAME``, ``NAME/SKILL``, ``skill:SKILL``,
    ``workflow:NAME``); ``fan_out`` takes the FanOut request's fields (see
    :func:`agentmesh.gateway.targets.fan_out_from_spec`).
    """

    model_config = ConfigDict(extra="forbid")

    agent: str = ""
    skill: str = ""
    workflow: str = ""
    fan_out: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _names_one_thing(self) -> TargetConfig:
        kinds = [bool(self.agent or self.skill), bool(self.workflow), self.fan_out is not None]
        if kinds.count(True) != 1:
            raise ValueError("set agent and/or skill, or workflow, or fan_out (exactly one)")
        try:
            if self.fan_out is not None:
                fan_out_from_spec(self.fan_out, where="fan_out")
            else:
                parse_target(self.agent, self.skill)
        except AgentError as exc:
            raise ValueError(exc.message) from None
        return self

    @property
    def target(self) -> Target:
        if self.workflow:
            return Target(workflow=self.workflow)
        return parse_target(self.agent, self.skill)


class CacheConfig(BaseModel):
    """Opt-in response caching for a route or an agent (Invoke only)."""

    model_config = ConfigDict(extra="forbid")

    ttl: float = Field(gt=0, le=7 * 24 * 3600, description="seconds a response stays cached")
    skills: list[str] = Field(
        default_factory=list, description="only these skills (empty: every skill)"
    )


class SessionConfig(BaseModel):
    """How conversations with an agent are kept short (``sessions`` at the top level: every
    agent's default; ``session`` of an agent: that agent's)."""

    model_config = ConfigDict(extra="forbid")

    max_turns: int = Field(
        40, ge=1, le=1000, description="exchanges kept before older ones are summarized"
    )
    keep_last: int = Field(4, ge=0, le=1000, description="last exchanges kept verbatim")
    max_chars: int = Field(
        100_000, ge=1000, le=10_000_000, description="characters kept before summarizing"
    )
    summarizer: str = Field(
        "summarizer/summarize", description="AGENT/SKILL that summarizes older turns"
    )

    @field_validator("summarizer")
    @classmethod
    def _agent_and_skill(cls, value: str) -> str:
        agent, _, skill = value.partition("/")
        if not AGENT_NAME.match(agent) or not skill:
            raise ValueError(f"summarizer {value!r} must be AGENT/SKILL, e.g. summarizer/summarize")
        return value

    def policy(self) -> SessionPolicy:
        return SessionPolicy(
            max_turns=self.max_turns,
            keep_last=self.keep_last,
            max_chars=self.max_chars,
            summarizer=self.summarizer,
        )


class RouteSessionConfig(BaseModel):
    """A route's overrides of the session settings of the agent it sends to (unset fields
    keep the agent's, or ``sessions``)."""

    model_config = ConfigDict(extra="forbid")

    max_turns: int | None = Field(None, ge=1, le=1000)
    keep_last: int | None = Field(None, ge=0, le=1000)
    max_chars: int | None = Field(None, ge=1000, le=10_000_000)
    summarizer: str | None = None

    @field_validator("summarizer")
    @classmethod
    def _agent_and_skill(cls, value: str | None) -> str | None:
        return None if value is None else SessionConfig._agent_and_skill(value)

    def overrides(self) -> dict[str, Any]:
        """The fields set, by name (as :class:`SessionPolicy` names them)."""
        return self.model_dump(exclude_none=True)


class MatchConfig(BaseModel):
    """What a request must look like for a route to take it; every given test must pass."""

    model_config = ConfigDict(extra="forbid")

    keywords: list[str] = Field(
        default_factory=list, description="any of these words in the text (case-insensitive)"
    )
    pattern: str | None = Field(None, description="a regular expression found in the text")
    metadata: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="message metadata entries that must be equal"
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"pattern {pattern!r} is not a valid regular expression: {exc}"
                ) from None
        return pattern

    @model_validator(mode="after")
    def _tests_something(self) -> MatchConfig:
        if not (self.keywords or self.pattern or self.metadata):
            raise ValueError("give keywords, pattern or metadata")
        return self


class RouteConfig(BaseModel):
    """A declared routing rule, for requests that name neither agent nor skill."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    priority: int = Field(0, description="higher goes first; ties keep file order")
    match: MatchConfig
    to: TargetConfig
    cache: CacheConfig | None = None
    session: RouteSessionConfig | None = Field(
        None, description="overrides of the session settings for conversations on this route"
    )
    history: bool = Field(
        True, description="false: messages on this route are stateless (no session is kept)"
    )

    @model_validator(mode="after")
    def _session_needs_history(self) -> RouteConfig:
        if self.session is not None and not self.history:
            raise ValueError(
                f"route {self.name!r}: session settings do nothing with history: false"
            )
        return self


class A2AAgentConfig(BaseModel):
    """How the gateway reaches an agent that speaks A2A v1 (instead of ``agentmesh.v1.Agent``)."""

    model_config = ConfigDict(extra="forbid")

    binding: Literal["grpc", "jsonrpc"] = Field(
        description="grpc: addresses are host:port of lf.a2a.v1.A2AService; "
        "jsonrpc: addresses are the JSON-RPC endpoint URLs (http or https)"
    )
    card_url: str | None = Field(
        None,
        description="URL of the agent's public card; default: jsonrpc reads "
        "/.well-known/agent-card.json beside the endpoint, grpc calls GetExtendedAgentCard",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="sent with every call (gRPC metadata or HTTP headers), e.g. an API key; "
        "${NAME} in a value is the environment variable NAME",
    )

    @model_validator(mode="before")
    @classmethod
    def _binding_alone(cls, data: Any) -> Any:
        return {"binding": data} if isinstance(data, str) else data

    @field_validator("card_url")
    @classmethod
    def _card_url_is_http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"card_url {url!r} must be an http:// or https:// URL")
        return url

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} must be lower-case token characters")
        return headers


_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")


class AgentConfig(ResilienceOverrides):
    """One agent as the gateway knows it before it has talked to it (resilience fields too)."""

    model_config = ConfigDict(extra="forbid")

    addresses: list[str] = Field(min_length=1)
    skills: list[str] = Field(default_factory=list)
    timeout: float | None = Field(None, gt=0, le=3600)
    cache: CacheConfig | None = None
    session: SessionConfig | None = Field(
        None, description="how conversations with this agent are kept (default: sessions)"
    )
    a2a: A2AAgentConfig | None = Field(
        None, description="set: the agent speaks A2A v1 (grpc or jsonrpc binding)"
    )

    @model_validator(mode="before")
    @classmethod
    def _single_address(cls, data: Any) -> Any:
        if isinstance(data, dict) and "address" in data:
            data = dict(data)
            address = data.pop("address")
            data.setdefault("addresses", [address])
        return data

    @field_validator("addresses")
    @classmethod
    def _valid_addresses(cls, addresses: list[str]) -> list[str]:
        for address in addresses:
            if not address or any(c.isspace() for c in address):
                raise ValueError(f"invalid address {address!r}")
            if address.startswith("dns:") and len(addresses) > 1:
                raise ValueError("a dns:/// address must be the agent's only address")
        return addresses

    @model_validator(mode="after")
    def _addresses_fit_the_protocol(self) -> AgentConfig:
        web = [a for a in self.addresses if a.startswith(("http://", "https://"))]
        if self.a2a is not None and self.a2a.binding == "jsonrpc":
            if len(web) != len(self.addresses):
                raise ValueError(
                    "an A2A jsonrpc agent's addresses must be http:// or https:// URLs"
                )
        elif web:
            binding = "an A2A grpc agent's" if self.a2a else "a gRPC agent's"
            raise ValueError(
                f"{binding} addresses are host:port, not URLs ({web[0]}); "
                "for A2A over JSON-RPC set a2a: jsonrpc"
            )
        return self

    @property
    def protocol(self) -> str:
        """``agentmesh``, ``a2a/grpc`` or ``a2a/jsonrpc``."""
        return "agentmesh" if self.a2a is None else f"a2a/{self.a2a.binding}"


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    defaults: ResilienceDefaults = Field(default_factory=ResilienceDefaults)
    rate_limit: RateLimitPolicy = Field(default_factory=RateLimitPolicy)
    routes: list[RouteConfig] = Field(default_factory=list)
    default_route: TargetConfig | None = None
    router: TargetConfig | None = Field(
        None, description="an agent that picks the target when no route matches"
    )
    sessions: SessionConfig = Field(default_factory=SessionConfig)
    # Workflow definitions by name, checked by agentmesh.gateway.workflows at startup.
    workflows: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("agents")
    @classmethod
    def _valid_names(cls, agents: dict[str, AgentConfig]) -> dict[str, AgentConfig]:
        for name in agents:
            if not AGENT_NAME.match(name):
                raise ValueError(f"agent name {name!r} must be lower-case letters, digits and '-'")
        return agents

    @model_validator(mode="after")
    def _resilience_is_valid(self) -> GatewayConfig:
        check_policies(self.agents, self.defaults)
        return self

    @model_validator(mode="after")
    def _targets_are_declared(self) -> GatewayConfig:
        targets: list[tuple[str, TargetConfig | None]] = [
            (f"routes.{r.name}.to", r.to) for r in self.routes
        ]
        targets += [("default_route", self.default_route), ("router", self.router)]
        for where, target in targets:
            agent = target.target.agent if target is not None and target.fan_out is None else ""
            if agent and agent not in self.agents:
                raise ValueError(f"{where}: agent {agent!r} is not declared under agents")
        if self.router is not None and (self.router.workflow or self.router.fan_out is not None):
            raise ValueError("router: the router is an agent (set agent and/or skill)")
        if self.default_route is not None and self.default_route.fan_out is not None:
            raise ValueError("default_route: send to an agent, skill or workflow")
        names = [r.name for r in self.routes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"routes: duplicate route names {', '.join(duplicates)}")
        return self


def session_policy(config: GatewayConfig, agent: str) -> SessionPolicy:
    """How ``agent``'s conversations are kept: its own ``session``, else ``sessions``."""
    declared = config.agents.get(agent)
    chosen = declared.session if declared is not None and declared.session else config.sessions
    return chosen.policy()


class ConfigError(ValueError):
    """The gateway configuration is invalid; the message says where."""


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in environ.items():
        match = _ENV_AGENT.match(key)
        if not match:
            continue
        name = match.group(1).lower().replace("_", "-")
        field = match.group(2).lower()
        items = [v.strip() for v in value.split(",") if v.strip()]
        overrides.setdefault(name, {})[field] = (
            value.strip() if field in ("timeout", "a2a") else items
        )
    return overrides


def _expand_environment(agents: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Replace ``${NAME}`` in A2A header values with the environment variable NAME."""
    for name, fields in agents.items():
        a2a = fields.get("a2a") if isinstance(fields, dict) else None
        headers = a2a.get("headers") if isinstance(a2a, dict) else None
        if not isinstance(headers, dict):
            continue
        expanded = {}
        for header, value in headers.items():
            text = str(value)
            for variable in _ENV_REFERENCE.findall(text):
                if variable not in environ:
                    raise ConfigError(
                        f"invalid gateway config: agents.{name}.a2a.headers.{header}: "
                        f"environment variable {variable} is not set"
                    )
            expanded[header] = _ENV_REFERENCE.sub(lambda m: environ[m.group(1)], text)
        fields["a2a"] = {**cast("dict[str, Any]", a2a), "headers": expanded}


def read_config_file(path: Path) -> dict[str, Any]:
    """The gateway config file's top-level mapping, not yet validated; ConfigError when it
    cannot be read, is not YAML or is not a mapping."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read gateway config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"gateway config {path} is not valid YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"gateway config {path}: the top level must be a mapping")
    return dict(loaded or {})


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read the YAML file (if any), apply environment overrides and validate."""
    environ = os.environ if environ is None else environ
    raw = read_config_file(path) if path is not None else {}
    agents: dict[str, Any] = dict(raw.get("agents") or {})
    for name, fields in _env_overrides(environ).items():
        current = agents.get(name)
        merged = dict(current) if isinstance(current, dict) else {}
        if "addresses" in fields:
            merged.pop("address", None)
        if "a2a" in fields and isinstance(merged.get("a2a"), dict):
            fields = {**fields, "a2a": {**merged["a2a"], "binding": fields["a2a"]}}
        merged.update(fields)
        agents[name] = merged
    agents = {
        name: dict(fields) if isinstance(fields, dict) else fields
        for name, fields in agents.items()
    }
    _expand_environment(agents, environ)
    try:
        return GatewayConfig.model_validate({**raw, "agents": agents})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid gateway config: {problems}") from None
