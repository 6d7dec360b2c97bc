"""Model choice per request (the ``model`` option and the allow-list) and prompt templates
per skill (inline or from a file), with agentmesh.testing's FakeModel as the providers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agentmesh.agents._model import PromptConfigError
from agentmesh.agents.assistant.agent import AssistantAgent
from agentmesh.agents.qa.agent import QAAgent
from agentmesh.agents.summarizer.agent import SummarizerAgent
from agentmesh.client import CallError, Final
from agentmesh.llm import LLMClient, LLMSettings, PromptConfig
from agentmesh.testing import FakeModel, running_mesh

ARTICLE = (
    "Solar power capacity grew faster than any other energy source last year. "
    "Cheap panels made from silicon drove most of that growth. "
    "Analysts expect solar capacity to keep growing as panel prices fall further."
)


@pytest.fixture
def models() -> Iterator[tuple[FakeModel, FakeModel]]:
    """Two model servers: ``a`` answers in OpenAI's format, ``b`` in Anthropic's."""
    with FakeModel(default=lambda body: f"a:{body['model']}") as a:
        with FakeModel(default=lambda body: f"b:{body['model']}") as b:
            yield a, b


def allow_list(a: FakeModel, b: FakeModel) -> LLMSettings:
    """The chain is gpt-4o on ``a``; ``fast`` is gpt-4o-mini on ``a``, ``careful`` Claude on
    ``b`` (one by a provider config, one by the ``provider: KIND`` shorthand)."""
    return LLMSettings.model_validate(
        {
            "providers": [a.config("openai", model="gpt-4o")],
            "models": {
                "fast": a.config("openai", model="gpt-4o-mini"),
                "careful": {
                    "provider": "anthropic",
                    "model": "claude-3-5-sonnet-latest",
                    "base_url": b.url,
                    "api_key": FakeModel.api_key,
                },
            },
        }
    )


async def test_the_model_option_sends_the_call_to_the_model_the_allow_list_maps_it_to(
    models: tuple[FakeModel, FakeModel],
) -> None:
    a, b = models
    async with (
        LLMClient(allow_list(a, b)) as llm,
        running_mesh(AssistantAgent(llm)) as mesh,
    ):
        careful = await mesh.client.invoke("assistant", "Hi", options={"model": "careful"})
        fast = await mesh.client.invoke("assistant", "Hi", options={"model": "fast"})
        default = await mesh.client.invoke("assistant", "Hi")
        streamed = [
            e async for e in mesh.client.stream("assistant", "Hi", options={"model": "careful"})
        ]
        with pytest.raises(CallError) as refused:
            await mesh.client.invoke("assistant", "Hi", options={"model": "gpt-5"})
    assert careful.text == "b:claude-3-5-sonnet-latest"
    assert careful.metadata["llm"]["provider"] == "anthropic:claude-3-5-sonnet-latest"
    assert fast.text == "a:gpt-4o-mini"
    assert default.text == "a:gpt-4o"  # the choice held for that call only
    assert [r.path for r in b.requests] == ["/v1/messages", "/v1/messages"]
    assert [r.json["model"] for r in a.requests] == ["gpt-4o-mini", "gpt-4o"]
    final = streamed[-1]
    assert isinstance(final, Final)
    assert final.reply.text == "b:claude-3-5-sonnet-latest"
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.message == (
        "agent 'assistant': options.model: model 'gpt-5' is not allowed here; "
        "allowed: fast, careful"
    )
    assert len(a.requests) + len(b.requests) == 4  # the refused call reached no model


async def test_an_agent_without_an_allow_list_refuses_any_model_even_offline() -> None:
    async with running_mesh(SummarizerAgent(LLMClient(LLMSettings()))) as mesh:
        offline = await mesh.client.invoke("summarizer", ARTICLE, options={"sentences": 1})
        with pytest.raises(CallError) as refused:
            await mesh.client.invoke("summarizer", ARTICLE, options={"model": "fast"})
        with pytest.raises(CallError) as mistyped:
            await mesh.client.invoke("summarizer", ARTICLE, options={"model": 4})
    assert offline.text  # TextRank
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "model 'fast' is not allowed here: no model may be chosen" in refused.value.message
    assert mistyped.value.message.endswith("options.model: must be a string")


def test_a_bad_allow_list_entry_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"models\['quick'\]: provider 'openia' is neither"):
        LLMSettings.model_validate({"models": {"quick": {"provider": "openia", "model": "x"}}})
    with pytest.raises(ValueError, match="is not a model name"):
        LLMSettings.model_validate({"models": {"a b": {"provider": "mock"}}})


def test_an_allow_list_entry_may_start_from_a_provider_of_the_chain() -> None:
    settings = LLMSettings.model_validate(
        {
            "providers": [
                {"kind": "openai", "name": "vllm", "model": "qwen2.5-7b",
                 "base_url": "http://vllm:8000/v1", "max_retries": 1},
            ],
            "models": {"big": {"provider": "vllm", "model": "qwen2.5-72b"}},
        }
    )  # fmt: skip
    big = settings.models["big"]
    assert (big.kind, big.base_url, big.model, big.max_retries) == (
        "openai",
        "http://vllm:8000/v1",
        "qwen2.5-72b",
        1,
    )


async def test_a_skill_prompt_from_a_file_and_an_inline_user_template(
    models: tuple[FakeModel, FakeModel], tmp_path: Path
) -> None:
    a, _ = models
    system = tmp_path / "qa-system.txt"
    system.write_text("You are ${agent} for the ${team} team. Cite the context.")
    prompts = {
        "qa/answer": PromptConfig(
            system_file=system,
            user="Q: ${question}\n---\n${context}",
            variables={"team": "support"},
        )
    }
    settings = LLMSettings(providers=[a.config("openai")], prompts=prompts)
    async with (
        LLMClient(settings) as llm,
        running_mesh(QAAgent(llm, prompts=settings.prompts)) as mesh,
    ):
        await mesh.client.invoke("qa", ARTICLE, options={"question": "What grew?"})
        await mesh.client.invoke(
            "qa", ARTICLE, options={"question": "Why?"}, metadata={"team": "sales"}
        )
    first, second = (r.json["messages"] for r in a.requests)
    assert first[0] == {
        "role": "system",
        "content": "You are qa for the support team. Cite the context.",
    }
    assert first[1] == {"role": "user", "content": f"Q: What grew?\n---\n{ARTICLE}"}
    assert second[0]["content"] == "You are qa for the sales team. Cite the context."


def test_a_template_naming_an_unknown_placeholder_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(PromptConfigError) as user:
        SummarizerAgent(prompts={"summarizer/summarize": PromptConfig(user="${txt}")})
    assert str(user.value) == (
        "prompts['summarizer/summarize']: user template: unknown placeholder(s) ${txt} "
        "(known: agent, audience, language, sentences, skill, text; declare one under "
        "variables to fill it from the request's metadata)"
    )
    with pytest.raises(PromptConfigError, match=r"agent 'summarizer' has no skill 'summary'"):
        SummarizerAgent(prompts={"summarizer/summary": "Summarize."})
    with pytest.raises(ValueError, match=r"system_file '.*missing\.txt' cannot be read"):
        LLMSettings(prompts={"qa": {"system_file": str(tmp_path / "missing.txt")}})
    # Another agent's prompts are not this agent's business (one environment serves all).
    SummarizerAgent(prompts={"qa/answer": "${anything}"})


async def test_a_bad_prompt_setting_stops_the_agent_at_startup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTMESH_LLM_PROVIDER", "mock")
    monkeypatch.setenv("AGENTMESH_LLM_PROMPTS", json.dumps({"summarizer": "In ${lang}."}))
    with pytest.raises(SystemExit) as stopped:
        await SummarizerAgent().startup()
    assert str(stopped.value).startswith(
        "summarizer: AGENTMESH_LLM_PROMPTS: prompts['summarizer']: system template: "
        "unknown placeholder(s) ${lang}"
    )
