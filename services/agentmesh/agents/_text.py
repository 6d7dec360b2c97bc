"""Text utilities shared by the text agents: normalization, sentences, words, stems.

Everything here is pure and deterministic. The summarizer, sentiment, keywords and
qa agents all go through these functions so that "a sentence" and "a word" mean the
same thing in every agent.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "STOPWORDS",
    "content_terms",
    "normalize_text",
    "normalize_word",
    "split_paragraphs",
    "split_sentences",
    "stem",
    "tokenize",
    "word_set",
]


def word_set(words: str) -> frozenset[str]:
    """A frozenset of the whitespace-separated words in ``words`` (for word lists)."""
    return frozenset(words.split())


# A compact English stopword list: function words, auxiliaries, pronouns and the
# question words (so that "What is the capital of France?" leaves "capital france").
STOPWORDS: frozenset[str] = word_set(
    """
    a about above after again against all also am an and any are aren't as at be
    because been before being below between both but by can can't cannot could
    couldn't did didn't do does doesn't doing don't down during each either else
    ever few for from further had hadn't has hasn't have haven't having he he'd
    he'll he's her here here's hers herself him himself his how how's however i
    i'd i'll i'm i've if in into is isn't it it's its itself just let's may me
    might more most must mustn't my myself neither no nor not now of off on once
    only or other ought our ours ourselves out over own same shall shan't she
    she'd she'll she's should shouldn't so some such than that that's the their
    theirs them themselves then there there's these they they'd they'll they're
    they've this those though through thus to too under until up upon us very
    was wasn't we we'd we'll we're we've were weren't what what's when when's
    where where's whether which while who who's whom whose why why's will with
    within without won't would wouldn't yet you you'd you'll you're you've your
    yours yourself yourselves
    """
)

# Words that, written with a final period, are abbreviations that never end a
# sentence (titles, Latin abbreviations, month names before a day).
_NEVER_FINAL: frozenset[str] = word_set(
    """
    mr mrs ms mx dr prof rev hon gen col lt sgt capt cmdr st mt ft sen rep gov pres
    e.g i.e cf vs viz approx ca dept est
    jan feb apr jun jul aug sep sept oct nov dec
    """
)

# Abbreviations that are followed by a number ("No. 5", "Fig. 3", "p. 12"); only
# then are they not a sentence end ("The answer is no. We left." still splits).
_BEFORE_NUMBER: frozenset[str] = word_set("no nos fig figs p pp vol vols ch sec art eq")

# Abbreviations that may or may not end a sentence ("etc.", "Inc.", initialisms
# like "U.S."): they end one only when a typical sentence opener follows.
_MAYBE_FINAL: frozenset[str] = word_set("etc inc ltd co corp jr sr al bros llc plc")

_INITIALISM_RE = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]$|^[A-Z]$")

# A terminator run ("." "?!" "..." "…"), optional closing quotes/brackets, then
# whitespace or the end of the paragraph. A run is only tried from its first
# character and never given back (possessive), so a long run of dots that is not
# followed by whitespace costs one scan, not one per dot.
_BOUNDARY_RE = re.compile(r"(?<![.!?\u2026])([.!?\u2026]++)([\"'\u201d\u2019\u00bb)\]]*+)(?=\s|$)")
_PARAGRAPH_RE = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_OPENERS = "\"'\u201c\u2018\u00ab([{"

# A word: letters/digits, with inner apostrophes or hyphens ("don't", "well-known"),
# or a decimal number ("3.14", "1,000").
_WORD_RE = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:['\-][^\W_]+)*")

_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u02bc": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": " - ",
    }
)
_SPACES_RE = re.compile(r"[ \t\r\f\v]+")


def normalize_text(text: str) -> str:
    """Return ``text`` NFKC-normalized, with ASCII quotes/dashes and collapsed spaces.

    Newlines are kept (paragraph breaks matter to the sentence splitter); runs of
    other whitespace become one space. Offsets change, so entity extraction, which
    reports offsets into the caller's text, must not use this.
    """
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE)
    lines = (_SPACES_RE.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(lines).strip()


def normalize_word(word: str) -> str:
    """Lowercase a word and unify its apostrophes."""
    return word.lower().translate(_TRANSLATE)


def split_paragraphs(text: str) -> list[str]:
    """Split on blank lines; empty paragraphs are dropped."""
    return [p.strip() for p in _PARAGRAPH_RE.split(text) if p.strip()]


def _previous_word(text: str, end: int) -> str:
    """The whitespace-delimited word ending at ``end``, without opening punctuation."""
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return text[start:end].lstrip(_OPENERS)


# What follows a terminator: whitespace, opening quotes/brackets, then (captured
# without consuming) the first character and the next word, if any.
_AFTER_RE = re.compile(
    r"\s*[\"'\u201c\u2018\u00ab(\[{]*(?=(?P<first>.?))(?P<word>[^\W_]+(?:'[^\W_]+)?)?",
    re.DOTALL,
)


def _is_boundary(paragraph: str, match: re.Match[str]) -> bool:
    """Decide whether a terminator match ends a sentence (see ``split_sentences``)."""
    # Paragraphs are stripped, so only the end of the paragraph has nothing after.
    if match.end() >= len(paragraph):
        return True
    # Matching in place (no slicing) keeps splitting linear in the text length.
    after = _AFTER_RE.match(paragraph, match.end())
    first = after.group("first") if after else ""
    following = (after.group("word") if after else None) or ""
    # A lowercase continuation is never a new sentence: "e.g. this", "wait... what".
    if first.islower():
        return False
    if match.group(1) != ".":
        return True
    word = _previous_word(paragraph, match.start(1))
    lowered = word.lower()
    if lowered in _NEVER_FINAL:
        return False
    if lowered in _BEFORE_NUMBER and first.isdigit():
        return False
    if lowered in _MAYBE_FINAL or _INITIALISM_RE.match(word):
        # "the U.S. The next..." ends; "U.S. Army" and "J. Smith" do not.
        return normalize_word(following) in STOPWORDS
    return True


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences, each with its whitespace collapsed.

    A sentence ends at ``.``, ``!``, ``?``, an ellipsis, or a blank line. A period is
    not an end when it sits inside a number (3.14), after an abbreviation ("Dr.",
    "e.g.", "Fig. 2") or an initialism that the next word continues ("U.S. Army"),
    or when a lowercase word follows. Closing quotes and brackets stay with the
    sentence they close.
    """
    sentences: list[str] = []
    for paragraph in split_paragraphs(text):
        start = 0
        for match in _BOUNDARY_RE.finditer(paragraph):
            if _is_boundary(paragraph, match):
                sentence = " ".join(paragraph[start : match.end()].split())
                if sentence:
                    sentences.append(sentence)
                start = match.end()
        tail = " ".join(paragraph[start:].split())
        if tail:
            sentences.append(tail)
    return sentences


def tokenize(text: str, *, lowercase: bool = True) -> list[str]:
    """Return the words of ``text`` in order (apostrophes unified, lowercased by default).

    Contractions and hyphenated words stay whole ("don't", "well-known"); decimal
    numbers stay whole ("3.14"); punctuation is dropped.
    """
    text = text.translate(_TRANSLATE)
    words = _WORD_RE.findall(text)
    return [w.lower() for w in words] if lowercase else words


_DOUBLE_END_RE = re.compile(r"([b-df-hj-km-np-tv-z])\1$")
_VOWEL_RE = re.compile(r"[aeiouy]")


def stem(word: str) -> str:
    """Lightly stem a lowercase word: plurals, possessives, -ing, -ed, final -e.

    Deliberately conservative (much weaker than Porter): it only has to make
    "studies"/"study", "running"/"runs"/"run", "created"/"creates"/"create" agree.
    Words of three letters or less, and anything not purely alphabetic apart from
    a possessive, are returned as is.
    """
    w = word[:-2] if word.endswith("'s") else word
    if len(w) <= 3 or not w.isalpha():
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith(("sses", "xes", "ches", "shes", "zes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        base = w[: -len(suffix)]
        if w.endswith(suffix) and len(base) >= 3 and _VOWEL_RE.search(base):
            w = base
            if _DOUBLE_END_RE.search(w):
                w = w[:-1]  # "running" -> "runn" -> "run"
            break
    if w.endswith("e") and len(w) >= 4:
        w = w[:-1]  # "create", "creating", "created" all end up as "creat"
    return w


def content_terms(text: str) -> list[str]:
    """Stemmed words of ``text`` without stopwords and one-character tokens, in order."""
    return [stem(t) for t in tokenize(text) if t not in STOPWORDS and len(t) > 1]
