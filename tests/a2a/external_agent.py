"""An A2A v1 agent built with a2a-sdk alone, for the external-agent tests.

Run: ``python tests/a2a/external_agent.py --binding grpc|jsonrpc --port N [--name NAME]``.
It knows nothing of agentmesh. The skill comes from message metadata
``skill`` (the convention the gateway sends), default ``shout``:

- ``shout``: the text upper-cased, streamed as three appended artifact chunks;
- ``count``: a plain message (no task) with data ``{"words": N}``;
- ``headers``: data with the request's ``traceparent``, ``x-api-key`` and
  ``x-agentmesh-principal`` (which the mesh keeps to itself), and
  the ``options`` it received in metadata;
- ``hold``: works until cancelled; ``stats`` says how many ``hold`` tasks were
  cancelled;
- ``fail``: the task fails; ``ask``: the task asks for more input.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
import uvicorn
from a2a.helpers.proto_helpers import new_data_message, new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2 as a2a
from a2a.types import a2a_pb2_grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Value
from starlette.applications import Starlette

SKILLS = ("shout", "count", "headers", "hold", "stats", "fail", "ask")


def _value(data: dict[str, Any]) -> Value:
    value = Value()
    value.struct_value.update(data)
    return value


def _headers(context: RequestContext) -> dict[str, str]:
    state = context.call_context.state
    if "headers" in state:  # JSON-RPC: the HTTP request's headers
        return {k.lower(): v for k, v in state["headers"].items()}
    grpc_context = state.get("grpc_context")  # gRPC: the call's metadata
    metadata = grpc_context.invocation_metadata() if grpc_context is not None else ()
    return {k: v for k, v in metadata or () if isinstance(v, str)}


class ExternalExecutor(AgentExecutor):
    def __init__(self) -> None:
        self.cancelled = 0

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message = context.message
        assert message is not None
        metadata = MessageToDict(message.metadata) if message.HasField("metadata") else {}
        skill = metadata.get("skill") or "shout"
        text = " ".join(p.text for p in message.parts if p.text)
        if skill == "count":
            await event_queue.enqueue_event(new_data_message({"words": len(text.split())}))
            return
        if skill == "stats":
            await event_queue.enqueue_event(new_data_message({"cancelled": self.cancelled}))
            return
        task = context.current_task or new_task_from_user_message(message)
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        if skill == "shout":
            words = text.upper().split(" ")
            for index, word in enumerate(words):
                chunk = word if index == len(words) - 1 else word + " "
                await updater.add_artifact(
                    [a2a.Part(text=chunk)], artifact_id="shout", append=index > 0
                )
            await updater.complete()
        elif skill == "headers":
            headers = _headers(context)
            seen = {
                "traceparent": headers.get("traceparent", ""),
                "x-api-key": headers.get("x-api-key", ""),
                "x-agentmesh-principal": headers.get("x-agentmesh-principal", ""),
                "options": metadata.get("options", {}),
            }
            await updater.add_artifact([a2a.Part(data=_value(seen))], artifact_id="headers")
            await updater.complete()
        elif skill == "hold":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        elif skill == "fail":
            await updater.failed(updater.new_agent_message([a2a.Part(text="failed on purpose")]))
        elif skill == "ask":
            await updater.requires_input(updater.new_agent_message([a2a.Part(text="which one?")]))
        else:
            await updater.failed(updater.new_agent_message([a2a.Part(text=f"no skill {skill}")]))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is not None:
            await TaskUpdater(event_queue, task.id, task.context_id).cancel()


def agent_card(name: str, binding: str, url: str) -> a2a.AgentCard:
    return a2a.AgentCard(
        name=name,
        description="an A2A agent that knows nothing of agentmesh",
        version="2.1.0",
        supported_interfaces=[
            a2a.AgentInterface(url=url, protocol_binding=binding, protocol_version="1.0")
        ],
        capabilities=a2a.AgentCapabilities(streaming=True, extended_agent_card=binding == "GRPC"),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain", "application/json"],
        skills=[
            a2a.AgentSkill(id=s, name=s, description=f"the {s} skill", tags=["test"])
            for s in SKILLS
        ],
    )


async def serve_grpc(name: str, port: int) -> None:
    card = agent_card(name, "GRPC", f"127.0.0.1:{port}")
    handler = DefaultRequestHandler(
        ExternalExecutor(), InMemoryTaskStore(), card, extended_agent_card=card
    )
    server = grpc.aio.server()
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"serving A2A gRPC on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await server.stop(grace=1)


async def serve_jsonrpc(name: str, port: int) -> None:
    card = agent_card(name, "JSONRPC", f"http://127.0.0.1:{port}/")
    handler = DefaultRequestHandler(ExternalExecutor(), InMemoryTaskStore(), card)
    app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    print(f"serving A2A JSON-RPC on http://127.0.0.1:{port}/", flush=True)
    await uvicorn.Server(config).serve()  # stops on SIGTERM by itself


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binding", choices=("grpc", "jsonrpc"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="outsider")
    args = parser.parse_args()
    serve = serve_grpc if args.binding == "grpc" else serve_jsonrpc
    asyncio.run(serve(args.name, args.port))


if __name__ == "__main__":
    main()
