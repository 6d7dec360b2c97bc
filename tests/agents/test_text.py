"""Tests for the shared text utilities."""

from __future__ import annotations

import pytest

from agentmesh.agents._text import (
    STOPWORDS,
    content_terms,
    normalize_text,
    normalize_word,
    split_paragraphs,
    split_sentences,
    stem,
    tokenize,
    word_set,
)


def test_split_sentences_basic_terminators() -> None:
    text = "It rained. Did it stop? No! We stayed inside."
    assert split_sentences(text) == ["It rained.", "Did it stop?", "No!", "We stayed inside."]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Dr. Smith went to Washington. He arrived late.",
            ["Dr. Smith went to Washington.", "He arrived late."],
        ),
        (
            "Some fruit, e.g. apples, are red. Others are not.",
            ["Some fruit, e.g. apples, are red.", "Others are not."],
        ),
        (
            "Pi is about 3.14 and e is 2.718. Both are irrational.",
            ["Pi is about 3.14 and e is 2.718.", "Both are irrational."],
        ),
        (
            "The U.S. Army is large. It has many soldiers.",
            ["The U.S. Army is large.", "It has many soldiers."],
        ),
        (
            "She moved to the U.S. The move was hard.",
            ["She moved to the U.S.", "The move was hard."],
        ),
        ("See Fig. 2 for details. It is clear.", ["See Fig. 2 for details.", "It is clear."]),
        ("The answer is no. We left.", ["The answer is no.", "We left."]),
        ("John F. Kennedy spoke. People listened.", ["John F. Kennedy spoke.", "People listened."]),
        (
            "Wait... what happened? I waited... Then it came.",
            ["Wait... what happened?", "I waited...", "Then it came."],
        ),
        (
            "Prices rose 2.5% in Q4\u2026 Analysts sighed.",
            ["Prices rose 2.5% in Q4\u2026", "Analysts sighed."],
        ),
    ],
)
def test_split_sentences_handles_abbreviations_decimals_and_ellipses(
    text: str, expected: list[str]
) -> None:
    assert split_sentences(text) == expected


def test_split_sentences_keeps_closing_quotes_and_splits_paragraphs() -> None:
    text = 'He said "Stop." Then he left\n\nA heading\n\nLast line.'
    assert split_sentences(text) == ['He said "Stop."', "Then he left", "A heading", "Last line."]


def test_split_sentences_collapses_whitespace_and_ignores_blank_input() -> None:
    assert split_sentences("  One   two\nthree.  ") == ["One two three."]
    assert split_sentences("   \n\n  ") == []


def test_split_paragraphs() -> None:
    assert split_paragraphs("a\n\n \n b\nc\n\n") == ["a", "b\nc"]


def test_tokenize_keeps_contractions_hyphens_and_decimals() -> None:
    text = "Don\u2019t stop: well-known 3.14, 1,000 items (John's)!"
    assert tokenize(text) == ["don't", "stop", "well-known", "3.14", "1,000", "items", "john's"]
    assert tokenize("Hello World", lowercase=False) == ["Hello", "World"]


def test_normalize_text_and_word() -> None:
    assert normalize_text("  caf\u00e9\u00a0 \u201cquoted\u201d \u2026\n\n  next  ") == (
        'café "quoted" ...\n\nnext'
    )
    assert normalize_word("Don\u2019T") == "don't"


@pytest.mark.parametrize(
    ("words", "common"),
    [
        (["study", "studies"], "study"),
        (["run", "runs", "running"], "run"),
        (["create", "creates", "created", "creating"], "creat"),
        (["box", "boxes"], "box"),
        (["class", "classes"], "class"),
    ],
)
def test_stem_conflates_inflections(words: list[str], common: str) -> None:
    assert {stem(w) for w in words} == {common}


def test_stem_leaves_short_and_non_alphabetic_words() -> None:
    assert stem("is") == "is"
    assert stem("analysis") == "analysis"
    assert stem("3.14") == "3.14"
    assert stem("eiffel's") == "eiffel"


def test_content_terms_drop_stopwords_and_stem() -> None:
    assert content_terms("Which towers are the tallest ones?") == ["tower", "tallest", "one"]
    assert {"the", "what", "not", "is"} <= STOPWORDS


def test_word_set() -> None:
    assert word_set(" a b\n a ") == frozenset({"a", "b"})


def test_a_run_of_terminators_is_one_boundary_or_none() -> None:
    # Runs are matched whole from their first character: a long run of dots
    # glued to a word ends nothing, one followed by a space ends a sentence.
    assert split_sentences("." * 5000 + "a b. Next") == ["." * 5000 + "a b.", "Next"]
    assert split_sentences("Really?!... Yes") == ["Really?!...", "Yes"]
    assert split_sentences("No!!!x Yes.) Fine") == ["No!!!x Yes.)", "Fine"]
