"""An agent process whose one skill fails with a secret in the exception text."""

from __future__ import annotations

import logging
import sys

from agentmesh.runtime import AgentCard, Request, Result, Skill, agent, run

SECRET = "token=s3cr3t-abc123"


@agent(AgentCard(name="crasher", description="always fails", skills=(Skill(id="crash"),)))
async def crasher(request: Request) -> Result:
    logging.getLogger("crasher").info("about to fail")
    raise RuntimeError(f"cannot open /etc/agentmesh/{SECRET}")


if __name__ == "__main__":
    run(crasher, sys.argv[1:])
