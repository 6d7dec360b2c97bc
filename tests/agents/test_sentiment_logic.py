"""Tests for the lexicon-based sentiment analyzer."""

from __future__ import annotations

import json

import pytest

from agentmesh.agents.sentiment.logic import (
    LEXICON,
    MAX_TEXT_CHARS,
    NEUTRAL_THRESHOLD,
    analyze,
    label_for,
)
from agentmesh.runtime.errors import InvalidInput, LimitExceeded


def score(text: str) -> float:
    return analyze(text).score


def test_lexicon_is_substantial_and_in_range() -> None:
    assert len(LEXICON) >= 300
    assert all(-4.0 <= v <= 4.0 and v != 0 for v in LEXICON.values())


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("This is good", "positive"),
        ("This is not good", "negative"),
        ("The service was terrible.", "negative"),
        ("The sky is blue.", "neutral"),
        ("good but terrible", "negative"),
        ("terrible but good", "positive"),
        ("It isn't bad at all.", "positive"),
        ("No problems at all.", "positive"),
        ("Without doubt the best pizza in town!", "positive"),
        ("I was loving it", "positive"),
    ],
)
def test_labels(text: str, label: str) -> None:
    assert analyze(text).label == label


def test_intensifiers_and_diminishers() -> None:
    assert score("very good") > score("good") > score("slightly good") > 0
    assert score("extremely bad") < score("bad") < score("barely bad") < 0


def test_negation_flips_and_dampens() -> None:
    good, not_good = score("good"), score("not good")
    assert not_good < 0
    assert abs(not_good) < abs(good)
    # Negation reaches a few words ahead but not across a comma.
    assert score("It is never very good") < 0
    assert score("Not once did the long wait feel good") > 0  # "not" is too far back
    assert score("Not now, the food was good") > 0


def test_but_weights_the_second_clause() -> None:
    assert score("The room was great but the staff were rude") < 0
    assert score("The staff were rude but the room was great") > 0


def test_exclamation_and_capitals_add_emphasis() -> None:
    assert score("good!!!") > score("good!") > score("good")
    assert score("The food was GREAT") > score("The food was great")
    assert score("terrible!!") < score("terrible")


def test_scores_are_bounded() -> None:
    text = "Amazing, wonderful, fantastic, perfect, brilliant! " * 50
    assert 0.99 < score(text) <= 1.0
    assert -1.0 <= score("awful horrible terrible worst " * 50) < -0.99


def test_per_sentence_results_and_terms() -> None:
    report = analyze("The hotel was lovely. The breakfast was awful. We arrived on Monday.")
    assert [s.label for s in report.sentences] == ["positive", "negative", "neutral"]
    assert report.sentences[2].score == 0.0
    assert report.positive_terms == ("lovely",)
    assert report.negative_terms == ("awful",)


def test_negated_terms_are_reported_by_their_effect() -> None:
    report = analyze("This is not good.")
    assert report.negative_terms == ("good",)
    assert report.positive_terms == ()


def test_label_threshold() -> None:
    assert label_for(NEUTRAL_THRESHOLD) == "positive"
    assert label_for(-NEUTRAL_THRESHOLD) == "negative"
    assert label_for(0.049) == "neutral"


def test_to_dict_is_json_serializable() -> None:
    data = analyze("Great phone, but the battery is weak!").to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"label", "score", "sentences", "positive_terms", "negative_terms"}
    assert data["positive_terms"] == ["great"]
    assert data["negative_terms"] == ["weak"]


@pytest.mark.parametrize("text", ["", "  \n "])
def test_empty_text_is_invalid(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        analyze(text)
    assert info.value.field == "text"


def test_text_over_the_limit() -> None:
    with pytest.raises(LimitExceeded):
        analyze("good " * (MAX_TEXT_CHARS // 5 + 1))
