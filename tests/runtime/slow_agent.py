"""An agent process for signal tests: its one skill works for ``options.seconds``."""

from __future__ import annotations

import asyncio
import sys

from agentmesh.runtime import AgentCard, Request, Result, Skill, agent, run


@agent(AgentCard(name="slow", description="works for a while", skills=(Skill(id="work"),)))
async def slow(request: Request) -> Result:
    print("entered", flush=True)
    await asyncio.sleep(request.float_option("seconds", 1.0, minimum=0, maximum=60))
    return Result.of(text="finished")


if __name__ == "__main__":
    run(slow, sys.argv[1:])
