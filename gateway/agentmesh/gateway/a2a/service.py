"""Mounting the A2A v1 gRPC service (``lf.a2a.v1.A2AService``) on the gateway's server.

It is served by a2a-sdk's ``GrpcHandler`` over :class:`MeshRequestHandler`,
on the same :class:`GrpcServer` as ``agentmesh.v1.Gateway``, so the server's
interceptors (telemetry, rate limits, authentication) apply to it unchanged.
"""

from __future__ import annotations

from a2a.server.request_handlers.grpc_handler import GrpcHandler
from a2a.types import a2a_pb2_grpc

from agentmesh.gateway.a2a.handler import MeshRequestHandler
from agentmesh.runtime.server import ServiceBinding

A2A_SERVICE = "lf.a2a.v1.A2AService"


def a2a_binding(handler: MeshRequestHandler) -> ServiceBinding:
    """The A2A service over ``handler``, for the gateway's server."""
    servicer = GrpcHandler(handler)
    return ServiceBinding(
        A2A_SERVICE,
        lambda server: a2a_pb2_grpc.add_A2AServiceServicer_to_server(  # type: ignore[no-untyped-call]
            servicer, server
        ),
    )
