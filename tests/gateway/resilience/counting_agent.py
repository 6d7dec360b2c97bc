"""An agent process for fault-injection tests: it counts the calls that reach it.

Skills: ``echo`` (answers with its name and pid), ``wait`` (holds until a
``release`` call arrives), ``slow`` (sleeps ``options.seconds``), ``reject``
(INVALID_ARGUMENT), ``count`` (the counts and the deadlines it saw, as data;
itself not counted). Name from ``PROBE_NAME``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter

from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill, run
from agentmesh.runtime.errors import InvalidInput

SKILLS = ("echo", "wait", "release", "slow", "reject", "count")


class CountingAgent(Agent):
    def __init__(self, name: str) -> None:
        self.card = AgentCard(
            name=name, description="counts calls", skills=tuple(Skill(id=s) for s in SKILLS)
        )
        self.counts: Counter[str] = Counter()
        self.deadlines: list[float] = []
        self.released = asyncio.Event()

    async def invoke(self, request: Request) -> Result:
        skill = request.skill
        if skill == "count":
            return Result.of(data={"counts": dict(self.counts), "deadlines": self.deadlines})
        if skill == "release":
            self.released.set()
            return Result.of(text="released")
        self.counts[skill] += 1
        if skill == "wait":
            await self.released.wait()
        elif skill == "slow":
            remaining = request.time_remaining()
            self.deadlines.append(-1.0 if remaining is None else remaining)
            await asyncio.sleep(request.float_option("seconds", 1.0, minimum=0, maximum=60))
        elif skill == "reject":
            raise InvalidInput("options.mode", "is not one this agent knows")
        return Result.of(text=request.text, data={"agent": self.card.name, "pid": os.getpid()})


if __name__ == "__main__":
    run(CountingAgent(os.environ.get("PROBE_NAME", "probe")), sys.argv[1:])
