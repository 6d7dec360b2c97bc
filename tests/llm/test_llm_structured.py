"""Structured output: JSON extraction, validation and the single repair attempt."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from pydantic import BaseModel, Field

from agentmesh.llm import (
    ChatRequest,
    JSONExtractionError,
    StructuredOutputError,
    complete_json,
    extract_json,
    to_agent_error,
)
from agentmesh.runtime.errors import ErrorCode

if TYPE_CHECKING:
    from llm.fakellm import FakeLLMServer, MakeClient


class Person(BaseModel):
    name: str
    age: int = Field(ge=0)


REQUEST = ChatRequest.from_prompt("Who wrote Dune?", system="Answer with data.")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ("  [1, 2]\n", [1, 2]),
        ('Here you go:\n```json\n{"a": 1}\n```\nAnything else?', {"a": 1}),
        ('```\n{"a": 2}\n```', {"a": 2}),
        ('<json>{"a": 3}</json>', {"a": 3}),
        ('Sure! <JSON>\n[{"a": 4}]\n</JSON> done', [{"a": 4}]),
        ('The answer is {"a": 5} as requested.', {"a": 5}),
        ('Broken {"a": } then {"b": [1, {"c": 2}]} trailing', {"b": [1, {"c": 2}]}),
        ('```python\nx = {"not": "this"}\n```\n<json>{"a": 6}</json>', {"a": 6}),
        ('```json\nnot json\n```\nbut later {"a": 7}', {"a": 7}),
    ],
)
def test_extract_json(text: str, expected: object) -> None:
    assert extract_json(text) == expected


@pytest.mark.parametrize("text", ["", "no json here", "{unclosed", "```json\n{\n```"])
def test_extract_json_refuses_text_without_json(text: str) -> None:
    with pytest.raises(JSONExtractionError):
        extract_json(text)


async def test_valid_output_needs_one_request(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text('Sure:\n```json\n{"name": "Frank Herbert", "age": 65}\n```')
    client = make_client(fake_llm.config("openai"))

    person, response = await complete_json(client, REQUEST, Person)

    assert person == Person(name="Frank Herbert", age=65)
    assert response.provider == "openai:gpt-4o-mini"
    (request,) = fake_llm.requests
    body = request.json
    assert body["response_format"] == {"type": "json_object"}
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "system", "user"]
    schema_prompt = body["messages"][1]["content"]
    assert json.dumps(Person.model_json_schema(), separators=(",", ":")) in schema_prompt


async def test_invalid_output_is_repaired_once(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text('{"name": "Frank Herbert"}', prompt_tokens=10, completion_tokens=5)
    fake_llm.reply_text(
        '{"name": "Frank Herbert", "age": 65}', prompt_tokens=30, completion_tokens=9
    )
    client = make_client(fake_llm.config("anthropic"))

    person, response = await complete_json(client, REQUEST, Person)

    assert person.age == 65
    assert len(fake_llm.requests) == 2
    repair = fake_llm.requests[1].json["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"name": "Frank Herbert"}'}
    assert repair[-1]["role"] == "user"
    assert "age: Field required" in repair[-1]["content"]
    # Usage and attempts cover both requests.
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (40, 14)
    assert len(response.attempts) == 2


async def test_output_still_invalid_after_the_repair_is_rejected(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text("I think it was Frank Herbert.")
    fake_llm.reply_text('{"name": "Frank Herbert", "age": -1}')
    fake_llm.reply_text('{"name": "never asked", "age": 1}')
    client = make_client(fake_llm.config("openai"))

    with pytest.raises(StructuredOutputError) as caught:
        await complete_json(client, REQUEST, Person)

    error = caught.value
    assert len(fake_llm.requests) == 2
    assert "no JSON object or array" in fake_llm.requests[1].json["messages"][-1]["content"]
    assert error.schema == "Person"
    assert error.problems == ("age: Input should be greater than or equal to 0",)
    assert str(error) == (
        "model output did not match schema 'Person' after one repair attempt: "
        "age: Input should be greater than or equal to 0"
    )
    assert error.text == '{"name": "Frank Herbert", "age": -1}'
    assert to_agent_error(error).code is ErrorCode.INTERNAL


async def test_the_first_candidate_that_validates_wins(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text('See [1]. Result: {"name": "A", "age": 3}')
    client = make_client(fake_llm.config("openai"))

    person, _ = await complete_json(client, REQUEST, Person, include_schema=False)

    assert person == Person(name="A", age=3)
    assert len(fake_llm.requests[0].json["messages"]) == 2
