"""The agent every benchmark path ends at: ``python -m bench.agent --port N``.

Skills:

* ``echo`` returns the text (the cheapest call the runtime serves);
* ``sleep`` answers after ``options.ms`` milliseconds (50 by default) without
  using the CPU, standing in for an agent that waits on a model or a database;
* ``stream`` streams ``options.events`` small text deltas (100 by default) as
  fast as it can, standing in for a model's token stream;
* ``hold`` streams one delta, then keeps the stream open for ``options.ms``
  milliseconds (10 minutes by default) or until the caller cancels: an open
  stream that costs nothing but the memory holding it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill, StreamItem, run

DEFAULT_SLEEP_MS = 50.0
DEFAULT_EVENTS = 100
DEFAULT_HOLD_MS = 600_000.0
DELTA = "token-0123456789"  # 16 characters: one small partial output


class BenchAgent(Agent):
    card = AgentCard(
        name="bench",
        description="echoes, answers after a fixed delay, streams, or holds a stream open",
        skills=(
            Skill(id="echo", description="returns the text"),
            Skill(id="sleep", description="answers after options.ms milliseconds"),
            Skill(id="stream", description="streams options.events small text deltas"),
            Skill(id="hold", description="streams one delta, then stays open options.ms"),
        ),
    )

    async def invoke(self, request: Request) -> Result:
        if request.skill == "sleep":
            delay_ms = request.float_option("ms", DEFAULT_SLEEP_MS, minimum=0, maximum=60_000)
            await asyncio.sleep(delay_ms / 1000)
            return Result.of(text="slept")
        if request.skill in ("stream", "hold"):
            return await super().invoke(request)  # drains stream()
        return Result.of(text=request.text)

    async def stream(self, request: Request) -> AsyncIterator[StreamItem]:
        if request.skill == "stream":
            events = request.int_option("events", DEFAULT_EVENTS, minimum=1, maximum=100_000)
            for _ in range(events):
                yield DELTA
        elif request.skill == "hold":
            held_ms = request.float_option("ms", DEFAULT_HOLD_MS, minimum=0, maximum=3_600_000)
            yield DELTA
            await asyncio.sleep(held_ms / 1000)
        else:
            yield await self.invoke(request)


if __name__ == "__main__":
    run(BenchAgent())
