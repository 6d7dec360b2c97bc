"""The agent every benchmark path ends at: ``python -m bench.agent --port N``.

Skills: ``echo`` returns the text (the cheapest call the runtime serves), and
``sleep`` answers after ``options.ms`` milliseconds (50 by default) without
using the CPU, standing in for an agent that waits on a model or a database.
"""

from __future__ import annotations

import asyncio

from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill, run

DEFAULT_SLEEP_MS = 50.0


class BenchAgent(Agent):
    card = AgentCard(
        name="bench",
        description="echoes, or answers after a fixed delay",
        skills=(
            Skill(id="echo", description="returns the text"),
            Skill(id="sleep", description="answers after options.ms milliseconds"),
        ),
    )

    async def invoke(self, request: Request) -> Result:
        if request.skill == "sleep":
            delay_ms = request.options.get("ms", DEFAULT_SLEEP_MS)
            if not isinstance(delay_ms, int | float):
                delay_ms = DEFAULT_SLEEP_MS
            await asyncio.sleep(delay_ms / 1000)
            return Result.of(text="slept")
        return Result.of(text=request.text)


if __name__ == "__main__":
    run(BenchAgent())
