"""The floor for one Python hop: a bare ``grpc.aio`` pass-through proxy.

Every call, whatever its method, is forwarded as raw bytes to
``BENCH_PROXY_UPSTREAM`` over one shared channel, with the caller's remaining
deadline; the answer (or each streamed message) or the status comes back
unchanged. A method whose name ends in ``Stream`` (``InvokeStream``) is
forwarded as unary-stream, every other one as unary-unary. By default no
parsing, no routing, no interceptors: the cost of a Python hop as such.

    BENCH_PROXY_UPSTREAM=127.0.0.1:50061 python -m bench.proxy --port 50070

With ``--parse`` (the bench's ``parsed-proxy`` path) it does the gRPC work
any hop that reads requests must do, and nothing else: ``Invoke`` and
``InvokeStream`` requests and answers are parsed into their messages and
serialized again, each forwarded call carries the caller's principal header
the gateway sends agents, and calls pass one server interceptor that wraps
each method's handler once (agentmesh's own, doing nothing). What the
gateway costs beyond *this* is its own logic.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import ModuleType
from typing import Any

import grpc

Context = grpc.aio.ServicerContext[Any, Any]


class PassThrough(grpc.GenericRpcHandler):
    """Answers every method with a forwarding handler (unary-stream for ``*Stream``)."""

    def __init__(self, channel: grpc.aio.Channel, *, parsing: ModuleType | None = None) -> None:
        self._channel = channel
        self._parsing = parsing  # bench.parsing in --parse mode
        # One multicallable per method, made once: the forwarding path is one await.
        self._handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes]:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            request_type, response_type = self._types(method)
            codecs: dict[str, Any] = {
                "request_deserializer": getattr(request_type, "FromString", None),
                "response_serializer": getattr(response_type, "SerializeToString", None),
            }
            upstream: dict[str, Any] = {
                "request_serializer": getattr(request_type, "SerializeToString", None),
                "response_deserializer": getattr(response_type, "FromString", None),
            }
            if method.endswith("Stream"):
                handler = grpc.unary_stream_rpc_method_handler(
                    self._stream_forwarder(method, upstream), **codecs
                )
            else:
                handler = grpc.unary_unary_rpc_method_handler(
                    self._forwarder(method, upstream), **codecs
                )
            self._handlers[method] = handler
        return handler

    def _types(self, method: str) -> tuple[Any, Any]:
        """The request and answer message types ``method`` is parsed into (None: bytes)."""
        if self._parsing is None:
            return None, None
        types: tuple[Any, Any] = self._parsing.message_types(method)
        return types

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        return None if self._parsing is None else self._parsing.PRINCIPAL

    def _forwarder(
        self, method: str, upstream: dict[str, Any]
    ) -> Callable[[Any, Context], Awaitable[Any]]:
        call: grpc.aio.UnaryUnaryMultiCallable[Any, Any] = self._channel.unary_unary(
            method, **upstream
        )
        metadata = self._metadata()

        async def forward(request: Any, context: Context) -> Any:
            try:
                response: Any = await call(
                    request, timeout=context.time_remaining(), metadata=metadata
                )
                return response
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
                raise  # abort raises; this line is never reached

        return forward

    def _stream_forwarder(
        self, method: str, upstream_codecs: dict[str, Any]
    ) -> Callable[[Any, Context], AsyncIterator[Any]]:
        call: grpc.aio.UnaryStreamMultiCallable[Any, Any] = self._channel.unary_stream(
            method, **upstream_codecs
        )
        metadata = self._metadata()

        async def forward(request: Any, context: Context) -> AsyncIterator[Any]:
            upstream = call(request, timeout=context.time_remaining(), metadata=metadata)
            try:
                async for message in upstream:
                    yield message
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
            finally:
                upstream.cancel()  # the caller went away: so does the upstream call

        return forward


async def serve(host: str, port: int, upstream: str, *, parse: bool = False) -> None:
    parsing: ModuleType | None = None
    if parse:  # imported only then: the bare proxy loads nothing of agentmesh
        from bench import parsing
    async with grpc.aio.insecure_channel(upstream) as channel:
        server = grpc.aio.server(interceptors=parsing.interceptors() if parsing else None)
        server.add_generic_rpc_handlers((PassThrough(channel, parsing=parsing),))
        if server.add_insecure_port(f"{host}:{port}") == 0:
            raise SystemExit(f"bench.proxy: cannot listen on {host}:{port}")
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await server.stop(1.0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.proxy")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grace-period", type=float, default=1.0, help="accepted, unused")
    parser.add_argument(
        "--parse", action="store_true", help="parse and re-serialize Invoke/InvokeStream"
    )
    args: Any = parser.parse_args(argv)
    upstream = os.environ.get("BENCH_PROXY_UPSTREAM")
    if not upstream:
        raise SystemExit("bench.proxy: set BENCH_PROXY_UPSTREAM to the agent's host:port")
    parse = args.parse or os.environ.get("BENCH_PROXY_PARSE") == "1"
    asyncio.run(serve(args.host, args.port, upstream, parse=parse))


if __name__ == "__main__":
    main()
