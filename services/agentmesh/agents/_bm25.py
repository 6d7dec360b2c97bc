"""Okapi BM25, the ranking the qa agent (sentences of a context) and the memory agent
(what was remembered in a space) share.

A document is a list of terms (``agentmesh.agents._text.content_terms``: stopwords
removed, lightly stemmed). With ``N`` documents, ``n(t)`` of them containing term
``t``, ``tf`` its count in a document of length ``len`` and ``avgdl`` the mean
length, a document scores, over the distinct query terms::

    sum idf(t) * tf * (K1 + 1) / (tf + K1 * (1 - B + B * len / avgdl))

with ``K1 = 1.5``, ``B = 0.75`` and the smoothed, never negative IDF
``idf(t) = log((N - n(t) + 0.5) / (n(t) + 0.5) + 1)``.
"""

from __future__ import annotations

import math
from collections import Counter

__all__ = ["K1", "B", "bm25_scores", "idf"]

K1 = 1.5
B = 0.75


def idf(documents: list[list[str]]) -> dict[str, float]:
    """The IDF of every term that occurs in ``documents``."""
    n = len(documents)
    frequency = Counter(term for document in documents for term in set(document))
    return {t: math.log((n - df + 0.5) / (df + 0.5) + 1.0) for t, df in frequency.items()}


def bm25_scores(query: list[str], documents: list[list[str]]) -> list[float]:
    """Okapi BM25 score of every document (a list of terms) for the query terms.

    Each distinct query term counts once. Documents without any query term score 0.
    """
    if not documents:
        return []
    weights = idf(documents)
    total = sum(len(d) for d in documents)
    average = total / len(documents) if total else 1.0
    # Query term -> its position: a document's matching terms are found from the
    # document's side (linear in the documents, whatever the query's length) and
    # summed in query order, so equal documents get bit-for-bit equal scores.
    position = {term: index for index, term in enumerate(dict.fromkeys(query))}
    scores: list[float] = []
    for document in documents:
        counts = Counter(document)
        norm = K1 * (1.0 - B + B * len(document) / average)
        score = 0.0
        for term in sorted((t for t in counts if t in position), key=position.__getitem__):
            tf = counts[term]
            score += weights[term] * tf * (K1 + 1.0) / (tf + norm)
        scores.append(score)
    return scores
