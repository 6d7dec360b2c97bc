"""Key phrases by RAKE and entities (emails, URLs, dates, money...) by regular expressions.

RAKE (Rapid Automatic Keyword Extraction, Rose et al. 2010): candidate phrases are
the runs of words between stopwords and punctuation. Each word scores
``degree / frequency``, where frequency counts its occurrences in candidates and
degree adds the length of every candidate it occurs in; a phrase scores the sum of
its words. Long runs of content words therefore rank high, and words that mostly
appear alone rank low.

Entities are found by regular expressions in priority order (url, email, date,
money, percent, number); a match that overlaps an accepted one of higher priority
is dropped, so "$1,234.50" is money and not also a number, and the address inside
"https://u@example.com" is not also an email. Offsets are Python string indices
(code points) into the text exactly as given, with ``end`` exclusive.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agentmesh.agents._text import STOPWORDS, tokenize, word_set
from agentmesh.runtime.errors import InvalidInput, LimitExceeded

__all__ = [
    "MAX_ENTITIES",
    "MAX_KEYWORDS",
    "MAX_PHRASE_WORDS",
    "MAX_TEXT_CHARS",
    "Entity",
    "EntityValue",
    "Keyword",
    "KeywordReport",
    "analyze",
    "extract_entities",
    "extract_keywords",
]

MAX_TEXT_CHARS = 200_000
"""Longest accepted input text, in characters."""
MAX_KEYWORDS = 100
"""Upper bound for ``max_keywords``."""
MAX_ENTITIES = 1_000
"""Most entities returned; further ones are dropped (``KeywordReport.entities_truncated``)."""
MAX_PHRASE_WORDS = 4
"""Candidate phrases longer than this are not keywords (RAKE's usual cut-off)."""

# Extra words that split phrases without being grammatical stopwords: they carry
# no topic on their own ("also", "etc.") and would glue unrelated words together.
_RAKE_STOPWORDS = STOPWORDS | word_set(
    "also etc e.g i.e via per like one two many much several every well even still"
)

# Punctuation and symbols end a candidate phrase; hyphens and apostrophes inside a
# word do not (tokenize keeps "well-known" and "don't" whole).
_PHRASE_BREAK_RE = re.compile(r"[^\w\s'\u2019\-]+|(?<!\w)[-'\u2019]+|[-'\u2019]+(?!\w)|\s-+\s")

EntityValue = str | int | float | dict[str, str | float] | None


@dataclass(frozen=True, slots=True)
class Keyword:
    """A key phrase (lowercase), its RAKE score and how often it occurs."""

    text: str
    score: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "score": self.score, "count": self.count}


@dataclass(frozen=True, slots=True)
class Entity:
    """A typed span of the input: ``text == input[start:end]``.

    ``value`` by kind: url -> the URL with scheme and host lowercased; email -> the
    address with its domain lowercased; date -> ISO "YYYY-MM-DD"; money ->
    {"amount": float, "currency": ISO 4217 code}; percent -> the number (12.5 for
    "12.5%"); number -> int, or float when it has a fractional part or is beyond
    2**53. Numbers over 300 characters long have ``value`` None.
    """

    kind: str
    text: str
    start: int
    end: int
    value: EntityValue

    def to_dict(self) -> dict[str, Any]:
        value = dict(self.value) if isinstance(self.value, dict) else self.value
        return {
            "kind": self.kind,
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "value": value,
        }


@dataclass(frozen=True, slots=True)
class KeywordReport:
    """Key phrases and entities of one text."""

    keywords: tuple[Keyword, ...]
    entities: tuple[Entity, ...]
    entities_truncated: bool = field(default=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keywords": [k.to_dict() for k in self.keywords],
            "entities": [e.to_dict() for e in self.entities],
            "entities_truncated": self.entities_truncated,
        }


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise InvalidInput("text", "must be a string")
    if len(text) > MAX_TEXT_CHARS:
        raise LimitExceeded(
            "text", f"is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}"
        )
    if not text.strip():
        raise InvalidInput("text", "must not be empty")


# --- keywords -----------------------------------------------------------------


def _is_phrase_word(word: str) -> bool:
    # Numbers and single characters are delimiters, as in the reference RAKE.
    return word not in _RAKE_STOPWORDS and len(word) > 1 and not word[0].isdigit()


def _candidates(text: str) -> Iterator[tuple[str, ...]]:
    """Runs of content words between stopwords, numbers and punctuation."""
    for fragment in _PHRASE_BREAK_RE.split(text):
        run: list[str] = []
        for word in tokenize(fragment):
            if _is_phrase_word(word):
                run.append(word)
                continue
            if run:
                yield tuple(run)
            run = []
        if run:
            yield tuple(run)


def extract_keywords(text: str, *, max_keywords: int = 10) -> tuple[Keyword, ...]:
    """The ``max_keywords`` best RAKE phrases, best first (ties: first occurrence first).

    Phrases are lowercase and unique; phrases of more than ``MAX_PHRASE_WORDS``
    words are dropped. Raises ``InvalidInput`` for empty text or ``max_keywords``
    outside 1..MAX_KEYWORDS and ``LimitExceeded`` for text over ``MAX_TEXT_CHARS``.
    """
    _check_text(text)
    if isinstance(max_keywords, bool) or not isinstance(max_keywords, int):
        raise InvalidInput("max_keywords", "must be an integer")
    if not 1 <= max_keywords <= MAX_KEYWORDS:
        raise InvalidInput("max_keywords", f"must be between 1 and {MAX_KEYWORDS}")
    phrases = [p for p in _candidates(text) if len(p) <= MAX_PHRASE_WORDS]
    frequency: dict[str, int] = {}
    degree: dict[str, int] = {}
    for phrase in phrases:
        for word in phrase:
            frequency[word] = frequency.get(word, 0) + 1
            degree[word] = degree.get(word, 0) + len(phrase)
    counts: dict[tuple[str, ...], int] = {}
    for phrase in phrases:  # insertion order = order of first occurrence
        counts[phrase] = counts.get(phrase, 0) + 1
    scored = [
        Keyword(" ".join(p), sum(degree[w] / frequency[w] for w in p), n) for p, n in counts.items()
    ]
    # sorted() is stable, so equal scores keep first-occurrence order.
    scored.sort(key=lambda k: -k.score)
    return tuple(scored[:max_keywords])


# --- entities -----------------------------------------------------------------

_MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
_MONTH = r"(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{4})"

_CURRENCY_SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR"}
_CURRENCY_CODES = "USD|EUR|GBP|JPY|CHF|CAD|AUD|NZD|CNY|INR|SEK|NOK|DKK|PLN|CZK|MXN|BRL"
_CURRENCY_WORDS = {"dollars": "USD", "euros": "EUR", "euro": "EUR"}
_AMOUNT = r"(?P<amount>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
_NUMBER_END = r"(?![\w])(?![.,]\d)"

_URL_RE = re.compile(r"\b(?:(?:https?|ftp)://|www\.)[^\s<>\"'`]+", re.IGNORECASE)
# An address starts only where its local part can start: after no character the
# local part may hold ("%" included). Each run of such characters is then tried
# from its first one only, so input like "a%a%a%..." costs one scan, not one per
# character of the run.
_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]*[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b"
)
_DATE_RES = (
    re.compile(r"\b(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})\b"),
    # Slashed dates are read month first (US order) unless that is impossible.
    re.compile(r"\b(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4})\b"),
    re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b", re.IGNORECASE),
)
_MONEY_RES = (
    re.compile(r"(?P<currency>[$€£¥₹])\s?" + _AMOUNT + _NUMBER_END),
    re.compile(rf"\b(?P<currency>{_CURRENCY_CODES})\s?{_AMOUNT}{_NUMBER_END}"),
    re.compile(rf"(?<![\w.,]){_AMOUNT}\s?(?P<currency>[$€£¥₹])"),
    re.compile(rf"(?<![\w.,]){_AMOUNT}\s?(?P<currency>{_CURRENCY_CODES}|dollars|euros?)\b"),
)
_PERCENT_RE = re.compile(
    r"(?<![\w.,])(?P<amount>[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)"
    r"(?:\s?%|\s+(?:percent|per\s+cent)\b)",
    re.IGNORECASE,
)
_NUMBER_RE = re.compile(r"(?<![\w.,])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?" + _NUMBER_END)

_URL_TRAILING = ".,;:!?'\""
_MAX_NUMBER_CHARS = 300  # well inside float range and Python's int/str digit limit
_JSON_SAFE_INT = 2**53


def _number(text: str) -> int | float | None:
    """The value of a matched number, or None when no JSON number can hold it.

    Ints beyond 2**53 become floats (structured output travels as doubles), and
    absurdly long digit runs have no value at all rather than an infinity.
    """
    plain = text.replace(",", "")
    if len(plain) > _MAX_NUMBER_CHARS:
        return None
    if "." in plain:
        return float(plain)
    number = int(plain)
    return float(number) if abs(number) > _JSON_SAFE_INT else number


_CLOSING = {")": "(", "]": "[", "}": "{"}


def _url(match: re.Match[str]) -> tuple[int, int, EntityValue] | None:
    url = match.group()
    # Sentence punctuation after a URL is not part of it, nor is a closing
    # bracket that the URL did not open: "(see https://x.org/a)."
    opened = {c: url.count(o) for c, o in _CLOSING.items()}
    closed = {c: url.count(c) for c in _CLOSING}
    end = len(url)
    while end:
        last = url[end - 1]
        if last in _CLOSING and closed[last] > opened[last]:
            closed[last] -= 1
        elif last not in _URL_TRAILING:
            break
        end -= 1
    url = url[:end]
    scheme, sep, rest = url.partition("://")
    end = match.start() + len(url)
    if not sep:
        return (match.start(), end, url) if len(url) > len("www.") else None
    host, slash, path = rest.partition("/")
    if not host:
        return None
    return match.start(), end, f"{scheme.lower()}://{host.lower()}{slash}{path}"


def _email(match: re.Match[str]) -> tuple[int, int, EntityValue] | None:
    local, _, domain = match.group().rpartition("@")
    return match.start(), match.end(), f"{local}@{domain.lower()}"


def _date(match: re.Match[str]) -> tuple[int, int, EntityValue] | None:
    month_text = match.group("month").lower()
    month = _MONTHS[month_text] if month_text in _MONTHS else int(month_text)
    day, year = int(match.group("day")), int(match.group("year"))
    if "/" in match.group() and month > 12 and day <= 12:
        month, day = day, month  # 25/12/2024 can only be day first
    try:
        value = datetime.date(year, month, day)
    except ValueError:
        return None  # "2024-13-45" is not a date
    return match.start(), match.end(), value.isoformat()


def _money(match: re.Match[str]) -> tuple[int, int, EntityValue] | None:
    currency = match.group("currency")
    code = _CURRENCY_SYMBOLS.get(currency) or _CURRENCY_WORDS.get(currency.lower(), currency)
    amount = _number(match.group("amount"))
    if amount is None:
        return match.start(), match.end(), None
    return match.start(), match.end(), {"amount": float(amount), "currency": code.upper()}


def _percent(match: re.Match[str]) -> tuple[int, int, EntityValue] | None:
    return match.start(), match.end(), _number(match.group("amount"))


def _plain_number(match: re.Match[str]) -> tuple[int, int, EntityValue] | None:
    return match.start(), match.end(), _number(match.group())


_Converter = Callable[[re.Match[str]], tuple[int, int, EntityValue] | None]

# Priority order: earlier kinds win overlaps.
_RULES: tuple[tuple[str, tuple[re.Pattern[str], ...], _Converter], ...] = (
    ("url", (_URL_RE,), _url),
    ("email", (_EMAIL_RE,), _email),
    ("date", _DATE_RES, _date),
    ("money", _MONEY_RES, _money),
    ("percent", (_PERCENT_RE,), _percent),
    ("number", (_NUMBER_RE,), _plain_number),
)


def _find_entities(text: str) -> list[Entity]:
    occupied = bytearray(len(text))  # 1 where an accepted entity already sits
    found: list[Entity] = []
    for kind, patterns, convert in _RULES:
        spans: list[tuple[int, int, EntityValue]] = []
        for pattern in patterns:
            for match in pattern.finditer(text):
                converted = convert(match)
                if converted is not None:
                    spans.append(converted)
        # Within a kind, leftmost then longest wins.
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        for start, end, value in spans:
            if occupied.find(1, start, end) == -1:
                occupied[start:end] = b"\x01" * (end - start)
                found.append(Entity(kind, text[start:end], start, end, value))
    found.sort(key=lambda e: e.start)
    return found


def extract_entities(text: str, *, max_entities: int = MAX_ENTITIES) -> tuple[Entity, ...]:
    """Non-overlapping entities of ``text`` in order of position (see ``Entity``).

    At most ``max_entities`` (1..MAX_ENTITIES) are returned, the earliest ones.
    Raises ``InvalidInput``/``LimitExceeded`` as ``extract_keywords`` does.
    """
    _check_text(text)
    if isinstance(max_entities, bool) or not isinstance(max_entities, int):
        raise InvalidInput("max_entities", "must be an integer")
    if not 1 <= max_entities <= MAX_ENTITIES:
        raise InvalidInput("max_entities", f"must be between 1 and {MAX_ENTITIES}")
    return tuple(_find_entities(text)[:max_entities])


def analyze(text: str, max_keywords: int = 10) -> KeywordReport:
    """Keywords and entities of ``text``; at most ``MAX_ENTITIES`` entities."""
    keywords = extract_keywords(text, max_keywords=max_keywords)
    entities = _find_entities(text)
    return KeywordReport(
        keywords=keywords,
        entities=tuple(entities[:MAX_ENTITIES]),
        entities_truncated=len(entities) > MAX_ENTITIES,
    )
