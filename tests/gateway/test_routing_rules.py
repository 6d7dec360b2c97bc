"""Declared routes, the router agent, the default route and the response cache."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from meshtest import ProbeAgent, running_agent, running_gateway, wait_until

from agentmesh.gateway import Gateway, GatewaySettings
from agentmesh.gateway.cache import MemoryCache, cache_key
from agentmesh.gateway.config import ConfigError, GatewayConfig, load_config
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill
from agentmesh.runtime.wire import dict_to_struct, result_from_proto
from agentmesh.v1 import gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb


class Named(Agent):
    """Answers with its own name and counts calls; ``route`` answers ``self.choice``."""

    def __init__(self, name: str, version: str = "1.0", choice: Any = None) -> None:
        self.card = AgentCard(
            name=name,
            version=version,
            description="test",
            skills=(Skill(id="answer"), Skill(id="route")),
        )
        self.calls = 0
        self.choice = choice

    async def invoke(self, request: Request) -> Result:
        self.calls += 1
        if request.skill == "route":
            if isinstance(self.choice, str):
                return Result.of(text=self.choice)
            return Result.of(data=self.choice)
        return Result.of(text=f"{self.card.name}:{request.skill}:{self.calls}")


@contextlib.asynccontextmanager
async def gateway_with(
    agents: Mapping[str, Agent], extra: Mapping[str, Any], **settings: Any
) -> AsyncIterator[gateway_pb2_grpc.GatewayAsyncStub]:
    """Serve ``agents`` and a gateway whose config adds ``extra`` (routes, cache...)."""
    async with contextlib.AsyncExitStack() as stack:
        declared: dict[str, Any] = {}
        for name, agent in agents.items():
            _, address = await stack.enter_async_context(running_agent(agent))
            declared[name] = {"addresses": [address], **extra.get("agent_fields", {}).get(name, {})}
        raw = {k: v for k, v in extra.items() if k != "agent_fields"}
        config = GatewayConfig.model_validate({"agents": declared, **raw})
        gateway = Gateway(GatewaySettings(port=0, **settings), config)
        port = await gateway.start()
        stack.push_async_callback(gateway.stop, 0)
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        yield gateway_pb2_grpc.GatewayStub(channel)


def ask(text: str, **metadata: Any) -> pb.InvokeRequest:
    request = pb.InvokeRequest()
    request.message.parts.add(text=text)
    if metadata:
        dict_to_struct(metadata, request.message.metadata)
    return request


ROUTES = {
    "routes": [
        {"name": "python", "priority": 5, "match": {"keywords": ["def", "lambda"]},
         "to": {"agent": "coder", "skill": "answer"}},
        {"name": "urgent", "priority": 10, "match": {"pattern": r"(?i)\burgent\b"},
         "to": {"agent": "oncall"}},
        {"name": "french", "match": {"metadata": {"lang": "fr"}}, "to": {"agent": "traducteur"}},
    ],
}  # fmt: skip


async def answer(stub: gateway_pb2_grpc.GatewayAsyncStub, request: pb.InvokeRequest) -> str:
    return result_from_proto(await stub.Invoke(request, timeout=10)).text


async def test_declared_routes_by_keyword_pattern_metadata_and_priority() -> None:
    agents = {n: Named(n) for n in ("coder", "oncall", "traducteur", "general")}
    extra = {**ROUTES, "default_route": {"agent": "general", "skill": "answer"}}
    async with gateway_with(agents, extra) as stub:
        assert await answer(stub, ask("what does def do?")) == "coder:answer:1"
        # Whole words only: "define" is not "def".
        assert await answer(stub, ask("define routing")) == "general:answer:1"
        # Both rules match; the higher priority wins.
        assert await answer(stub, ask("URGENT: def is broken")) == "oncall:answer:1"
        assert await answer(stub, ask("bonjour", lang="fr")) == "traducteur:answer:1"
        assert await answer(stub, ask("bonjour", lang="de")) == "general:answer:2"
        # A request naming its agent bypasses the rules.
        named = ask("def f(): pass")
        named.agent = "general"
        assert await answer(stub, named) == "general:answer:3"


async def test_router_agent_picks_the_target_when_no_rule_matches() -> None:
    agents = {
        "coder": Named("coder"),
        "general": Named("general"),
        "picker": Named("picker", choice={"agent": "general", "skill": "answer"}),
    }
    extra = {"routes": [_only_coder()], "router": {"agent": "picker", "skill": "route"}}
    async with gateway_with(agents, extra) as stub:
        assert await answer(stub, ask("lambda x: x")) == "coder:answer:1"
        assert await answer(stub, ask("hello there")) == "general:answer:1"
    assert agents["picker"].calls == 1


def _only_coder() -> dict[str, Any]:
    return {"name": "python", "match": {"keywords": ["lambda"]}, "to": {"agent": "coder"}}


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ({"agent": "ghost"}, "router agent 'picker' chose an unusable target: agent 'ghost'"),
        ("", "router agent 'picker' gave no target"),
    ],
)
async def test_router_agent_with_a_bad_answer_is_a_failed_precondition(
    choice: Any, message: str
) -> None:
    agents = {"picker": Named("picker", choice=choice), "general": Named("general")}
    async with gateway_with(agents, {"router": {"agent": "picker", "skill": "route"}}) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Invoke(ask("anything"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert message in (caught.value.details() or "")


async def test_router_answering_text_agent_slash_skill() -> None:
    agents = {"picker": Named("picker", choice="general/answer"), "general": Named("general")}
    async with gateway_with(agents, {"router": {"agent": "picker", "skill": "route"}}) as stub:
        assert await answer(stub, ask("hi")) == "general:answer:1"


async def test_no_route_and_no_default_names_what_to_set() -> None:
    async with gateway_with({"coder": Named("coder")}, {"routes": [_only_coder()]}) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Invoke(ask("plain words"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "agent: no declared route matched; set agent or skill to say which agent should answer"
    )


@pytest.mark.parametrize(
    ("yaml_text", "problem"),
    [
        (
            "agents: {a: {address: 'x:1'}}\n"
            "routes: [{name: r, match: {keywords: [k]}, to: {agent: nobody}}]\n",
            "routes.r.to: agent 'nobody' is not declared under agents",
        ),
        (
            "agents: {a: {address: 'x:1'}}\n"
            "routes: [{name: r, match: {pattern: '(unclosed'}, to: {agent: a}}]\n",
            "is not a valid regular expression",
        ),
        (
            "agents: {a: {address: 'x:1'}}\nroutes: [{name: r, match: {}, to: {agent: a}}]\n",
            "give keywords, pattern or metadata",
        ),
        (
            "agents: {a: {address: 'x:1'}}\ndefault_route: {}\n",
            "set agent and/or skill, or workflow, or fan_out",
        ),
        (
            "agents: {a: {address: 'x:1'}}\n"
            "routes: [{name: r, match: {keywords: [k]}, to: {agent: a}},"
            " {name: r, match: {keywords: [j]}, to: {agent: a}}]\n",
            "duplicate route names r",
        ),
    ],
)
def test_bad_routes_are_config_errors(tmp_path: Path, yaml_text: str, problem: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match="invalid gateway config") as caught:
        load_config(path, environ={})
    assert problem in str(caught.value)


# -- response cache ---------------------------------------------------------


async def invoke_with_trailer(
    stub: gateway_pb2_grpc.GatewayAsyncStub,
    request: pb.InvokeRequest,
    metadata: tuple[tuple[str, str], ...] = (),
) -> tuple[str, str | None]:
    call = stub.Invoke(request, timeout=10, metadata=metadata)
    response = await call
    trailer = dict(await call.trailing_metadata() or ()).get("x-agentmesh-cache")
    return result_from_proto(response).text, None if trailer is None else str(trailer)


async def test_agent_cache_serves_repeats_and_respects_options_and_no_cache() -> None:
    slow = Named("expensive")
    fields = {"agent_fields": {"expensive": {"cache": {"ttl": 300}}}}
    async with gateway_with({"expensive": slow}, fields) as stub:
        request = ask("same question")
        request.agent = "expensive"
        assert await invoke_with_trailer(stub, request) == ("expensive:answer:1", "miss")
        assert await invoke_with_trailer(stub, request) == ("expensive:answer:1", "hit")
        # Ids differ on every call and are not part of the key.
        request.message.message_id = "another-id"
        assert await invoke_with_trailer(stub, request) == ("expensive:answer:1", "hit")
        # Options are part of the key.
        other = pb.InvokeRequest()
        other.CopyFrom(request)
        dict_to_struct({"depth": 2}, other.options)
        assert await invoke_with_trailer(stub, other) == ("expensive:answer:2", "miss")
        # cache-control: no-cache answers fresh and refreshes the entry.
        fresh = await invoke_with_trailer(stub, request, (("cache-control", "no-cache"),))
        assert fresh == ("expensive:answer:3", "miss")
        assert await invoke_with_trailer(stub, request) == ("expensive:answer:3", "hit")
    assert slow.calls == 3


async def test_cache_is_opt_in_per_route_and_per_skill() -> None:
    agents = {"coder": Named("coder"), "general": Named("general")}
    extra = {
        "routes": [{**_only_coder(), "cache": {"ttl": 60}}],
        "agent_fields": {"general": {"cache": {"ttl": 60, "skills": ["route"]}}},
    }
    async with gateway_with(agents, extra) as stub:
        assert await invoke_with_trailer(stub, ask("lambda")) == ("coder:answer:1", "miss")
        assert await invoke_with_trailer(stub, ask("lambda")) == ("coder:answer:1", "hit")
        # Direct calls to coder are not cached: coder itself did not opt in.
        direct = ask("lambda")
        direct.agent = "coder"
        assert await invoke_with_trailer(stub, direct) == ("coder:answer:2", None)
        # general caches only its `route` skill.
        plain = ask("x")
        plain.agent, plain.skill = "general", "answer"
        assert await invoke_with_trailer(stub, plain) == ("general:answer:1", None)
        assert await invoke_with_trailer(stub, plain) == ("general:answer:2", None)


async def test_redis_cache_is_shared_by_two_gateways(redis_db: str) -> None:
    agent = Named("expensive")
    fields = {"agent_fields": {"expensive": {"cache": {"ttl": 300}}}}
    request = ask("shared question")
    request.agent = "expensive"
    async with gateway_with({"expensive": agent}, fields, redis_url=redis_db) as first:
        assert await invoke_with_trailer(first, request) == ("expensive:answer:1", "miss")
    async with gateway_with({"expensive": agent}, fields, redis_url=redis_db) as second:
        assert await invoke_with_trailer(second, request) == ("expensive:answer:1", "hit")
    assert agent.calls == 1


def test_cache_key_depends_on_agent_version_skill_and_content_only() -> None:
    request = ask("text", lang="en")
    base = cache_key("a", "1.0", "s", request)
    assert base.startswith("agentmesh:cache:v1:a:1.0:")
    renamed = pb.InvokeRequest()
    renamed.CopyFrom(request)
    renamed.message.message_id, renamed.message.context_id = "m1", "c1"
    assert cache_key("a", "1.0", "s", renamed) == base
    assert cache_key("a", "1.1", "s", request) != base  # a redeployed agent starts afresh
    assert cache_key("a", "1.0", "t", request) != base
    assert cache_key("b", "1.0", "s", request) != base
    assert cache_key("a", "1.0", "s", ask("text", lang="fr")) != base


async def test_memory_cache_expires_entries_and_evicts_least_recently_used() -> None:
    now = [0.0]
    cache = MemoryCache(max_entries=2, clock=lambda: now[0])
    one, two, three = (pb.InvokeResponse(agent=n) for n in ("one", "two", "three"))
    await cache.put("k1", one, ttl=10)
    await cache.put("k2", two, ttl=10)
    assert await cache.get("k1") == one  # k1 is now the most recently used
    await cache.put("k3", three, ttl=10)
    assert await cache.get("k2") is None
    assert await cache.get("k1") == one
    now[0] = 10.0
    assert await cache.get("k1") is None  # expired
    assert len(cache) == 1


async def test_memory_cache_bounds_bytes() -> None:
    cache = MemoryCache(max_entries=100, max_bytes=1024)
    big = pb.InvokeResponse(agent="x" * 600)
    await cache.put("a", big, ttl=10)
    await cache.put("b", big, ttl=10)
    assert await cache.get("a") is None
    assert await cache.get("b") == big
    await cache.put("huge", pb.InvokeResponse(agent="y" * 2000), ttl=10)
    assert await cache.get("huge") is None
    assert await cache.get("b") == big


async def test_skill_routing_skips_an_agent_that_is_draining() -> None:
    draining_agent, steady_agent = ProbeAgent("draining"), ProbeAgent("steady")
    async with (
        running_agent(draining_agent, drain_delay=2.0) as (draining_server, draining),
        running_agent(steady_agent) as (_, steady),
        running_gateway({"draining": [draining], "steady": [steady]}) as (gateway, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        stub = gateway_pb2_grpc.GatewayStub(channel)
        # SIGTERM-style drain: health turns NOT_SERVING for drain_delay, calls still served.
        stopping = asyncio.ensure_future(draining_server.stop(5.0))
        entry = gateway.registry.get("draining")
        assert entry is not None
        await wait_until(lambda: entry.draining)
        request = pb.InvokeRequest(skill="echo")
        request.message.parts.add(text="who?")
        answers = [(await stub.Invoke(request, timeout=10)).agent for _ in range(4)]
        await stopping
    assert answers == ["steady"] * 4
    assert draining_agent.seen_remaining == []
