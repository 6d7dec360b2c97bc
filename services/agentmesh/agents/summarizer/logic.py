"""Extractive summarization with TextRank.

Sentences are the nodes of a graph whose edges are the cosine similarity of the
sentences' content-term vectors (stopwords removed, lightly stemmed, see
``agentmesh.agents._text``). PageRank over that graph scores each sentence by how
much the rest of the text "agrees" with it; the best sentences, in their original
order, are the summary.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agentmesh.agents._text import content_terms, normalize_text, split_sentences
from agentmesh.runtime.errors import InvalidInput, LimitExceeded

__all__ = [
    "DAMPING",
    "MAX_INPUT_SENTENCES",
    "MAX_ITERATIONS",
    "MAX_SENTENCES",
    "MAX_TEXT_CHARS",
    "TOLERANCE",
    "RankedSentence",
    "Summary",
    "rank_sentences",
    "summarize",
]

MAX_TEXT_CHARS = 200_000
"""Longest accepted input text, in characters."""
MAX_INPUT_SENTENCES = 20_000
"""Most sentences the input may split into."""
MAX_SENTENCES = 50
"""Upper bound for ``max_sentences``."""
DAMPING = 0.85
MAX_ITERATIONS = 100
TOLERANCE = 1e-6
"""PageRank stops once the L1 change of the score vector falls below this."""
_EPSILON = 1e-9  # out-weights below this are rounding noise of an isolated sentence


@dataclass(frozen=True, slots=True)
class RankedSentence:
    """A sentence of the input: its 0-based position, text and TextRank score."""

    index: int
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text, "score": self.score}


@dataclass(frozen=True, slots=True)
class Summary:
    """The summary text, the selected sentences in input order, and the input's size."""

    summary: str
    sentences: tuple[RankedSentence, ...]
    sentence_count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "sentences": [s.to_dict() for s in self.sentences],
            "sentence_count": self.sentence_count,
        }


def _unit_vectors(term_lists: list[list[str]]) -> list[dict[str, float]]:
    """Term-frequency vectors scaled to length 1 (empty for sentences without terms)."""
    vectors: list[dict[str, float]] = []
    for terms in term_lists:
        counts = Counter(terms)
        norm = math.sqrt(sum(c * c for c in counts.values()))
        vectors.append({t: c / norm for t, c in counts.items()} if counts else {})
    return vectors


def _dot(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(w * b.get(t, 0.0) for t, w in a.items())


def _add_scaled(total: dict[str, float], vector: dict[str, float], factor: float) -> None:
    for term, weight in vector.items():
        total[term] = total.get(term, 0.0) + factor * weight


def _textrank(vectors: list[dict[str, float]]) -> list[float]:
    """Weighted PageRank over the cosine-similarity graph; scores sum to 1.

    The edge weight between sentences i != j is ``v_i . v_j`` for unit vectors, so
    the graph is ``V V^T`` without its diagonal and never has to be built: the sum
    over j of ``w_ij * x_j`` equals ``v_i . (sum_j x_j v_j) - x_i``. Each power
    iteration then costs O(total terms) instead of O(sentences^2), which keeps
    long inputs cheap. A sentence with no edges (out-weight 0) spreads its score
    evenly over all sentences, the usual treatment of dangling nodes.
    """
    n = len(vectors)
    everything: dict[str, float] = {}
    for vector in vectors:
        _add_scaled(everything, vector, 1.0)
    # Out-weight of j: v_j . (sum of all v) minus its own self-similarity of 1.
    out_weight = []
    for vector in vectors:
        weight = _dot(vector, everything) - 1.0 if vector else 0.0
        out_weight.append(weight if weight > _EPSILON else 0.0)
    scores = [1.0 / n] * n
    for _ in range(MAX_ITERATIONS):
        dangling = sum(s for s, w in zip(scores, out_weight, strict=True) if w == 0.0)
        base = (1.0 - DAMPING) / n + DAMPING * dangling / n
        shares = [DAMPING * s / w if w else 0.0 for s, w in zip(scores, out_weight, strict=True)]
        spread: dict[str, float] = {}
        for vector, share in zip(vectors, shares, strict=True):
            if share:
                _add_scaled(spread, vector, share)
        new = [
            base + max(0.0, _dot(vector, spread) - share) if vector else base
            for vector, share in zip(vectors, shares, strict=True)
        ]
        delta = sum(abs(a - b) for a, b in zip(new, scores, strict=True))
        scores = new
        if delta < TOLERANCE:
            break
    return scores


def rank_sentences(sentences: list[str]) -> list[float]:
    """TextRank score of each sentence, aligned with ``sentences``."""
    if not sentences:
        return []
    return _textrank(_unit_vectors([content_terms(s) for s in sentences]))


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise InvalidInput("text", "must be a string")
    if len(text) > MAX_TEXT_CHARS:
        raise LimitExceeded(
            "text", f"is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}"
        )
    if not text.strip():
        raise InvalidInput("text", "must not be empty")


def _requested_count(max_sentences: int, ratio: float | None, available: int) -> int:
    if isinstance(max_sentences, bool) or not isinstance(max_sentences, int):
        raise InvalidInput("max_sentences", "must be an integer")
    if not 1 <= max_sentences <= MAX_SENTENCES:
        raise InvalidInput("max_sentences", f"must be between 1 and {MAX_SENTENCES}")
    if ratio is None:
        return min(max_sentences, available)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float):
        raise InvalidInput("ratio", "must be a number")
    if not (math.isfinite(ratio) and 0.0 < ratio <= 1.0):
        raise InvalidInput("ratio", "must be greater than 0 and at most 1")
    # Round half up, and always keep at least one sentence.
    return max(1, min(available, math.floor(ratio * available + 0.5)))


def summarize(text: str, *, max_sentences: int = 3, ratio: float | None = None) -> Summary:
    """Pick the most central sentences of ``text`` and return them in input order.

    ``ratio`` (0 < ratio <= 1), when given, replaces ``max_sentences``: the summary
    keeps that share of the sentences (rounded, at least one). Text with fewer
    sentences than requested comes back whole. Ties in score go to the earlier
    sentence. Raises ``InvalidInput`` for empty text or out-of-range options and
    ``LimitExceeded`` for text over ``MAX_TEXT_CHARS`` or ``MAX_INPUT_SENTENCES``.
    """
    _check_text(text)
    sentences = split_sentences(normalize_text(text))
    if not sentences:
        raise InvalidInput("text", "contains no sentences")
    if len(sentences) > MAX_INPUT_SENTENCES:
        raise LimitExceeded(
            "text",
            f"has {len(sentences)} sentences; the limit is {MAX_INPUT_SENTENCES}",
        )
    count = _requested_count(max_sentences, ratio, len(sentences))
    scores = rank_sentences(sentences)
    best = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))[:count]
    chosen = tuple(RankedSentence(i, sentences[i], scores[i]) for i in sorted(best))
    return Summary(
        summary=" ".join(s.text for s in chosen),
        sentences=chosen,
        sentence_count=len(sentences),
    )
