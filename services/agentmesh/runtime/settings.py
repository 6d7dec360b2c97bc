"""Typed settings for every service, from environment variables and flags.

Each field of :class:`ServerSettings` (and of a subclass) is read from
``AGENTMESH_<FIELD>`` and can be overridden by a ``--<field-with-dashes>``
flag; flags win over the environment, which wins over defaults.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class ServerSettings(BaseSettings):
    """What every agentmesh gRPC server is configured with."""

    model_config = SettingsConfigDict(env_prefix="AGENTMESH_", extra="ignore")

    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 in containers)")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    max_message_bytes: int = Field(
        4 * MiB, ge=1024, le=256 * MiB, description="largest request or response accepted"
    )
    max_parts: int = Field(64, ge=1, le=10_000, description="most parts one message may carry")
    grace_period: float = Field(
        10.0, ge=0, le=600, description="seconds in-flight calls get to finish on shutdown"
    )
    drain_delay: float = Field(
        0.0,
        ge=0,
        le=120,
        description="seconds to report NOT_SERVING before refusing calls "
        "(lets load balancers notice; ~5 in Kubernetes)",
    )
    max_concurrent_rpcs: int | None = Field(
        None, ge=1, description="RPCs served at once; more are refused (None: no cap)"
    )
    max_pending_requests: int = Field(
        20_000,
        ge=1,
        description="calls arrived but not yet started; past it new calls are cancelled",
    )
    keepalive_time: float = Field(30.0, gt=0, description="seconds between keepalive pings")
    keepalive_timeout: float = Field(10.0, gt=0, description="seconds to wait for a ping ack")
    reflection: bool = Field(True, description="serve gRPC server reflection")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="HTTP port of the Prometheus /metrics endpoint, on the same host "
        "(None: no endpoint; 9464 in Kubernetes)",
    )
    max_text_chars: int = Field(
        1_000_000, ge=1, le=256 * MiB, description="longest text one part may carry (characters)"
    )
    max_call_seconds: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="longest one call may run, a stream included, whatever its deadline",
    )
    work_processes: int = Field(
        2,
        ge=1,
        le=64,
        description="processes an agent runs its CPU-heavy work in (started on first use); "
        "more calls at once wait for one",
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM server certificate (chain); set with tls_key_file to serve TLS"
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle; set: clients must present a certificate it signed (mTLS)"
    )
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="with TLS on, also serve grpc.health.v1 (only) in plaintext on this port, "
        "for probes that cannot speak TLS",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class AgentSettings(ServerSettings):
    """An agent's settings: the server's, and where the gateway is for delegation."""

    gateway: str = Field(
        "",
        description="gateway HOST:PORT that request.mesh calls go through, https://HOST:PORT "
        "for TLS (empty: the agent cannot delegate)",
    )
    mesh_api_key: SecretStr | None = Field(
        None,
        description="API key request.mesh calls present to the gateway (x-api-key); "
        "prefer mesh_api_key_file",
    )
    mesh_api_key_file: Path | None = Field(
        None, description="file holding the API key request.mesh calls present to the gateway"
    )
    mesh_tls_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle trusted for the gateway's certificate; set (or an https:// "
        "gateway): request.mesh calls use TLS",
    )
    mesh_tls_cert_file: Path | None = Field(
        None, description="PEM client certificate request.mesh calls present (gateway mTLS)"
    )
    mesh_tls_key_file: Path | None = Field(
        None, description="PEM private key of mesh_tls_cert_file"
    )

    @model_validator(mode="after")
    def _mesh_credentials(self) -> AgentSettings:
        if self.mesh_api_key is not None and self.mesh_api_key_file is not None:
            raise ValueError("set mesh_api_key or mesh_api_key_file, not both")
        if (self.mesh_tls_cert_file is None) != (self.mesh_tls_key_file is None):
            raise ValueError("mesh_tls_cert_file and mesh_tls_key_file go together")
        return self


def _flag_type(annotation: Any) -> tuple[Any, list[str] | None]:
    """argparse type and choices for a field annotation."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        annotation = next(a for a in args if a is not type(None))
        args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return str, [str(a) for a in args]
    if annotation is bool:
        return lambda s: s.lower() in ("1", "true", "yes", "on"), None
    if annotation in (int, float, str):
        return annotation, None
    return str, None


def load_settings(
    cls: type[SettingsT], argv: Sequence[str] | None = None, *, prog: str | None = None
) -> SettingsT:
    """Build settings from env, then flags in ``argv``; exits with a message on bad values."""
    parser = argparse.ArgumentParser(prog=prog, description=cls.__doc__)
    for name, info in cls.model_fields.items():
        if typing.get_origin(info.annotation) in (list, dict, tuple):
            continue  # structured settings come from the environment or a file
        flag_type, choices = _flag_type(info.annotation)
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=flag_type,
            choices=choices,
            default=argparse.SUPPRESS,
            help=f"{info.description or ''} (env AGENTMESH_{name.upper()})".strip(),
        )
    overrides = vars(parser.parse_args(argv))
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        parser.error(problems)
