"""``agentmesh chat`` driven through a pseudo-terminal against a real gateway and agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import signal
import sys
from collections.abc import AsyncIterator

from meshtest import running_agent, running_gateway, service_env

from agentmesh.agents._history import earlier_turns
from agentmesh.runtime import Agent, AgentCard, Request, Skill, StreamItem


class RecallAgent(Agent):
    """Answers with the first thing said in the conversation: its answer needs the history."""

    card = AgentCard(
        name="recall", description="test agent", skills=(Skill(id="chat"),), takes_history=True
    )

    async def stream(self, request: Request) -> AsyncIterator[StreamItem]:
        text = request.message.text
        if text == "wait":  # an answer that never ends unless interrupted
            yield "thinking..."
            await asyncio.Event().wait()
        earlier = [m.content for m in earlier_turns(request.message) if m.role == "user"]
        yield "you first said: "
        yield earlier[0] if earlier else text


class Terminal:
    """A process on a pseudo-terminal: what it printed, and keys typed to it."""

    def __init__(self, master: int, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._master = master
        self._seen = b""
        self._arrived = asyncio.Event()
        asyncio.get_running_loop().add_reader(master, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self._master, 4096)
        except OSError:  # the process closed the terminal
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self._master)
        self._seen += chunk
        self._arrived.set()

    async def expect(self, text: str, count: int = 1) -> str:
        """Everything printed so far, once ``text`` appeared ``count`` times (or fail)."""
        async with asyncio.timeout(60):
            while self._seen.decode(errors="replace").count(text) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self._seen.decode(errors="replace")

    def type(self, keys: str) -> None:
        os.write(self._master, keys.encode())


@contextlib.asynccontextmanager
async def chat(gateway: str) -> AsyncIterator[Terminal]:
    master, slave = pty.openpty()
    # setsid --ctty: the terminal is the chat's controlling terminal, so ^C is its SIGINT.
    process = await asyncio.create_subprocess_exec(
        "setsid", "--ctty", sys.executable, "-m", "agentmesh.cli", "chat", "recall",
        "--gateway", gateway,
        stdin=slave, stdout=slave, stderr=slave, env=service_env(),
    )  # fmt: skip
    os.close(slave)
    terminal = Terminal(master, process)
    try:
        yield terminal
    finally:
        asyncio.get_running_loop().remove_reader(master)
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await process.wait()
        os.close(master)


async def test_two_turns_the_second_answer_uses_the_first_and_ctrl_c_ends_only_the_turn() -> None:
    async with (
        running_agent(RecallAgent()) as (_, agent),
        running_gateway({"recall": [agent]}) as (_, gateway),
        chat(gateway) as terminal,
    ):
        await terminal.expect("you> ")
        terminal.type("apples are red\n")
        await terminal.expect("recall> you first said: apples are red")
        terminal.type("what did I say?\n")
        # The second answer is the first line: the gateway sent the agent the conversation.
        await terminal.expect("recall> you first said: apples are red", 2)

        terminal.type("wait\n")
        await terminal.expect("thinking...")
        terminal.type("\x03")  # Ctrl-C: ends the answer, not the chat
        await terminal.expect("(answer interrupted)")
        terminal.type("/history\n")
        shown = await terminal.expect("assistant> you first said: apples are red", 2)
        assert "user> what did I say?" in shown

        terminal.type("/new\n")
        await terminal.expect("new conversation")
        terminal.type("bananas\n")
        await terminal.expect("recall> you first said: bananas")
        terminal.type("/quit\n")
        async with asyncio.timeout(30):
            assert await terminal.process.wait() == 0

        status, out = await agentmesh("sessions", "list", "--gateway", gateway, "--json")
        listed = json.loads(out)
        assert status == 0
        assert [s["turn_count"] for s in listed] == [1, 2]  # most recently used first
        first = listed[1]["context_id"]
        status, out = await agentmesh("sessions", "show", first, "--gateway", gateway)
        assert out.splitlines()[0] == "user> apples are red"
        status, _ = await agentmesh("sessions", "delete", first, "--gateway", gateway)
        assert status == 0
        status, _ = await agentmesh("sessions", "show", first, "--gateway", gateway)
        assert status == 1  # NOT_FOUND now


async def agentmesh(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentmesh.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=service_env(),
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()
