"""What the memory agent keeps and how it finds it again.

An :class:`Entry` is one remembered text with its tags. Entries live in a
*space* (a name: the caller's context id, or one the caller chose), and a
space belongs to the principal that wrote it (``agentmesh.agents.memory.store``
keys every space by ``(principal, space)``).

:func:`recall` ranks a space's entries for a query with Okapi BM25
(``agentmesh.agents._bm25``, the qa agent's ranking) over their content terms
(stopwords removed, lightly stemmed: ``agentmesh.agents._text``). Only entries
that carry every requested tag take part, so IDF is computed over the entries
that could be returned. Entries with no query term score 0 and are not hits;
equal scores go newest first.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentmesh.agents._bm25 import bm25_scores
from agentmesh.agents._text import content_terms, normalize_text
from agentmesh.runtime.errors import InvalidInput, LimitExceeded

__all__ = [
    "MAX_LIMIT",
    "MAX_QUERY_CHARS",
    "MAX_SPACE_CHARS",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MAX_TEXT_CHARS",
    "Entry",
    "Hit",
    "check_space",
    "check_tags",
    "new_entry",
    "recall",
]

MAX_TEXT_CHARS = 20_000
"""Longest text one entry may hold, in characters."""
MAX_QUERY_CHARS = 2_000
"""Longest recall query, in characters."""
MAX_SPACE_CHARS = 256
"""Longest space name (a context id may be one)."""
MAX_TAGS = 16
"""Most tags on one entry (and in one recall filter)."""
MAX_TAG_CHARS = 64
"""Longest tag."""
MAX_LIMIT = 50
"""Most hits one recall returns."""
MAX_ID_CHARS = 64
"""Longest entry id accepted by forget (ids are 32 hex digits)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One remembered text: its id (32 hex digits), text, tags and when (unix seconds)."""

    id: str
    text: str
    tags: tuple[str, ...] = ()
    created_at: float = 0.0

    def dump(self) -> str:
        """The stored form: ``ID<TAB>JSON`` (a store finds an entry by its id prefix)."""
        body = {"text": self.text, "tags": list(self.tags), "created_at": self.created_at}
        return f"{self.id}\t{json.dumps(body, ensure_ascii=False, separators=(',', ':'))}"

    @classmethod
    def load(cls, stored: str) -> Entry:
        entry_id, _, body = stored.partition("\t")
        data = json.loads(body)
        return cls(entry_id, data["text"], tuple(data["tags"]), float(data["created_at"]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "tags": list(self.tags),
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class Hit:
    """An entry found by :func:`recall`, with its BM25 score (above 0)."""

    entry: Entry
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.entry.to_dict(), "score": round(self.score, 6)}


def _check_text(field: str, text: str, limit: int) -> str:
    if not isinstance(text, str):
        raise InvalidInput(field, "must be a string")
    if len(text) > limit:
        raise LimitExceeded(field, f"is {len(text)} characters long; the limit is {limit}")
    if not text.strip():
        raise InvalidInput(field, "must not be empty")
    return text


def check_space(space: object, field: str = "options.space") -> str:
    """A valid space name: 1..MAX_SPACE_CHARS printable characters."""
    if not isinstance(space, str):
        raise InvalidInput(field, "must be a string")
    if not space.strip():
        raise InvalidInput(field, "must not be empty")
    if len(space) > MAX_SPACE_CHARS:
        raise InvalidInput(
            field, f"is {len(space)} characters long; the limit is {MAX_SPACE_CHARS}"
        )
    if not space.isprintable():
        raise InvalidInput(field, "must hold printable characters only")
    return space


def check_tags(tags: object, field: str = "options.tags") -> tuple[str, ...]:
    """Tags as given, without repeats: up to MAX_TAGS non-empty strings of MAX_TAG_CHARS."""
    if tags is None:
        return ()
    if not isinstance(tags, list | tuple):
        raise InvalidInput(field, "must be a list of strings")
    if len(tags) > MAX_TAGS:
        raise InvalidInput(field, f"has {len(tags)} tags; the limit is {MAX_TAGS}")
    checked: list[str] = []
    for index, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidInput(f"{field}[{index}]", "must be a non-empty string")
        if len(tag) > MAX_TAG_CHARS or not tag.isprintable():
            raise InvalidInput(
                f"{field}[{index}]", f"must be at most {MAX_TAG_CHARS} printable characters"
            )
        if tag not in checked:
            checked.append(tag)
    return tuple(checked)


def check_id(entry_id: object, field: str = "options.id") -> str:
    if not isinstance(entry_id, str) or not entry_id:
        raise InvalidInput(field, "must be a non-empty string")
    if len(entry_id) > MAX_ID_CHARS or not entry_id.isalnum():
        raise InvalidInput(field, "is not an entry id (letters and digits, as remember gave it)")
    return entry_id


def new_entry(text: str, tags: Sequence[str], now: float) -> Entry:
    """A new entry with a fresh id; InvalidInput/LimitExceeded for bad text."""
    _check_text("message.parts", text, MAX_TEXT_CHARS)
    return Entry(uuid.uuid4().hex, text, tuple(tags), float(now))


def recall(
    entries: Sequence[Entry], query: str, *, limit: int = 5, tags: Sequence[str] = ()
) -> list[Hit]:
    """The ``limit`` entries that best match ``query``, best first (see the module docstring).

    ``entries`` are oldest first, as a store returns them."""
    _check_text("message.parts", query, MAX_QUERY_CHARS)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput("options.limit", f"must be from 1 to {MAX_LIMIT}")
    wanted = set(tags)
    candidates = [e for e in entries if wanted <= set(e.tags)]
    terms = list(dict.fromkeys(content_terms(normalize_text(query))))
    if not candidates or not terms:
        return []
    scores = bm25_scores(terms, [content_terms(normalize_text(e.text)) for e in candidates])
    # Best first; equal scores: the later entry (newer) first.
    ranked = sorted(
        (i for i, score in enumerate(scores) if score > 0), key=lambda i: (-scores[i], -i)
    )
    return [Hit(candidates[i], scores[i]) for i in ranked[:limit]]
