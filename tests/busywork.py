"""Work functions for the work-pool tests and an agent that offloads them.

The functions run in the runtime's work processes, which import them by name
(this module is on the path the tests' processes hand to their workers).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from agentmesh.runtime import AgentCard, InvalidInput, Request, Result, Skill, agent, offload


def pid(_: str) -> int:
    """The work process's id."""
    return os.getpid()


def spin(marker: str) -> None:
    """Write the process id to ``marker``, then burn CPU until stopped."""
    Path(marker).write_text(str(os.getpid()))
    while True:
        pass


def spin_deaf(marker: str) -> None:
    """:func:`spin`, ignoring the interrupt (as a long C call would): only a kill ends it."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    spin(marker)


def refuse(text: str) -> None:
    raise InvalidInput("text", f"{text!r} is not acceptable")


def crash(_: str) -> None:
    raise ZeroDivisionError("a bug in the work function")


WORK = {"pid": pid, "spin": spin, "spin_deaf": spin_deaf, "refuse": refuse, "crash": crash}


@agent(
    AgentCard(
        name="busy",
        description="offloads the work its skill names, with the text as argument",
        skills=tuple(Skill(id=name) for name in WORK),
    )
)
async def busy(request: Request) -> Result:
    value = await offload(WORK[request.skill], request.text)
    return Result.of(text=str(value))
