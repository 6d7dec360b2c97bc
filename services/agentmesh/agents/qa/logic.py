"""Extractive question answering: the context sentence that best matches the question.

The context is split into sentences (``agentmesh.agents._text``), each sentence is
a BM25 "document", and the question's content terms (stopwords removed, lightly
stemmed exactly as the summarizer does) are the query, ranked by Okapi BM25
(``agentmesh.agents._bm25``: ``k1 = 1.5``, ``b = 0.75``, the smoothed, never
negative IDF ``log((N - n + 0.5) / (n + 0.5) + 1)``).

Confidence, in 0..1, combines two things:

* coverage: the IDF-weighted share of query terms that the best sentence contains
  (matching the rare words of the question counts more than matching common ones);
* margin: how far the best score is ahead of the runner-up, ``(s1 - s2) / s1``
  (1 when only one sentence matches).

``confidence = coverage * (0.5 + 0.5 * margin)``: a sentence that covers the whole
question and is the only match scores 1; one that covers it but ties with another
sentence scores 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from agentmesh.agents._bm25 import K1, B, bm25_scores, idf
from agentmesh.agents._text import content_terms, normalize_text, split_sentences
from agentmesh.runtime.errors import InvalidInput, LimitExceeded

__all__ = [
    "K1",
    "MAX_CONTEXT_CHARS",
    "MAX_QUESTION_CHARS",
    "MAX_TOP_K",
    "Answer",
    "B",
    "Passage",
    "answer",
    "bm25_scores",
]

MAX_QUESTION_CHARS = 2_000
"""Longest accepted question, in characters."""
MAX_CONTEXT_CHARS = 200_000
"""Longest accepted context, in characters."""
MAX_TOP_K = 20
"""Upper bound for ``top_k``."""


@dataclass(frozen=True, slots=True)
class Passage:
    """A context sentence: 0-based position among the sentences, text, BM25 score."""

    index: int
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text, "score": self.score}


@dataclass(frozen=True, slots=True)
class Answer:
    """The best sentence ("" if none matched), confidence 0..1, best passages first."""

    answer: str
    confidence: float
    supporting: tuple[Passage, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "confidence": self.confidence,
            "supporting": [p.to_dict() for p in self.supporting],
        }


def _check(field: str, value: str, limit: int) -> None:
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    if len(value) > limit:
        raise LimitExceeded(field, f"is {len(value)} characters long; the limit is {limit}")
    if not value.strip():
        raise InvalidInput(field, "must not be empty")


def answer(question: str, context: str, *, top_k: int = 3) -> Answer:
    """Answer ``question`` with the best-matching sentence of ``context``.

    ``supporting`` holds up to ``top_k`` (1..MAX_TOP_K) sentences with a score above
    0, best first (ties: earlier first). When nothing matches, for instance because
    the question has only stopwords, the answer is "" with confidence 0; that is not
    an error. Raises ``InvalidInput`` naming "question", "context" or "top_k" and
    ``LimitExceeded`` for a question or context over its size limit.
    """
    _check("question", question, MAX_QUESTION_CHARS)
    _check("context", context, MAX_CONTEXT_CHARS)
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise InvalidInput("top_k", "must be an integer")
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInput("top_k", f"must be between 1 and {MAX_TOP_K}")

    sentences = split_sentences(normalize_text(context))
    documents = [content_terms(s) for s in sentences]
    query = list(dict.fromkeys(content_terms(normalize_text(question))))
    scores = bm25_scores(query, documents)
    ranked = sorted(
        (i for i, score in enumerate(scores) if score > 0), key=lambda i: (-scores[i], i)
    )
    if not ranked:
        return Answer(answer="", confidence=0.0, supporting=())

    best = ranked[0]
    weights_by_term = idf(documents)
    # Query terms absent from the context still count against coverage; give them
    # the IDF of a term that occurs nowhere.
    unseen = math.log((len(documents) + 0.5) / 0.5 + 1.0)
    weights = {t: weights_by_term.get(t, unseen) for t in query}
    present = set(documents[best])
    coverage = sum(w for t, w in weights.items() if t in present) / sum(weights.values())
    runner_up = scores[ranked[1]] if len(ranked) > 1 else 0.0
    margin = (scores[best] - runner_up) / scores[best]
    confidence = round(min(1.0, coverage * (0.5 + 0.5 * margin)), 4)
    return Answer(
        answer=sentences[best],
        confidence=confidence,
        supporting=tuple(Passage(i, sentences[i], scores[i]) for i in ranked[:top_k]),
    )
