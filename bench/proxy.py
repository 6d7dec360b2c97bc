"""The floor for one Python hop: a bare ``grpc.aio`` pass-through proxy.

Every call, whatever its method, is forwarded as raw bytes to
``BENCH_PROXY_UPSTREAM`` over one shared channel, with the caller's remaining
deadline; the answer (or each streamed message) or the status comes back
unchanged. A method whose name ends in ``Stream`` (``InvokeStream``) is
forwarded as unary-stream, every other one as unary-unary. No parsing, no
routing, no interceptors: what the gateway costs beyond this is its own.

    BENCH_PROXY_UPSTREAM=127.0.0.1:50061 python -m bench.proxy --port 50070
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

Context = grpc.aio.ServicerContext[bytes, bytes]


class PassThrough(grpc.GenericRpcHandler):
    """Answers every method with a forwarding handler (unary-stream for ``*Stream``)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        # One multicallable per method, made once: the forwarding path is one await.
        self._handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes]:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            if method.endswith("Stream"):
                handler = grpc.unary_stream_rpc_method_handler(self._stream_forwarder(method))
            else:
                handler = grpc.unary_unary_rpc_method_handler(self._forwarder(method))
            self._handlers[method] = handler
        return handler

    def _forwarder(self, method: str) -> Callable[[bytes, Context], Awaitable[bytes]]:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(method)

        async def forward(request: bytes, context: Context) -> bytes:
            try:
                response: bytes = await call(request, timeout=context.time_remaining())
                return response
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
                raise  # abort raises; this line is never reached

        return forward

    def _stream_forwarder(self, method: str) -> Callable[[bytes, Context], AsyncIterator[bytes]]:
        call: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = self._channel.unary_stream(method)

        async def forward(request: bytes, context: Context) -> AsyncIterator[bytes]:
            upstream = call(request, timeout=context.time_remaining())
            try:
                async for message in upstream:
                    yield message
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
            finally:
                upstream.cancel()  # the caller went away: so does the upstream call

        return forward


async def serve(host: str, port: int, upstream: str) -> None:
    async with grpc.aio.insecure_channel(upstream) as channel:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((PassThrough(channel),))
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
    args: Any = parser.parse_args(argv)
    upstream = os.environ.get("BENCH_PROXY_UPSTREAM")
    if not upstream:
        raise SystemExit("bench.proxy: set BENCH_PROXY_UPSTREAM to the agent's host:port")
    asyncio.run(serve(args.host, args.port, upstream))


if __name__ == "__main__":
    main()
