"""An agent process whose one skill streams 1 KiB text chunks until the caller stops reading."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

from agentmesh.runtime import AgentCard, Request, Skill, agent, run


@agent(
    AgentCard(name="flooder", description="streams until cancelled", skills=(Skill(id="flood"),))
)
async def flooder(request: Request) -> AsyncIterator[str]:
    for _ in range(100_000):  # bounded; flow control holds it long before the end
        yield "x" * 1024


if __name__ == "__main__":
    run(flooder, sys.argv[1:])
