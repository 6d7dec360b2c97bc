"""Tests for RAKE keywords and regular-expression entities."""

from __future__ import annotations

import itertools
import json

import pytest

from agentmesh.agents.keywords.logic import (
    MAX_ENTITIES,
    MAX_KEYWORDS,
    MAX_TEXT_CHARS,
    Entity,
    analyze,
    extract_entities,
    extract_keywords,
)
from agentmesh.runtime.errors import InvalidInput, LimitExceeded

# The worked example of the RAKE paper (Rose et al., 2010).
RAKE_ABSTRACT = (
    "Compatibility of systems of linear constraints over the set of natural numbers. "
    "Criteria of compatibility of a system of linear Diophantine equations, strict "
    "inequations, and nonstrict inequations are considered. Upper bounds for components "
    "of a minimal set of solutions and algorithms of construction of minimal generating "
    "sets of solutions for all types of systems are given. These criteria and the "
    "corresponding algorithms for constructing a minimal supporting set of solutions can "
    "be used in solving all the considered types of systems and systems of mixed types."
)


def only(text: str, kind: str) -> list[Entity]:
    return [e for e in extract_entities(text) if e.kind == kind]


# --- keywords ---------------------------------------------------------------------


def test_rake_reproduces_the_paper_example() -> None:
    keywords = extract_keywords(RAKE_ABSTRACT, max_keywords=5)
    assert [k.text for k in keywords] == [
        "minimal generating sets",
        "linear diophantine equations",
        "minimal supporting set",
        "minimal set",
        "linear constraints",
    ]
    assert keywords[0].score == pytest.approx(8 + 2 / 3)
    assert keywords[1].score == pytest.approx(8.5)


def test_keywords_are_unique_sorted_and_counted() -> None:
    text = "Machine learning is fun. Machine learning is hard. Deep learning, too."
    keywords = extract_keywords(text)
    texts = [k.text for k in keywords]
    assert len(texts) == len(set(texts))
    assert [k.score for k in keywords] == sorted((k.score for k in keywords), reverse=True)
    counts = {k.text: k.count for k in keywords}
    assert counts["machine learning"] == 2
    assert counts["deep learning"] == 1


def test_phrases_are_split_by_stopwords_numbers_and_punctuation() -> None:
    texts = {k.text for k in extract_keywords("Fast cars, 42 red bikes; and the open road")}
    assert texts == {"fast cars", "red bikes", "open road"}


def test_phrases_longer_than_four_words_are_dropped() -> None:
    texts = {k.text for k in extract_keywords("Alpha beta gamma delta epsilon. Short phrase.")}
    assert texts == {"short phrase"}


def test_hyphenated_words_stay_whole() -> None:
    assert [k.text for k in extract_keywords("A well-known open-source project.")] == [
        "well-known open-source project"
    ]


def test_max_keywords_limits_output() -> None:
    assert len(extract_keywords(RAKE_ABSTRACT, max_keywords=3)) == 3


@pytest.mark.parametrize("value", [0, MAX_KEYWORDS + 1, True])
def test_max_keywords_out_of_range(value: int) -> None:
    with pytest.raises(InvalidInput) as info:
        extract_keywords(RAKE_ABSTRACT, max_keywords=value)
    assert info.value.field == "max_keywords"


def test_only_stopwords_give_no_keywords() -> None:
    assert extract_keywords("It is what it is.") == ()


# --- entities ---------------------------------------------------------------------


def test_entity_offsets_match_the_text() -> None:
    text = "Mail ann@example.com by 2024-05-01 about the $1,234.50 invoice (12% off)."
    entities = extract_entities(text)
    assert [(e.kind, e.text) for e in entities] == [
        ("email", "ann@example.com"),
        ("date", "2024-05-01"),
        ("money", "$1,234.50"),
        ("percent", "12%"),
    ]
    for entity in entities:
        assert text[entity.start : entity.end] == entity.text
    assert entities[0].start == 5
    assert entities[0].end == 20


@pytest.mark.parametrize(
    "text",
    ["2024-05-01", "05/01/2024", "1 May 2024", "May 1, 2024", "1st of May 2024", "may 1 2024"],
)
def test_date_formats_normalize_to_iso(text: str) -> None:
    (entity,) = extract_entities(f"Due {text}.")
    assert entity.kind == "date"
    assert entity.text == text
    assert entity.value == "2024-05-01"


def test_day_first_slash_date_when_month_first_is_impossible() -> None:
    (entity,) = extract_entities("on 25/12/2023")
    assert entity.value == "2023-12-25"


def test_impossible_dates_are_not_dates() -> None:
    assert only("2024-02-30", "date") == []


@pytest.mark.parametrize(
    ("text", "amount", "currency"),
    [
        ("$1,234.50", 1234.5, "USD"),
        ("EUR 20", 20.0, "EUR"),
        ("20 €", 20.0, "EUR"),
        ("20€", 20.0, "EUR"),
        ("£5", 5.0, "GBP"),
        ("30 dollars", 30.0, "USD"),
        ("USD 7.25", 7.25, "USD"),
    ],
)
def test_money(text: str, amount: float, currency: str) -> None:
    (entity,) = extract_entities(f"It costs {text} today.")
    assert entity.kind == "money"
    assert entity.text == text
    assert entity.value == {"amount": amount, "currency": currency}


def test_percent_and_numbers() -> None:
    entities = extract_entities("Growth was 12.5% or 3 percent; we counted 1,000 and -7 and 3.14.")
    assert [(e.kind, e.value) for e in entities] == [
        ("percent", 12.5),
        ("percent", 3),
        ("number", 1000),
        ("number", -7),
        ("number", 3.14),
    ]
    assert isinstance(entities[2].value, int)
    assert isinstance(entities[4].value, float)


def test_urls_trim_trailing_punctuation_and_normalize_host() -> None:
    text = "See https://Example.ORG/Path?q=1. Or (www.test.io/x)."
    urls = only(text, "url")
    assert [u.text for u in urls] == ["https://Example.ORG/Path?q=1", "www.test.io/x"]
    assert urls[0].value == "https://example.org/Path?q=1"


def test_entities_do_not_overlap() -> None:
    text = "Pay $5 at https://user@host.com/2024 or mail a.b@c.org on 2024-05-01."
    entities = extract_entities(text)
    assert [e.kind for e in entities] == ["money", "url", "email", "date"]
    spans = sorted((e.start, e.end) for e in entities)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start
    # The "5" of "$5" and the "2024" in the URL path are not numbers too.
    assert only(text, "number") == []


def test_version_strings_and_words_with_digits_are_not_numbers() -> None:
    assert extract_entities("Version 3.14.15 of A4 paper") == ()


def test_email_value_lowercases_the_domain() -> None:
    (entity,) = extract_entities("Write to John.Doe@Example.COM")
    assert entity.kind == "email"
    assert entity.value == "John.Doe@example.com"


def test_max_entities_truncates() -> None:
    text = " ".join(str(i) for i in range(MAX_ENTITIES + 5))
    assert len(extract_entities(text, max_entities=3)) == 3
    report = analyze(text)
    assert len(report.entities) == MAX_ENTITIES
    assert report.entities_truncated


# --- report and validation --------------------------------------------------------


def test_analyze_returns_both_and_serializes() -> None:
    report = analyze("Natural language processing costs $20 per hour.", max_keywords=2)
    assert report.keywords[0].text == "natural language processing costs"
    assert [e.kind for e in report.entities] == ["money"]
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["entities"][0] == {
        "kind": "money",
        "text": "$20",
        "start": 34,
        "end": 37,
        "value": {"amount": 20.0, "currency": "USD"},
    }
    assert data["entities_truncated"] is False


@pytest.mark.parametrize("function", [extract_keywords, extract_entities, analyze])
def test_empty_text_is_invalid(function: object) -> None:
    assert callable(function)
    with pytest.raises(InvalidInput) as info:
        function(" ")
    assert info.value.field == "text"


def test_text_over_the_limit() -> None:
    with pytest.raises(LimitExceeded):
        analyze("x" * (MAX_TEXT_CHARS + 1))


def test_an_email_starts_where_its_local_part_can_start() -> None:
    entities = extract_entities("mail a%b@example.com or " + "a%" * 500 + " d@e.com")
    assert [e.text for e in entities if e.kind == "email"] == ["a%b@example.com", "d@e.com"]
