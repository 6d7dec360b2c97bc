"""Delegation: a handler calls the mesh through its request (``request.mesh``).

A call goes to the gateway (so routes, breakers, scopes and tracing hold), with
the handler's remaining deadline, the trace context of the call being handled,
and the hop count: the number of delegations that led to it, in the
``x-agentmesh-hops`` header. The gateway forwards the count to the agent it
calls and refuses a call past its maximum depth with FAILED_PRECONDITION, so a
loop between agents ends with a clear error instead of a hang.

The agent finds the gateway in its ``gateway`` setting (``AGENTMESH_GATEWAY``
or ``--gateway``); without one, ``request.mesh`` refuses with
FAILED_PRECONDITION saying so. The calls present the agent's own credentials,
as any client of the gateway does: the API key of ``mesh_api_key`` (or
``mesh_api_key_file``) in ``x-api-key``, so the gateway's authentication and
the key's scopes apply to them; and they use TLS when the gateway is given as
``https://HOST:PORT`` or a ``mesh_tls_*`` file is set (the CA to trust, a
client certificate for mTLS).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import grpc

from agentmesh.runtime import wire
from agentmesh.runtime.errors import AgentError, DeadlineExceeded, ErrorCode
from agentmesh.runtime.settings import AgentSettings
from agentmesh.runtime.status import error_code
from agentmesh.runtime.tls import TLSConfigError, channel_credentials, read_pem
from agentmesh.runtime.types import JSONValue, Partial, Result
from agentmesh.telemetry.client import client_span
from agentmesh.v1 import gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

HOPS_HEADER = "x-agentmesh-hops"
"""Call metadata: how many delegations led to this call (absent: none)."""

current_hops: contextvars.ContextVar[int] = contextvars.ContextVar("agentmesh_hops", default=0)
"""The hop count of the call being handled (the gateway forwards it to agents)."""

API_KEY_HEADER = "x-api-key"
"""Call metadata: the API key the gateway authenticates a caller by."""

_INVOKE = "agentmesh.v1.Gateway/Invoke"
_INVOKE_STREAM = "agentmesh.v1.Gateway/InvokeStream"


def hops_from(metadata: Iterable[tuple[str, Any]] | None) -> int:
    """The hop count in call metadata (0 when absent or not a small whole number)."""
    for key, value in metadata or ():
        if key == HOPS_HEADER:
            text = value.decode() if isinstance(value, bytes) else str(value)
            return int(text) if text.isdigit() and len(text) < 6 else 0
    return 0


def hop_metadata() -> tuple[tuple[str, str], ...]:
    """The header carrying the current hop count onwards (nothing at 0)."""
    hops = current_hops.get()
    return ((HOPS_HEADER, str(hops)),) if hops else ()


def _request(
    target: str,
    text: str | None,
    *,
    skill: str,
    data: JSONValue | None,
    options: Mapping[str, JSONValue] | None,
    metadata: Mapping[str, JSONValue] | None,
) -> pb.InvokeRequest:
    agent, _, named_skill = target.partition("/")
    if agent.startswith("skill:"):
        agent, named_skill = "", agent.removeprefix("skill:")
    request = pb.InvokeRequest(agent=agent, skill=skill or named_skill)
    if text is not None:
        request.message.parts.add(text=text)
    if data is not None:
        wire.python_to_value(data, request.message.parts.add().data)
    request.message.role = pb.ROLE_USER
    wire.dict_to_struct(options or {}, request.options)
    wire.dict_to_struct(metadata or {}, request.message.metadata)
    return request


_CREDENTIALS_HINT = {
    ErrorCode.UNAUTHENTICATED: " (this agent presents no API key to the gateway: set "
    "AGENTMESH_MESH_API_KEY or AGENTMESH_MESH_API_KEY_FILE)",
    ErrorCode.PERMISSION_DENIED: " (the scopes of this agent's own key, "
    "AGENTMESH_MESH_API_KEY, apply to its calls through the mesh)",
}


def _error(exc: grpc.aio.AioRpcError, target: str, *, keyed: bool) -> AgentError:
    code = error_code(exc.code())
    message = f"{target}: {exc.details() or exc.code().name}"
    if (code is ErrorCode.UNAUTHENTICATED and not keyed) or (
        code is ErrorCode.PERMISSION_DENIED and keyed
    ):
        message += _CREDENTIALS_HINT[code]
    return AgentError(message, code=code)


class GatewayMesh:
    """The mesh as one request's handler sees it: calls through the gateway."""

    def __init__(
        self,
        stub: gateway_pb2_grpc.GatewayAsyncStub,
        *,
        hops: int,
        deadline: float | None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._stub = stub
        self._hops = hops
        self._deadline = deadline
        self._metadata = metadata  # the agent's credentials

    def _call_args(self) -> tuple[float | None, tuple[tuple[str, str], ...]]:
        timeout = None
        if self._deadline is not None:
            timeout = self._deadline - time.monotonic()
            if timeout <= 0:
                raise DeadlineExceeded("no time left to delegate before the caller's deadline")
        return timeout, ((HOPS_HEADER, str(self._hops + 1)), *self._metadata)

    async def invoke(
        self,
        target: str,
        text: str | None = None,
        *,
        skill: str = "",
        data: JSONValue | None = None,
        options: Mapping[str, JSONValue] | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> Result:
        """Call ``target`` ("AGENT", "AGENT/SKILL" or "skill:SKILL") and return its result;
        a failure raises :class:`AgentError` with the callee's status and message."""
        request = _request(target, text, skill=skill, data=data, options=options, metadata=metadata)
        timeout, hops = self._call_args()
        with client_span(_INVOKE, hops) as call_metadata:
            try:
                response = await self._stub.Invoke(request, timeout=timeout, metadata=call_metadata)
            except grpc.aio.AioRpcError as exc:
                raise _error(exc, target, keyed=bool(self._metadata)) from None
        return wire.result_from_proto(response)

    async def stream(
        self,
        target: str,
        text: str | None = None,
        *,
        skill: str = "",
        data: JSONValue | None = None,
        options: Mapping[str, JSONValue] | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> AsyncIterator[Partial | Result]:
        """Stream ``target``'s partial outputs, then its final :class:`Result`."""
        request = _request(target, text, skill=skill, data=data, options=options, metadata=metadata)
        timeout, hops = self._call_args()
        with client_span(_INVOKE_STREAM, hops) as call_metadata:
            call = self._stub.InvokeStream(request, timeout=timeout, metadata=call_metadata)
            try:
                async for event in call:
                    kind = event.WhichOneof("event")
                    if kind == "partial":
                        yield wire.partial_from_proto(event.partial)
                    elif kind == "final":
                        yield wire.result_from_proto(event.final)
            except grpc.aio.AioRpcError as exc:
                raise _error(exc, target, keyed=bool(self._metadata)) from None
            finally:
                call.cancel()


class GatewayConnection:
    """One channel to the gateway, shared by every request of an agent.

    ``address`` is ``HOST:PORT`` (or ``http://HOST:PORT``) for plaintext and
    ``https://HOST:PORT`` for TLS; ``credentials`` (TLS channel credentials)
    also turn TLS on. ``api_key`` goes with every call as ``x-api-key``.
    """

    def __init__(
        self,
        address: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        api_key: str | None = None,
    ) -> None:
        target, tls = split_gateway(address)
        self.address = target
        if credentials is None and tls:
            credentials = grpc.ssl_channel_credentials()
        self.tls = credentials is not None
        self._channel = (
            grpc.aio.insecure_channel(target)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials)
        )
        self._stub: gateway_pb2_grpc.GatewayAsyncStub = gateway_pb2_grpc.GatewayStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = (
            ((API_KEY_HEADER, api_key),) if api_key else ()
        )

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> GatewayConnection | None:
        """The connection ``settings`` describe (None without a gateway); an unreadable
        key or certificate file raises :class:`TLSConfigError` naming the setting."""
        if not settings.gateway:
            return None
        api_key = settings.mesh_api_key.get_secret_value() if settings.mesh_api_key else None
        if settings.mesh_api_key_file is not None:
            api_key = read_pem(settings.mesh_api_key_file, "mesh_api_key_file").decode().strip()
            if not api_key:
                raise TLSConfigError(f"mesh_api_key_file: {settings.mesh_api_key_file} is empty")
        credentials = channel_credentials(
            ca_file=settings.mesh_tls_ca_file,
            cert_file=settings.mesh_tls_cert_file,
            key_file=settings.mesh_tls_key_file,
            prefix="mesh_tls",
        )
        return cls(settings.gateway, credentials=credentials, api_key=api_key)

    def for_request(self, *, hops: int, deadline: float | None) -> GatewayMesh:
        return GatewayMesh(self._stub, hops=hops, deadline=deadline, metadata=self._metadata)

    async def close(self) -> None:
        await self._channel.close()


def split_gateway(address: str) -> tuple[str, bool]:
    """``(HOST:PORT, tls)`` of a gateway address given as ``HOST:PORT`` or an http(s) URL."""
    for scheme, tls in (("https://", True), ("http://", False)):
        if address.startswith(scheme):
            return address.removeprefix(scheme).rstrip("/"), tls
    return address, False
