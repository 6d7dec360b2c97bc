"""An agent process whose one skill asks the calculator through the mesh (``--gateway``)."""

from __future__ import annotations

import sys

from agentmesh.runtime import AgentCard, Request, Result, Skill, agent, run


@agent(AgentCard(name="relay", description="asks the calculator", skills=(Skill(id="relay"),)))
async def relay(request: Request) -> Result:
    answer = await request.mesh.invoke("calculator", request.require_text())
    return Result.of(text=f"the calculator says {answer.text}")


if __name__ == "__main__":
    run(relay, sys.argv[1:])
