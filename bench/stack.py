"""The gateway's own Python per call: its whole handler stack, in process, upstream answered.

Builds a real gateway (the composition root, one declared agent, default
settings) without listening, takes the handler its gRPC server serves
``Gateway/Invoke`` with (every interceptor around the servicer, the
dispatcher and the upstream's attempt logic), answers every upstream call at
once from memory instead of over gRPC, and times ``--calls`` sequential
calls. What it measures is agentmesh's own work per call, with no gRPC, no
network and no other process: the part of the gateway's cost above a bare
proxy that agentmesh's code can change. Run in a fresh process (the bench
does), like a gateway.

    python -m bench.stack --calls 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import yaml

from agentmesh.gateway.app import Gateway
from agentmesh.gateway.config import GatewaySettings, load_config
from agentmesh.runtime.settings import load_settings
from agentmesh.v1 import messages_pb2 as pb
from bench.common import GATEWAY_INVOKE


class _Context:
    """What the handler stack asks of a gRPC servicer context on a successful call."""

    def __init__(self) -> None:
        self.trailing: Sequence[tuple[str, str]] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("user-agent", "bench.stack"),)

    def time_remaining(self) -> float:
        return 30.0

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    def code(self) -> grpc.StatusCode | None:
        return None

    def details(self) -> str:
        return ""

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        self.trailing = metadata

    async def abort(self, code: grpc.StatusCode, details: str = "", **_: Any) -> None:
        raise RuntimeError(f"the call was refused: {code.name}: {details}")


class _Answering:
    """An agent stub that answers ``Invoke`` from memory."""

    def __init__(self, response: pb.InvokeResponse) -> None:
        self._response = response

    async def Invoke(self, request: pb.InvokeRequest, **_: Any) -> pb.InvokeResponse:
        return self._response


async def measure(calls: int) -> dict[str, Any]:
    """µs per call of the gateway's Invoke handler stack over ``calls`` sequential calls."""
    with tempfile.TemporaryDirectory() as workdir:
        config_path = Path(workdir) / "gateway.yaml"
        config_path.write_text(yaml.safe_dump({"agents": {"bench": {"address": "127.0.0.1:9"}}}))
        settings = load_settings(GatewaySettings, ["--config", str(config_path)], prog="stack")
        gateway = Gateway(settings, load_config(settings.config))
    handler = gateway.server.served_handler(GATEWAY_INVOKE)
    assert handler is not None
    assert handler.unary_unary is not None
    serve: Any = handler.unary_unary  # (request, context): the context is a stand-in here
    entry = gateway.registry.get("bench")
    assert entry is not None
    response = pb.InvokeResponse(agent="bench", skill="echo", state=pb.TASK_STATE_COMPLETED)
    for replica in entry.replicas:
        replica.stub = _Answering(response)  # type: ignore[assignment]  # Invoke is all it is asked
    message = pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hello")])
    request = pb.InvokeRequest(agent="bench", skill="echo", message=message)
    for _ in range(min(calls, 1000)):  # warm-up: per-method wrappers, metric children
        await serve(request, _Context())
    started = time.perf_counter()
    for _ in range(calls):
        answer = await serve(request, _Context())
    elapsed = time.perf_counter() - started
    assert answer.agent == "bench", answer
    for replica in entry.replicas:
        if replica.channel is not None:
            await replica.channel.close()
    return {"calls": calls, "us_per_call": round(elapsed / calls * 1e6, 1)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stack", description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args.calls))))


if __name__ == "__main__":
    main()
