"""Prompt templates."""

from __future__ import annotations

import pytest

from agentmesh.llm import PromptTemplateError, render_prompt


def test_substitutes_braced_and_bare_names() -> None:
    template = "You are a ${role}. Answer in $language, costs in $$."
    assert render_prompt(template, {"role": "critic", "language": "French"}) == (
        "You are a critic. Answer in French, costs in $."
    )


def test_values_are_not_expanded_again() -> None:
    assert render_prompt("Topic: ${topic}", {"topic": "${secret}", "secret": "x"}) == (
        "Topic: ${secret}"
    )


def test_unused_variables_are_fine() -> None:
    assert render_prompt("static", {"unused": "x"}) == "static"


def test_unknown_names_are_refused_and_listed() -> None:
    with pytest.raises(PromptTemplateError) as caught:
        render_prompt("${role} speaks ${language} to ${user}", {"role": "a"})
    assert str(caught.value) == ("unknown template variable(s) ${language}, ${user} (known: role)")


def test_malformed_placeholders_are_refused_with_their_position() -> None:
    with pytest.raises(PromptTemplateError, match=r"line 2, column 6"):
        render_prompt("ok\nbad: ${not closed", {})
    with pytest.raises(PromptTemplateError, match="known: none"):
        render_prompt("${x}", {})
