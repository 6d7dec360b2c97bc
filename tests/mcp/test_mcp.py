"""The mesh as an MCP server: the `mcp` package's own client, over streamable HTTP and stdio."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema
import pytest
from mcp import ClientSession, McpError, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from meshtest import (
    Mesh,
    ProbeAgent,
    free_port,
    running_agent,
    running_gateway,
    running_mesh,
    service_env,
)
from pydantic import BaseModel, Field

from agentmesh.agents.calculator.agent import CalculatorAgent
from agentmesh.gateway.auth import hash_key
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill

WORKFLOW = """\
name: square
description: the square of an expression
steps:
  - id: calc
    agent: calculator
    skill: evaluate
    input: (${input.text})**2
"""


@contextlib.asynccontextmanager
async def mcp_mesh(tmp_path: Path, **settings: Any) -> AsyncIterator[Mesh]:
    (tmp_path / "square.yaml").write_text(WORKFLOW)
    async with running_mesh(
        CalculatorAgent(), ProbeAgent(), http_port=0, workflow_dir=tmp_path, **settings
    ) as mesh:
        yield mesh


def mcp_url(mesh: Mesh) -> str:
    url = mesh.gateway.http_url()
    assert url is not None
    return f"{url}mcp"


@contextlib.asynccontextmanager
async def http_session(
    url: str, headers: dict[str, str] | None = None
) -> AsyncIterator[ClientSession]:
    async with (
        httpx.AsyncClient(headers=headers or {}, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def check_tools(session: ClientSession) -> None:
    """What every MCP client of the mesh sees: the tools, 98, a workflow, progress."""
    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert {"calculator__evaluate", "probe__echo", "probe__spell", "workflow__square"} <= set(tools)
    assert tools["calculator__evaluate"].inputSchema["required"] == ["text"]
    evaluated = await session.call_tool("calculator__evaluate", {"text": "2*7**2"})
    assert not evaluated.isError
    assert text_of(evaluated).startswith("98")
    squared = await session.call_tool("workflow__square", {"text": "3+4"})
    assert not squared.isError
    assert "49" in text_of(squared)
    notes: list[str | None] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append(message)

    spelled = await session.call_tool("probe__spell", {"text": "abc"}, progress_callback=progress)
    assert not spelled.isError
    assert [n for n in notes if n in ("a", "b", "c")] == ["a", "b", "c"]
    unknown = await session.call_tool("nobody__nothing", {"text": "x"})
    assert unknown.isError
    assert text_of(unknown).startswith("NOT_FOUND")


async def test_tools_over_streamable_http(tmp_path: Path) -> None:
    async with mcp_mesh(tmp_path) as mesh, http_session(mcp_url(mesh)) as session:
        await check_tools(session)


async def test_tools_over_stdio_through_agentmesh_mcp(tmp_path: Path) -> None:
    async with mcp_mesh(tmp_path) as mesh:
        gateway = mcp_url(mesh).removesuffix("/mcp")
        server = StdioServerParameters(
            command=sys.executable,
            args=["-m", "agentmesh.cli", "mcp", "--gateway", gateway],
            env=service_env(),
        )
        async with (
            stdio_client(server) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await check_tools(session)


def keys_file(tmp_path: Path) -> Path:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"keys:\n  - id: math\n    hash: {hash_key('k-math')}\n"
        "    scopes: {agents: [calculator], skills: [evaluate], workflows: []}\n"
    )
    return keys


async def test_a_call_outside_the_keys_scopes_is_a_tool_error(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    keys = keys_file(tmp_path)
    async with mcp_mesh(flows, auth_required=True, auth_keys_file=keys) as mesh:
        async with http_session(mcp_url(mesh), {"x-api-key": "k-math"}) as session:
            allowed = await session.call_tool("calculator__evaluate", {"text": "2*7**2"})
            denied = await session.call_tool("probe__echo", {"text": "hi"})
            flow = await session.call_tool("workflow__square", {"text": "2"})
        async with http_session(mcp_url(mesh)) as anonymous:
            with pytest.raises(McpError, match="UNAUTHENTICATED"):
                await anonymous.list_tools()
            refused = await anonymous.call_tool("calculator__evaluate", {"text": "1"})
        # the stdio bridge passes on the key from its environment
        gateway = mcp_url(mesh).removesuffix("/mcp")
        server = StdioServerParameters(
            command=sys.executable,
            args=["-m", "agentmesh.cli", "mcp", "--gateway", gateway],
            env=service_env(AGENTMESH_API_KEY="k-math"),
        )
        async with stdio_client(server) as (read, write), ClientSession(read, write) as bridged:
            await bridged.initialize()
            bridged_denied = await bridged.call_tool("probe__echo", {"text": "hi"})
            bridged_allowed = await bridged.call_tool("calculator__evaluate", {"text": "2*7**2"})
    assert text_of(allowed).startswith("98")
    assert denied.isError
    assert text_of(denied).startswith("PERMISSION_DENIED")
    assert flow.isError
    assert "scopes.workflows" in text_of(flow)
    assert refused.isError
    assert text_of(refused).startswith("UNAUTHENTICATED")
    assert bridged_denied.isError
    assert text_of(bridged_denied).startswith("PERMISSION_DENIED")
    assert text_of(bridged_allowed).startswith("98")


async def test_a_changed_set_of_tools_is_announced() -> None:
    """An agent back with another skill: a session that listed the tools hears list_changed."""
    port = free_port()
    changed = asyncio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            changed.set()

    louder = ProbeAgent()
    skills = (*ProbeAgent.card.skills, Skill(id="shout"))
    louder.card = AgentCard(name="probe", description="test agent", skills=skills)
    async with contextlib.AsyncExitStack() as stack:
        first = contextlib.AsyncExitStack()
        await first.enter_async_context(running_agent(ProbeAgent(), port=port))
        stack.push_async_callback(first.aclose)
        gateway, _ = await stack.enter_async_context(
            running_gateway(
                {"probe": [f"127.0.0.1:{port}"]}, http_port=0, card_refresh_interval=0.2
            )
        )
        url = gateway.http_url()
        assert url is not None
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        read, write, _ = await stack.enter_async_context(
            streamable_http_client(f"{url}mcp", http_client=http)
        )
        session = await stack.enter_async_context(
            ClientSession(read, write, message_handler=on_message)
        )
        await session.initialize()
        before = {tool.name for tool in (await session.list_tools()).tools}
        await first.aclose()  # the probe goes; one with a skill more takes its port
        await stack.enter_async_context(running_agent(louder, port=port))
        await asyncio.wait_for(changed.wait(), 30)
        after = {tool.name for tool in (await session.list_tools()).tools}
    assert "probe__shout" not in before
    assert "probe__shout" in after


# -- tool schemas from the cards ----------------------------------------------------------


class Span(BaseModel):
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class MarkOptions(BaseModel):
    top: int = Field(3, ge=1, le=9, description="how many spans to mark")
    style: Literal["bold", "italic"] = "bold"


class MarkInput(BaseModel):
    spans: list[Span]


class Marker(Agent):
    card = AgentCard(
        name="marker",
        description="Marks spans of the text",
        skills=(Skill(id="mark", options=MarkOptions, input=MarkInput),),
    )

    def __init__(self) -> None:
        self.calls: list[Request] = []

    async def invoke(self, request: Request) -> Result:
        self.calls.append(request)
        data = request.message.data
        spans = data["spans"] if isinstance(data, dict) else []
        top = request.int_option("top", 3, minimum=1, maximum=9)
        return Result.of(text=f"{len(spans) if isinstance(spans, list) else 0} spans, top {top}")


async def test_a_skill_tool_takes_the_options_and_input_schemas_of_the_card(
    tmp_path: Path,
) -> None:
    marker = Marker()
    async with (
        running_mesh(marker, CalculatorAgent(), http_port=0) as mesh,
        http_session(mcp_url(mesh)) as session,
    ):
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        schema = tools["marker__mark"].inputSchema
        good = {
            "text": "the quick brown fox",
            "options": {"top": 2, "style": "italic"},
            "data": {"spans": [{"start": 0, "end": 3}]},
        }
        called = await session.call_tool("marker__mark", good)
        typo = await session.call_tool("marker__mark", {"text": "x", "options": {"tpo": 2}})
        mistyped = await session.call_tool("marker__mark", {"text": "x", "options": {"top": "2"}})
        stray = await session.call_tool("marker__mark", {"text": "x", "date": {}})
        calculator = tools["calculator__evaluate"].inputSchema
    options = schema["properties"]["options"]
    assert schema["required"] == ["text"]
    assert options["properties"]["top"]["maximum"] == 9
    assert options["properties"]["top"]["description"] == "how many spans to mark"
    assert options["properties"]["style"]["enum"] == ["bold", "italic"]
    assert options["additionalProperties"] is False  # the agent refuses any other option
    assert schema["properties"]["data"]["properties"]["spans"]["items"] == {
        "$ref": "#/$defs/data.Span"
    }
    assert set(schema["$defs"]) == {"data.Span"}
    # The schema is whole: its references resolve, and it says what the agent takes.
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "options": {"tpo": 2}})
    assert not validator.is_valid({**good, "data": {"spans": [{"start": -1, "end": 3}]}})
    # Every reference agent declares its options: the calculator's are on its tool too.
    assert "properties" in calculator["properties"]["options"]

    assert not called.isError
    assert text_of(called) == "1 spans, top 2"
    (request,) = marker.calls  # the refused calls never reached the agent
    assert request.options == {"top": 2, "style": "italic"}
    assert request.message.data == {"spans": [{"start": 0, "end": 3}]}
    assert typo.isError
    assert text_of(typo) == (
        "INVALID_ARGUMENT: options.tpo: unknown option (did you mean 'top'?); "
        "skill 'mark' of agent 'marker' takes: style, top"
    )
    assert mistyped.isError
    assert text_of(mistyped) == "INVALID_ARGUMENT: options.top: must be an integer"
    assert stray.isError
    assert text_of(stray).startswith("INVALID_ARGUMENT: date: unknown argument of tool")
    assert "(it takes: text, options, data)" in text_of(stray)
