"""The server-sent events parser."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import pytest

from agentmesh.llm import SSEDecoder, SSEEvent, aiter_sse


def _decode(lines: Iterable[str]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return [event for line in lines if (event := decoder.feed(line)) is not None]


def test_data_lines_are_joined_and_dispatched_on_a_blank_line() -> None:
    assert _decode(["data: first", "data: second", "", "data:third", ""]) == [
        SSEEvent("first\nsecond"),
        SSEEvent("third"),
    ]


def test_event_id_retry_and_comments() -> None:
    lines = [
        ": keep-alive comment",
        "event: content_block_delta",
        "id: 42",
        "retry: 1500",
        "data: {}",
        "",
        "data: next",
        "",
    ]
    assert _decode(lines) == [
        SSEEvent("{}", event="content_block_delta", id="42", retry=1500),
        SSEEvent("next", event="message", id="42", retry=1500),
    ]


def test_only_one_leading_space_is_dropped_and_colons_in_values_stay() -> None:
    assert _decode(["data:  two spaces: yes", ""]) == [SSEEvent(" two spaces: yes")]


def test_field_without_colon_and_empty_data() -> None:
    # "data" alone is a data line with an empty value.
    assert _decode(["data", "data", ""]) == [SSEEvent("\n")]


def test_blank_lines_without_data_dispatch_nothing_and_reset_the_type() -> None:
    assert _decode(["event: ping", "", "", "data: x", ""]) == [SSEEvent("x")]


def test_unknown_fields_bad_retry_and_nul_ids_are_ignored() -> None:
    assert _decode(["foo: bar", "retry: soon", "id: a\0b", "data: x", ""]) == [SSEEvent("x")]


def test_a_leading_bom_is_dropped() -> None:
    assert _decode(["\ufeffdata: x", ""]) == [SSEEvent("x")]


async def _lines(lines: list[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_aiter_sse_discards_an_event_cut_before_its_blank_line() -> None:
    events = [e async for e in aiter_sse(_lines(["data: complete", "", "data: cut"]))]
    assert events == [SSEEvent("complete")]


@pytest.mark.parametrize("done", ["data: [DONE]", "data:[DONE]"])
def test_done_marker_is_plain_data(done: str) -> None:
    assert _decode([done, ""]) == [SSEEvent("[DONE]")]
