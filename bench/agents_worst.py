"""Each reference agent's worst case at its size limit, against ordinary input of that size.

For every agent with offline work (sentiment, summarizer, keywords, qa, code
reviewer, calculator) this runs the agent's work function (what it hands to
``agentmesh.runtime.offload``) in this process on:

* ``ordinary``: realistic text (English prose, Python source, arithmetic)
  filling the agent's size limit;
* a set of hostile inputs of the same size, each aimed at a shape that has been,
  or could be, super-linear: runs of dots, ``a%`` runs under the e-mail
  pattern, nested ``eval(...)`` around a large list, a long question over
  thousands of sentences, and so on.

Inputs run interleaved, ``--rounds`` times, and the median time of each is
kept. The figure per agent is its slowest hostile input's time divided by
the ordinary input's time in the same run: a linear agent stays within a small
factor; a super-linear one grows with the size. Inputs that the agent refuses
(for instance more sentences than the summarizer takes) count with the time
the refusal took. ``--tiny`` runs at a tenth of the size limits, once.

    python -m bench.agents_worst --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentmesh.agents.calculator import logic as calculator
from agentmesh.agents.code_reviewer import logic as code_reviewer
from agentmesh.agents.keywords import logic as keywords
from agentmesh.agents.qa import logic as qa
from agentmesh.agents.sentiment import logic as sentiment
from agentmesh.agents.summarizer import logic as summarizer
from agentmesh.runtime.errors import AgentError

PROSE = (
    "The committee met on Tuesday to review the budget for the coming year. "
    "Dr. Smith argued that the new laboratory was not a luxury but a necessity, "
    "and most members agreed with her. The finance office, however, warned that "
    "costs had risen by 12% since March! Would the city still pay its share? "
    "Nobody could say for sure... In the end the vote was postponed until the "
    "auditors, Baker & Co., publish their report (expected in early May).\n\n"
)

PYTHON = '''import os
import subprocess


class Store:
    """Keeps records in memory."""

    def __init__(self, path, retries=3):
        self.path = path
        self.retries = retries
        self.items = {}

    def load(self, name):
        if name in self.items:
            return self.items[name]
        for attempt in range(self.retries):
            try:
                with open(os.path.join(self.path, name)) as handle:
                    value = handle.read()
            except OSError:
                continue
            self.items[name] = value
            return value
        return None


def build(target, verbose=False):
    command = ["make", target]
    if verbose:
        command.append("V=1")
    return subprocess.run(command, check=False).returncode

'''

ARITHMETIC = "12*(3+4)**2 - 7/3 + sqrt(16) * pi - max(1, 2, 3) + 45 % 7 + "


def fill(unit: str, size: int) -> str:
    """``unit`` repeated and cut to exactly ``size`` characters."""
    return (unit * (size // len(unit) + 1))[:size]


def text_attacks(size: int) -> dict[str, str]:
    """Hostile texts of ``size`` characters for the text agents."""
    distinct = " ".join(f"w{i:x}" for i in range(size))[:size]
    return {
        "dots then a letter": "." * (size - 1) + "a",
        "dots": "." * size,
        "a% (e-mail local part)": fill("a%", size),
        "a. (one initialism-like word)": fill("a.", size),
        "a short sentence per 3 chars": fill("a. ", size),
        "ellipsis characters": "\u2026" * size,
        "exclamation marks then a letter": "!" * (size - 1) + "a",
        "initialisms": fill("U.S. ", size),
        "dot and closing brackets": "." + ")" * (size - 2) + "a",
        "digits": "1" * size,
        "digit groups": fill("1,", size),
        "money": fill("$1", size),
        "hyphens": fill("a-", size),
        "apostrophes": fill("a'", size),
        "www.": fill("www.", size),
        "url then closing brackets": "http://x" + ")" * (size - 8),
        "at signs": fill("a@", size),
        "e-mail with many domain labels": "a@" + fill("b.", size - 3) + "1",
        "blank lines": fill("\n \n", size - 1) + "a",
        "one word": "a" * size,
        "distinct words": distinct,
        "negations": fill("not ", size - 4) + "good",
        "boosters": fill("very ", size - 4) + "good",
        "one sentence of prose": fill(PROSE.replace(".", "").replace("!", ""), size),
    }


def repeat(unit: str, size: int) -> str:
    """``unit`` repeated as many whole times as fit in ``size`` bytes of UTF-8."""
    return unit * (size // len(unit.encode()))


def code_attacks(size: int) -> dict[str, str]:
    """Hostile Python sources of at most ``size`` characters, each valid Python."""
    depth = 150  # deep, but within the parser's nesting limit
    names = [f"v{i}" for i in range(size // 40)]
    tainted = "".join(f"{n} = input()\n" for n in names)
    ifs = 90  # within the parser's indentation limit
    return {
        "nested eval around a large list": "eval(" * depth
        + "["
        + repeat("1,", size - depth * 6 - 2)
        + "]"
        + ")" * depth,
        "eval of input per line": "x = input()\n" + repeat("eval(x)\n", size - 12),
        "many tainted names into one eval": tainted + "eval(str([" + ", ".join(names) + "]))\n",
        "nested walrus over input": "("
        + "".join(f"a{i} := (" for i in range(depth))
        + "input()"
        + ")" * depth
        + ")\n",
        "long attribute chain": "a" + repeat(".b", size - 3) + "()",
        "many functions": repeat("def f(): pass\n", size),
        "one long non-ASCII line of asserts": repeat("\u00e9 = 1; assert \u00e9; ", size),
        "many secrets": repeat('password = "hunter2"\n', size),
        "long string literal": 'x = "' + "a" * (size - 6) + '"',
        "deep if nesting": "".join("    " * i + "if x:\n" for i in range(ifs))
        + "    " * ifs
        + "pass\n",
    }


def calculator_attacks(size: int) -> dict[str, str]:
    return {
        "power tower": "9**9**9",
        "big power": "10**9999 + 1",
        "factorial": "factorial(1000)",
        "product of long numbers": "9" * (size // 2 - 1) + "*" + "9" * (size // 2 - 1),
        "deep parentheses": "(" * 45 + "1" + ")" * 45,
        "many terms": fill("1+", size - 1) + "1",
        "rounding": "round(1.5, 10000)",
    }


@dataclass(frozen=True, slots=True)
class AgentCase:
    """An agent's work function, its size limit and the inputs to run."""

    agent: str
    limit: int
    work: Callable[[Any], object]
    ordinary: Callable[[int], Any]
    attacks: Callable[[int], dict[str, Any]]


QUESTION = "When will the committee vote on the laboratory budget?"


def _qa_ordinary(size: int) -> tuple[str, str]:
    return QUESTION, fill(PROSE, size)


def _qa_attacks(size: int) -> dict[str, tuple[str, str]]:
    """Hostile contexts with an ordinary question, and the longest question of
    distinct terms over a context of one short sentence per term."""
    attacks = {name: (QUESTION, text) for name, text in text_attacks(size).items()}
    question = " ".join(f"t{i}" for i in range(qa.MAX_QUESTION_CHARS))[: qa.MAX_QUESTION_CHARS]
    context = fill(" ".join(f"{t}." for t in question.split()) + " ", size)
    attacks["longest question over many sentences"] = (question, context)
    return attacks


def _qa_work(question_and_context: tuple[str, str]) -> object:
    return qa.answer(*question_and_context)


def _prose(size: int) -> str:
    return fill(PROSE, size)


CASES = (
    AgentCase("sentiment", sentiment.MAX_TEXT_CHARS, sentiment.analyze, _prose, text_attacks),
    AgentCase("summarizer", summarizer.MAX_TEXT_CHARS, summarizer.summarize, _prose, text_attacks),
    AgentCase("keywords", keywords.MAX_TEXT_CHARS, keywords.analyze, _prose, text_attacks),
    AgentCase("qa", qa.MAX_CONTEXT_CHARS, _qa_work, _qa_ordinary, _qa_attacks),
    AgentCase(
        "code-reviewer",
        code_reviewer.MAX_SOURCE_BYTES,
        code_reviewer.review,
        lambda n: repeat(PYTHON, n),
        code_attacks,
    ),
    AgentCase(
        "calculator",
        calculator.MAX_EXPRESSION_CHARS,
        calculator.evaluate,
        lambda n: fill(ARITHMETIC, n - 1) + "1",
        calculator_attacks,
    ),
)


def _seconds(work: Callable[[Any], object], given: Any) -> float:
    start = time.perf_counter()
    with contextlib.suppress(AgentError):  # a refusal is an answer too
        work(given)
    return time.perf_counter() - start


def measure(case: AgentCase, *, scale: float, rounds: int) -> dict[str, Any]:
    """Median seconds of the ordinary input and of each attack, and the worst ratio."""
    size = max(64, int(case.limit * scale))
    inputs = {"ordinary": case.ordinary(size), **case.attacks(size)}
    times: dict[str, list[float]] = {name: [] for name in inputs}
    for _ in range(rounds):
        for name, given in inputs.items():
            times[name].append(_seconds(case.work, given))
    medians = {name: statistics.median(values) for name, values in times.items()}
    ordinary = medians.pop("ordinary")
    ratios = {name: t / ordinary for name, t in medians.items()}
    worst = max(ratios, key=ratios.__getitem__)
    return {
        "size": size,
        "ordinary_s": round(ordinary, 6),
        "worst": worst,
        "worst_s": round(medians[worst], 6),
        "worst_ratio": round(ratios[worst], 2),
        "ratios": {name: round(r, 2) for name, r in ratios.items()},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agents_worst", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="a tenth of the limits, one round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--agents", help="comma-separated agent names (default: all)")
    args = parser.parse_args(argv)
    chosen = set(args.agents.split(",")) if args.agents else {c.agent for c in CASES}
    scale, rounds = (0.1, 1) if args.tiny else (1.0, args.rounds)
    report: dict[str, Any] = {}
    for case in CASES:
        if case.agent in chosen:
            report[case.agent] = measure(case, scale=scale, rounds=rounds)
            row = report[case.agent]
            print(
                f"{case.agent}: worst x{row['worst_ratio']} ({row['worst']}) at "
                f"{row['size']} chars; ordinary {row['ordinary_s'] * 1000:.1f} ms",
                file=sys.stderr,
            )
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
