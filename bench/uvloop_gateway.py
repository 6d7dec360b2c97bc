"""The gateway on uvloop's event loop: ``python -m bench.uvloop_gateway --port N``.

The benchmark runs it next to the standard gateway to measure what uvloop
changes for grpc.aio here before the gateway adopts it.
"""

from __future__ import annotations

import asyncio

import uvloop

from agentmesh.gateway.app import main

if __name__ == "__main__":
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # asyncio.run in main() uses it
    main()
