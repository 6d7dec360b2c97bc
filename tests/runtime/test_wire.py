"""Domain types survive the trip through the wire messages."""

from __future__ import annotations

import pytest

from agentmesh.runtime import (
    AgentCard,
    Artifact,
    DataPart,
    FilePart,
    InvalidInput,
    Message,
    Result,
    Skill,
    TextPart,
    Usage,
    wire,
)
from agentmesh.v1 import messages_pb2 as pb


def test_message_round_trip() -> None:
    message = Message(
        parts=(
            TextPart("hi", metadata={"lang": "en"}),
            DataPart({"n": 3, "x": 1.5, "nested": [1, {"a": None}]}),
            FilePart(raw=b"\x00\x01", media_type="image/png", filename="p.png"),
            FilePart(url="https://example.invalid/doc.pdf", media_type="application/pdf"),
        ),
        metadata={"trace": "t"},
        message_id="m1",
    )
    proto = pb.Message()
    wire.message_to_proto(message, proto)
    back = wire.message_from_proto(pb.Message.FromString(proto.SerializeToString()))
    assert back == message
    assert isinstance(back.parts[1], DataPart)
    assert back.parts[1].data["n"] == 3  # integral numbers come back as int
    assert isinstance(back.parts[1].data["n"], int)


def test_result_and_card_round_trip() -> None:
    result = Result(
        artifacts=(Artifact((TextPart("out"),), name="answer", artifact_id="answer"),),
        usage=Usage(10, 5, 0.002, "m"),
        metadata={"k": "v"},
    )
    proto = wire.result_to_proto(result, agent="a", skill="s", task_id="t")
    assert proto.usage.total_tokens == 15
    assert wire.result_from_proto(proto) == result

    card = AgentCard(
        name="a",
        description="d",
        version="2.0.0",
        skills=(Skill(id="s", name="S", tags=("x",), examples=("e",)),),
        extensions=("llm",),
    )
    assert wire.card_from_proto(wire.card_to_proto(card)) == card


def test_limits_and_empty_parts_are_refused() -> None:
    proto = pb.Message(parts=[pb.Part(text="x")] * 3)
    with pytest.raises(InvalidInput, match="3 parts given; the limit is 2"):
        wire.message_from_proto(proto, max_parts=2)
    with pytest.raises(InvalidInput, match=r"message\.parts\[1\]: part has no content"):
        wire.message_from_proto(pb.Message(parts=[pb.Part(text="x"), pb.Part()]))
