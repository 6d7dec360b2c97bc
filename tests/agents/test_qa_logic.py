"""Tests for BM25 extractive question answering."""

from __future__ import annotations

import json
import math

import pytest

from agentmesh.agents.qa.logic import (
    MAX_CONTEXT_CHARS,
    MAX_QUESTION_CHARS,
    MAX_TOP_K,
    Answer,
    answer,
    bm25_scores,
)
from agentmesh.runtime.errors import InvalidInput, LimitExceeded

EIFFEL = (
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower. "
    "Construction of the tower was completed in 1889. "
    "The tower is 330 metres tall. "
    "Paris is the capital of France."
)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Who designed the Eiffel Tower?", "It is named after the engineer Gustave Eiffel"),
        ("How tall is the tower?", "The tower is 330 metres tall."),
        ("When was construction completed?", "Construction of the tower was completed in 1889."),
        ("What is the capital of France?", "Paris is the capital of France."),
    ],
)
def test_answers_with_the_right_sentence(question: str, expected: str) -> None:
    result = answer(question, EIFFEL)
    assert result.answer.startswith(expected)
    assert 0 < result.confidence <= 1
    assert result.supporting[0].text == result.answer


def test_supporting_passages_are_ranked_and_positive() -> None:
    result = answer("Who designed the Eiffel Tower?", EIFFEL, top_k=3)
    assert len(result.supporting) == 3
    scores = [p.score for p in result.supporting]
    assert scores == sorted(scores, reverse=True)
    assert all(s > 0 for s in scores)
    assert result.supporting[0].index == 1
    assert answer("Who designed the Eiffel Tower?", EIFFEL, top_k=1).supporting[0].index == 1


def test_only_matching_sentences_support() -> None:
    result = answer("When was construction completed?", EIFFEL, top_k=5)
    assert [p.index for p in result.supporting] == [2]
    assert result.confidence == 1.0  # full coverage, no competitor


def test_confidence_reflects_coverage_and_margin() -> None:
    full = answer("capital France", EIFFEL).confidence
    partial = answer("capital Germany", EIFFEL).confidence
    assert partial < full
    tied = answer("apples", "I like apples. She likes apples.")
    assert tied.confidence == pytest.approx(0.5)


def test_no_match_is_not_an_error() -> None:
    for question in ["Where do penguins live?", "What is it?"]:
        result = answer(question, EIFFEL)
        assert result == Answer(answer="", confidence=0.0, supporting=())


def test_stemming_matches_inflections() -> None:
    context = "The company builds bridges. The weather is mild."
    assert answer("Who is building bridges?", context).answer == "The company builds bridges."


def test_bm25_matches_the_formula() -> None:
    documents = [["cat", "sat"], ["dog", "sat", "down"], ["bird"]]
    scores = bm25_scores(["cat", "sat"], documents)
    n, average = 3, 6 / 3

    def idf(df: int) -> float:
        return math.log((n - df + 0.5) / (df + 0.5) + 1)

    def part(tf: int, length: int, df: int) -> float:
        return idf(df) * tf * 2.5 / (tf + 1.5 * (1 - 0.75 + 0.75 * length / average))

    assert scores[0] == pytest.approx(part(1, 2, 1) + part(1, 2, 2))
    assert scores[1] == pytest.approx(part(1, 3, 2))
    assert scores[2] == 0.0
    assert bm25_scores(["x"], []) == []


def test_rare_terms_weigh_more() -> None:
    documents = [["common", "rare"], ["common"], ["common"], ["common"]]
    common, rare = bm25_scores(["common"], documents), bm25_scores(["rare"], documents)
    assert rare[0] > common[0] > 0


def test_to_dict_is_json_serializable() -> None:
    data = answer("How tall is the tower?", EIFFEL, top_k=2).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"answer", "confidence", "supporting"}
    assert set(data["supporting"][0]) == {"index", "text", "score"}


@pytest.mark.parametrize(
    ("question", "context", "field"), [("", EIFFEL, "question"), ("Why?", " \n", "context")]
)
def test_empty_inputs_are_invalid(question: str, context: str, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        answer(question, context)
    assert info.value.field == field


@pytest.mark.parametrize("top_k", [0, MAX_TOP_K + 1, True])
def test_top_k_out_of_range(top_k: int) -> None:
    with pytest.raises(InvalidInput) as info:
        answer("tower", EIFFEL, top_k=top_k)
    assert info.value.field == "top_k"


def test_size_limits() -> None:
    with pytest.raises(LimitExceeded) as info:
        answer("q" * (MAX_QUESTION_CHARS + 1), EIFFEL)
    assert info.value.limit == "question"
    with pytest.raises(LimitExceeded) as info:
        answer("tower", "x" * (MAX_CONTEXT_CHARS + 1))
    assert info.value.limit == "context"


def test_documents_with_the_same_terms_score_the_same_in_any_order() -> None:
    query = ["alpha", "beta", "gamma", "delta"]
    scores = bm25_scores(query, [["delta", "gamma", "beta"], ["beta", "gamma", "delta"], ["x"]])
    assert scores[0] == scores[1] > scores[2] == 0.0
