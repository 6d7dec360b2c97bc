"""Tests for the TextRank summarizer."""

from __future__ import annotations

import json
import math
import time
from collections import Counter

import pytest

from agentmesh.agents._text import content_terms
from agentmesh.agents.summarizer.logic import (
    DAMPING,
    MAX_SENTENCES,
    MAX_TEXT_CHARS,
    RankedSentence,
    Summary,
    rank_sentences,
    summarize,
)
from agentmesh.runtime.errors import InvalidInput, LimitExceeded

SOLAR = (
    "Solar power is the conversion of energy from sunlight into electricity. "
    "Solar panels convert sunlight into electricity using photovoltaic cells. "
    "The cost of solar panels has fallen sharply over the last decade. "
    "My neighbour owns a red bicycle. "
    "Cheaper solar panels have made solar electricity competitive with coal. "
    "Many countries now install solar panels on rooftops to produce electricity. "
    "The weather was pleasant on Tuesday."
)


def _reference_textrank(sentences: list[str]) -> list[float]:
    """Textbook TextRank with an explicit dense cosine matrix, for comparison."""
    vectors = [Counter(content_terms(s)) for s in sentences]

    def cosine(a: Counter[str], b: Counter[str]) -> float:
        dot = sum(a[t] * b[t] for t in a)
        if not dot:
            return 0.0
        norm_a = math.sqrt(sum(v * v for v in a.values()))
        norm_b = math.sqrt(sum(v * v for v in b.values()))
        return dot / (norm_a * norm_b)

    n = len(sentences)
    weights = [
        [cosine(vectors[i], vectors[j]) if i != j else 0.0 for j in range(n)] for i in range(n)
    ]
    out = [sum(row) for row in weights]
    scores = [1.0 / n] * n
    for _ in range(500):
        dangling = sum(scores[j] for j in range(n) if out[j] == 0)
        scores = [
            (1 - DAMPING) / n
            + DAMPING * dangling / n
            + DAMPING * sum(weights[j][i] * scores[j] / out[j] for j in range(n) if out[j])
            for i in range(n)
        ]
    return scores


def test_summary_picks_the_central_sentences_in_original_order() -> None:
    result = summarize(SOLAR, max_sentences=2)
    assert isinstance(result, Summary)
    assert result.sentence_count == 7
    indexes = [s.index for s in result.sentences]
    assert indexes == sorted(indexes)
    texts = " ".join(s.text for s in result.sentences)
    assert "bicycle" not in texts
    assert "weather" not in texts
    assert all("solar" in s.text.lower() for s in result.sentences)
    assert result.summary == " ".join(s.text for s in result.sentences)


def test_off_topic_sentences_rank_lowest() -> None:
    scores = rank_sentences(
        [
            "Solar panels convert sunlight into electricity.",
            "Solar electricity is cheap.",
            "My neighbour owns a red bicycle.",
            "Cheap solar panels make electricity.",
        ]
    )
    assert min(range(4), key=lambda i: scores[i]) == 2
    assert math.isclose(sum(scores), 1.0, rel_tol=1e-9)


def test_rank_matches_a_dense_reference_implementation() -> None:
    sentences = [
        "Cats chase mice in the garden.",
        "Mice fear cats and dogs.",
        "Dogs chase cats.",
        "The weather was sunny.",
        "Gardens need water and sun.",
    ]
    ours = rank_sentences(sentences)
    reference = _reference_textrank(sentences)
    for a, b in zip(ours, reference, strict=True):
        assert a == pytest.approx(b, abs=1e-5)


def test_ratio_overrides_max_sentences() -> None:
    result = summarize(SOLAR, max_sentences=1, ratio=0.5)
    assert len(result.sentences) == 4  # round(7 * 0.5) = 4 (half rounds up)
    assert len(summarize(SOLAR, ratio=0.01).sentences) == 1  # never fewer than one
    assert len(summarize(SOLAR, ratio=1.0).sentences) == 7


def test_short_text_is_returned_whole() -> None:
    result = summarize("Only one sentence here. And a second one.", max_sentences=5)
    assert [s.text for s in result.sentences] == ["Only one sentence here.", "And a second one."]
    assert result.summary == "Only one sentence here. And a second one."


def test_disconnected_sentences_tie_and_the_earliest_win() -> None:
    text = "Apples grow on trees. Rivers flow downhill. Stars shine at night."
    result = summarize(text, max_sentences=2)
    assert [s.index for s in result.sentences] == [0, 1]
    assert result.sentences[0].score == pytest.approx(1 / 3)


def test_to_dict_is_json_serializable() -> None:
    data = summarize(SOLAR, max_sentences=1).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"summary", "sentences", "sentence_count"}
    assert set(data["sentences"][0]) == {"index", "text", "score"}


def test_ranked_sentence_is_frozen() -> None:
    sentence = RankedSentence(0, "x", 1.0)
    with pytest.raises(AttributeError):
        sentence.score = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_invalid(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        summarize(text)
    assert info.value.field == "text"


@pytest.mark.parametrize("value", [0, -1, MAX_SENTENCES + 1, True])
def test_max_sentences_out_of_range(value: int) -> None:
    with pytest.raises(InvalidInput) as info:
        summarize(SOLAR, max_sentences=value)
    assert info.value.field == "max_sentences"


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5, math.nan, math.inf])
def test_ratio_out_of_range(value: float) -> None:
    with pytest.raises(InvalidInput) as info:
        summarize(SOLAR, ratio=value)
    assert info.value.field == "ratio"


def test_text_over_the_limit() -> None:
    with pytest.raises(LimitExceeded) as info:
        summarize("a" * (MAX_TEXT_CHARS + 1))
    assert info.value.limit == "text"


def test_large_input_stays_fast() -> None:
    # Every sentence shares "data": a dense similarity graph, which the factored
    # power iteration handles in linear time.
    text = " ".join(f"Data point number{i} was measured today." for i in range(4000))
    assert len(text) <= MAX_TEXT_CHARS
    started = time.perf_counter()
    result = summarize(text, max_sentences=3)
    assert result.sentence_count == 4000
    assert time.perf_counter() - started < 5.0
