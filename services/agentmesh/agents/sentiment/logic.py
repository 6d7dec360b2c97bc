"""Lexicon-based sentiment analysis in the style of VADER.

Each opinion word has a valence in roughly -4..4. Within a sentence a word's
valence is adjusted by, in order:

* boosters before it ("very good" > "good", "slightly good" < "good"), up to three
  words back, weaker the further away they are;
* negation up to three words back in the same clause ("not good", "never happy",
  "isn't great", "without problems"): the valence flips sign and shrinks to
  ``NEGATION_SCALAR`` of its size, so "not good" is mildly negative, not "bad";
* contrast: before the last "but" of a sentence words count half, after it one
  and a half times ("good but terrible" is negative);
* ALL-CAPS words in a sentence that is not all caps gain emphasis.

A sentence's raw score is the sum of its words' valences plus exclamation-mark
emphasis in the direction of that sum. The compound score is
``x / sqrt(x*x + ALPHA)``, which maps any raw sum into -1..1. The document score is
the compound of the summed raw sentence scores, as VADER does for a whole text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from agentmesh.agents._text import normalize_text, split_sentences, stem, tokenize, word_set
from agentmesh.runtime.errors import InvalidInput, LimitExceeded

__all__ = [
    "ALPHA",
    "LEXICON",
    "MAX_SENTENCES",
    "MAX_TEXT_CHARS",
    "NEUTRAL_THRESHOLD",
    "SentenceSentiment",
    "SentimentReport",
    "analyze",
    "label_for",
]

MAX_TEXT_CHARS = 100_000
"""Longest accepted input text, in characters."""
MAX_SENTENCES = 5_000
"""Most per-sentence results returned; longer texts are still scored in full."""
ALPHA = 15.0
"""Normalization constant of the compound score (VADER's value)."""
NEUTRAL_THRESHOLD = 0.05
"""Scores strictly between -0.05 and 0.05 are neutral."""

NEGATION_SCALAR = -0.74
BOOSTER_INCREMENT = 0.293
CAPS_INCREMENT = 0.733
EXCLAMATION_INCREMENT = 0.292
MAX_EXCLAMATIONS = 4
BUT_BEFORE = 0.5
BUT_AFTER = 1.5
_WINDOW = 3  # how many words back negations and boosters reach
_DISTANCE_DAMPING = (1.0, 0.95, 0.9)


def _lexicon(groups: dict[float, str]) -> Mapping[str, float]:
    entries: dict[str, float] = {}
    for valence, words in groups.items():
        for word in word_set(words):
            entries[word] = valence
    return MappingProxyType(entries)


# Valences follow VADER's human-rated scale (-4 extremely negative .. +4 extremely
# positive), rounded to a few levels.
LEXICON: Mapping[str, float] = _lexicon(
    {
        3.2: """
        amazing awesome brilliant excellent exceptional fantastic flawless magnificent
        marvelous marvellous outstanding perfect phenomenal spectacular splendid
        superb terrific wonderful love loved loves adore adored adores masterpiece
        best incredible extraordinary stunning
        """,
        2.6: """
        beautiful delightful ecstatic enjoy enjoyed enjoys excited exciting fabulous
        glad great happy impressive joy joyful lovely pleased recommend recommended
        thrilled beloved charming elegant gorgeous grateful thankful thanks admire
        admirable remarkable satisfying triumph win winning won superior
        """,
        1.9: """
        good nice fine cool fun funny liked likes pleasant positive helpful
        useful valuable worth worthwhile reliable solid smooth success successful
        friendly clean comfortable easy effective efficient fair fast fresh
        favorite favourite glowing healthy honest hope hopeful improve improved
        improvement interesting intuitive neat quick safe secure satisfied
        simple smart stable strong support supportive sweet tasty welcome
        wise accurate affordable agree appreciate appreciated benefit better calm
        capable celebrate cheerful clever confident convenient cute eager enjoyable
        encouraging fortunate generous gentle gift inspiring lucky polite powerful
        proud recommendable relaxed relief responsive rich robust spacious thrive
        upgrade vibrant warm
        """,
        1.2: """
        ok okay decent adequate acceptable reasonable alright correct resolved
        handy promising respectable sufficient tidy
        """,
        -1.2: """
        odd mediocre meh lacking lack lacks slow slower noisy messy pricey late
        unclear confusing complicated outdated limited tired bland
        boring dull questionable unfortunately stale soggy
        """,
        -1.9: """
        bad poor problem problems issue issues bug bugs buggy broken break breaks
        fail failed fails failure flaw flawed wrong error errors annoying annoyed
        angry sad unhappy disappointing disappointed disappoint expensive difficult
        hate ugly dirty rude unfriendly unreliable unstable useless weak worse
        worry worried worrying crash crashed crashes crashing complaint complain
        complained negative sorry painful pain hurt hurts fear afraid scared
        frustrating frustrated frustration regret inferior lost lose losing loss
        mistake missing sick stupid uncomfortable unpleasant unsafe upset damaged
        defective delay delayed costly harsh leak leaking overpriced
        scam slowest spam steal stolen threat toxic trouble ugh unacceptable
        unfair unusable waste wasted
        """,
        -2.6: """
        awful terrible horrible dreadful disgusting nasty pathetic miserable
        furious hated hates dangerous disaster disastrous garbage junk trash
        ridiculous shameful shocking rubbish fraud insulting nightmare appalling
        """,
        -3.2: """
        worst abysmal atrocious horrendous horrific hideous catastrophic despise
        despised loathe unbearable vile
        """,
    }
)

# Positive boosters strengthen the next opinion word, negative ones weaken it.
BOOSTERS: Mapping[str, float] = MappingProxyType(
    {
        **{
            w: BOOSTER_INCREMENT
            for w in word_set(
                """
            absolutely amazingly completely considerably deeply enormously entirely
            especially exceptionally extremely fully greatly highly hugely incredibly
            intensely particularly purely quite really remarkably so substantially
            thoroughly totally tremendously truly unbelievably utterly very most
            super insanely seriously pretty
            """
            )
        },
        **{
            w: -BOOSTER_INCREMENT
            for w in word_set(
                """
            almost barely hardly marginally mildly partly scarcely slightly somewhat
            occasionally less little
            """
            )
        },
    }
)

NEGATIONS: frozenset[str] = word_set(
    """
    not no never none nobody nothing neither nor nowhere without cannot ain't
    aint dont doesnt didnt isnt wasnt werent wont cant couldnt shouldnt wouldnt
    """
)
# A negation followed by one of these is an idiom, not a negation: "without
# doubt the best", "no doubt", "not only good but cheap".
_NEGATION_BREAKERS: frozenset[str] = frozenset({"doubt", "question", "only"})


# Stems of lexicon words, for inflections that the lexicon lacks ("loving",
# "improves"). A stem shared by words of opposite sign is left out.
def _stem_lexicon(lexicon: Mapping[str, float]) -> Mapping[str, float]:
    by_stem: dict[str, list[float]] = {}
    for word, valence in lexicon.items():
        by_stem.setdefault(stem(word), []).append(valence)
    return MappingProxyType(
        {
            s: sum(values) / len(values)
            for s, values in by_stem.items()
            if all(v > 0 for v in values) or all(v < 0 for v in values)
        }
    )


_STEM_LEXICON = _stem_lexicon(LEXICON)

_CLAUSE_RE = re.compile(r"[,;:()\u2014]|\s-\s")


@dataclass(frozen=True, slots=True)
class SentenceSentiment:
    """One sentence's compound score (-1..1) and label."""

    text: str
    score: float
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "score": self.score, "label": self.label}


@dataclass(frozen=True, slots=True)
class SentimentReport:
    """Overall label and score, per-sentence results, and the terms that counted.

    ``positive_terms``/``negative_terms`` hold each lexicon word once, in order of
    first appearance, by the sign of its final contribution: in "not good" the
    word "good" is a negative term.
    """

    label: str
    score: float
    sentences: tuple[SentenceSentiment, ...]
    positive_terms: tuple[str, ...]
    negative_terms: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": self.score,
            "sentences": [s.to_dict() for s in self.sentences],
            "positive_terms": list(self.positive_terms),
            "negative_terms": list(self.negative_terms),
        }


def label_for(score: float) -> str:
    """Return "positive", "negative" or "neutral" for a compound score."""
    if score >= NEUTRAL_THRESHOLD:
        return "positive"
    if score <= -NEUTRAL_THRESHOLD:
        return "negative"
    return "neutral"


def _compound(raw: float) -> float:
    return raw / math.sqrt(raw * raw + ALPHA)


def _valence(word: str) -> float:
    found = LEXICON.get(word)
    if found is None:
        found = _STEM_LEXICON.get(stem(word), 0.0)
    return found


def _is_negation(word: str) -> bool:
    return word in NEGATIONS or word.endswith("n't")


@dataclass(frozen=True, slots=True)
class _Word:
    text: str  # lowercased
    caps: bool  # written in capitals, e.g. "GREAT"
    clause: int  # index of the comma/semicolon-delimited clause


def _words(sentence: str) -> list[_Word]:
    words: list[_Word] = []
    for clause, part in enumerate(_CLAUSE_RE.split(sentence)):
        for token in tokenize(part, lowercase=False):
            caps = token.isupper() and len(token) > 1
            words.append(_Word(token.lower(), caps, clause))
    return words


def _score_sentence(sentence: str, contributions: list[tuple[str, float]]) -> float:
    """Raw (unnormalized) score of one sentence; appends (word, contribution) pairs."""
    words = _words(sentence)
    # Emphasis from capitals only means something when not everything is shouted.
    mixed_case = any(w.caps for w in words) and not all(w.caps for w in words)
    buts = [i for i, w in enumerate(words) if w.text == "but"]
    last_but = buts[-1] if buts else None
    total = 0.0
    for i, word in enumerate(words):
        valence = _valence(word.text)
        if valence == 0.0:
            continue
        sign = 1.0 if valence > 0 else -1.0
        if word.caps and mixed_case:
            valence += sign * CAPS_INCREMENT
        negated = False
        for distance in range(1, _WINDOW + 1):
            j = i - distance
            if j < 0 or words[j].clause != word.clause:
                break
            before = words[j].text
            damping = _DISTANCE_DAMPING[distance - 1]
            boost = BOOSTERS.get(before)
            if boost is not None:
                step = boost * damping
                if words[j].caps and mixed_case:
                    step += math.copysign(CAPS_INCREMENT, boost)
                # A booster changes magnitude but never flips the word's sign.
                valence = sign * max(abs(valence) + step, 0.1)
            if _is_negation(before) and words[j + 1].text not in _NEGATION_BREAKERS:
                negated = True
        if negated:
            valence *= NEGATION_SCALAR
        if last_but is not None:
            valence *= BUT_BEFORE if i < last_but else BUT_AFTER
        contributions.append((word.text, valence))
        total += valence
    if total:
        exclamations = min(sentence.count("!"), MAX_EXCLAMATIONS)
        total += math.copysign(exclamations * EXCLAMATION_INCREMENT, total)
    return total


def analyze(text: str) -> SentimentReport:
    """Score the sentiment of ``text`` as a whole and sentence by sentence.

    Raises ``InvalidInput("text", ...)`` for empty text and ``LimitExceeded`` for
    text longer than ``MAX_TEXT_CHARS``. At most ``MAX_SENTENCES`` per-sentence
    results are returned; the overall score always covers the whole text.
    """
    if not isinstance(text, str):
        raise InvalidInput("text", "must be a string")
    if len(text) > MAX_TEXT_CHARS:
        raise LimitExceeded(
            "text", f"is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}"
        )
    if not text.strip():
        raise InvalidInput("text", "must not be empty")
    contributions: list[tuple[str, float]] = []
    results: list[SentenceSentiment] = []
    raw_total = 0.0
    for sentence in split_sentences(normalize_text(text)):
        raw = _score_sentence(sentence, contributions)
        raw_total += raw
        if len(results) < MAX_SENTENCES:
            score = round(_compound(raw), 4)
            results.append(SentenceSentiment(sentence, score, label_for(score)))
    score = round(_compound(raw_total), 4)
    positive = dict.fromkeys(w for w, v in contributions if v > 0)
    negative = dict.fromkeys(w for w, v in contributions if v < 0)
    return SentimentReport(
        label=label_for(score),
        score=score,
        sentences=tuple(results),
        positive_terms=tuple(positive),
        negative_terms=tuple(negative),
    )
