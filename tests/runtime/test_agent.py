"""The agent-author API without any server: handlers, streams, options."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentmesh.runtime import (
    Agent,
    AgentCard,
    AgentError,
    DataPart,
    InvalidInput,
    Message,
    NotFound,
    Partial,
    Request,
    Result,
    Skill,
    StreamItem,
    TextPart,
    Usage,
    agent,
    collect,
)

CARD = AgentCard(name="t", description="test", skills=(Skill(id="a"), Skill(id="b")))


def req(text: str = "hello", **options: object) -> Request:
    return Request(skill="a", message=Message(parts=(TextPart(text),)), options=options)


async def test_decorated_function_is_an_agent() -> None:
    @agent(CARD)
    async def upper(request: Request) -> Result:
        return Result.of(text=request.text.upper(), data={"n": len(request.text)})

    assert upper.card.name == "t"
    assert not upper.streams_natively
    result = await upper.invoke(req())
    assert result.text == "HELLO"
    assert result.data == {"n": 5}
    streamed = [item async for item in upper.stream(req())]
    assert streamed == [result]


async def test_decorated_generator_streams_and_invoke_assembles() -> None:
    @agent(CARD)
    async def spell(request: Request) -> AsyncIterator[StreamItem]:
        for letter in request.text:
            yield letter
        yield Partial((DataPart({"done": True}),), artifact_id="meta")

    assert spell.streams_natively
    result = await spell.invoke(req("abc"))
    assert [a.artifact_id for a in result.artifacts] == ["result", "meta"]
    assert result.artifacts[0].parts == (TextPart("abc"),)  # deltas merge into one part
    assert result.data == {"done": True}


async def test_a_yielded_result_is_the_answer_and_nothing_may_follow_it() -> None:
    async def items() -> AsyncIterator[StreamItem]:
        yield "draft"
        yield Result.of(text="final", usage=Usage(3, 4, 0.01, "m"))

    result = await collect(items())
    assert result.text == "final"
    assert result.usage.total_tokens == 7

    async def late() -> AsyncIterator[StreamItem]:
        yield Result.of(text="final")
        yield "oops"

    with pytest.raises(AgentError, match="after its final result"):
        await collect(late())


async def test_replacing_partial_output() -> None:
    async def items() -> AsyncIterator[StreamItem]:
        yield "first try"
        yield Partial((TextPart("second"),), append=False)

    assert (await collect(items())).text == "second"


async def test_subclass_must_implement_a_handler() -> None:
    class Empty(Agent):
        card = CARD

    with pytest.raises(NotImplementedError):
        await Empty().invoke(req())


def test_decorator_refuses_a_plain_function() -> None:
    def sync(request: Request) -> Result:
        return Result()

    with pytest.raises(TypeError, match="async"):
        agent(CARD)(sync)  # type: ignore[arg-type]


def test_skill_resolution() -> None:
    class Echo(Agent):
        card = CARD

    assert Echo().resolve_skill("") == "a"
    assert Echo().resolve_skill("b") == "b"
    with pytest.raises(NotFound, match="offers: a, b"):
        Echo().resolve_skill("zzz")


def test_card_needs_a_skill() -> None:
    with pytest.raises(ValueError, match="no skills"):
        AgentCard(name="x", description="", skills=())


@pytest.mark.parametrize(
    ("options", "expected"),
    [({}, 3), ({"n": 7}, 7), ({"n": 7.0}, 7)],
)
def test_int_option_accepts_whole_numbers(options: dict[str, object], expected: int) -> None:
    request = Request(skill="a", message=Message(), options=options)
    assert request.int_option("n", 3, minimum=1, maximum=10) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (7.5, "whole number"),
        (True, "must be a number"),
        ("7", "must be a number"),
        (float("nan"), "must be a number"),
        (11, "from 1 to 10"),
        (0, "from 1 to 10"),
    ],
)
def test_bad_int_option_names_the_field(value: object, problem: str) -> None:
    request = Request(skill="a", message=Message(), options={"n": value})
    with pytest.raises(InvalidInput) as info:
        request.int_option("n", 3, minimum=1, maximum=10)
    assert info.value.field == "options.n"
    assert problem in str(info.value)


def test_other_options_and_text() -> None:
    request = Request(
        skill="a",
        message=Message(parts=(TextPart("one"), DataPart({"k": 1}), TextPart("two"))),
        options={"mode": "fast", "flag": True, "bad": 3},
    )
    assert request.text == "one\n\ntwo"
    assert request.message.data == {"k": 1}
    assert request.str_option("mode", "slow", choices=("fast", "slow")) == "fast"
    assert request.bool_option("flag", False) is True
    with pytest.raises(InvalidInput, match=r"options\.bad: must be a string"):
        request.str_option("bad", "")
    with pytest.raises(InvalidInput, match=r"options\.mode: must be one of: a, b"):
        request.str_option("mode", "a", choices=("a", "b"))
    with pytest.raises(InvalidInput, match="the limit is 3"):
        request.require_text(max_chars=3)
    assert request.time_remaining() is None
