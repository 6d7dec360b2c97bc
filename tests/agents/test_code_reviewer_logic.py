"""Tests for the static code reviewer."""

from __future__ import annotations

import json
import textwrap

import pytest

from agentmesh.agents.code_reviewer.logic import (
    MAX_AST_DEPTH,
    MAX_FILENAME_CHARS,
    MAX_FINDINGS,
    MAX_SOURCE_BYTES,
    Finding,
    Review,
    review,
)
from agentmesh.runtime.errors import InvalidInput, LimitExceeded


def run(source: str, filename: str = "<input>") -> Review:
    return review(textwrap.dedent(source), filename=filename)


def rules(source: str, filename: str = "<input>") -> list[tuple[str, str, int]]:
    """(rule, severity, line) of every finding."""
    return [(f.rule, f.severity, f.line) for f in run(source, filename).findings]


def complexity_of(source: str) -> dict[str, int]:
    return {f.name: f.complexity for f in run(source).functions}


# --- the headline case ------------------------------------------------------------


def test_eval_of_input_is_high_at_its_line() -> None:
    result = review("x = eval(input())")
    assert result.max_severity == "high"
    (finding,) = result.findings
    assert finding == Finding(
        rule="eval-user-input",
        severity="high",
        line=1,
        col=5,
        message=finding.message,
    )
    assert "user input reaches eval" in finding.message


def test_input_through_a_variable_reaches_exec() -> None:
    source = """
        def handler():
            command = input("> ")
            exec(command)
    """
    assert rules(source) == [("eval-user-input", "high", 4)]


def test_plain_eval_is_still_high() -> None:
    assert rules("data = '1 + 1'\nresult = eval(data)\n") == [("eval-exec", "high", 2)]


def test_the_code_is_never_run() -> None:
    # If the reviewer executed anything, this would raise SystemExit.
    result = review("raise SystemExit(3)\nimport os\nos._exit(1)\n")
    assert result.findings == ()


# --- complexity -------------------------------------------------------------------


def test_known_complexities() -> None:
    source = """
        def straight():
            return 1

        def branches(x):
            if x > 0 and x < 10:        # if +1, and +1
                return 1
            elif x == 0:                # +1
                return 0
            for i in range(x):          # +1
                while i:                # +1
                    i -= 1
            try:
                pass
            except ValueError:          # +1
                pass
            except (TypeError, KeyError):  # +1
                pass
            y = 1 if x else 2           # +1
            assert y                    # +1
            return [a for a in range(3) if a]  # for +1, if +1

        async def matcher(command):
            match command:
                case "go":              # +1
                    return 1
                case "stop" if command: # +1
                    return 2
                case _:                 # wildcard: +0
                    return 3
    """
    assert complexity_of(source) == {"straight": 1, "branches": 12, "matcher": 3}


def test_nested_functions_and_methods_are_qualified_and_counted_separately() -> None:
    source = """
        class Shop:
            def buy(self, item):
                def check(x):
                    if x:
                        return True
                    return False
                return check(item) or item

            class Inner:
                def deep(self):
                    return [x for x in range(2)]
    """
    result = run(source)
    assert [(f.name, f.line, f.complexity) for f in result.functions] == [
        ("Shop.buy", 3, 2),
        ("Shop.buy.check", 4, 2),
        ("Shop.Inner.deep", 11, 2),
    ]


def _function_with_ifs(count: int) -> str:
    body = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(count))
    return f"def branchy(x):\n{body}    return -1\n"


@pytest.mark.parametrize(
    ("ifs", "expected"),
    [(9, None), (10, "medium"), (20, "high")],
)
def test_complexity_findings(ifs: int, expected: str | None) -> None:
    result = review(_function_with_ifs(ifs))
    assert result.functions[0].complexity == ifs + 1
    found = [f for f in result.findings if f.rule == "complexity"]
    if expected is None:
        assert found == []
    else:
        (finding,) = found
        assert finding.severity == expected
        assert finding.line == 1
        assert "branchy" in finding.message


# --- security rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import subprocess\nsubprocess.run(cmd, shell=True)\n", ("subprocess-shell", "high")),
        ("import subprocess as sp\nsp.Popen(cmd, shell=1)\n", ("subprocess-shell", "high")),
        ("from subprocess import call\ncall(cmd, shell=True)\n", ("subprocess-shell", "high")),
        ("import subprocess\nsubprocess.getoutput(cmd)\n", ("subprocess-shell", "high")),
        ("import os\nos.system(cmd)\n", ("os-shell", "high")),
        ("from os import popen\npopen(cmd)\n", ("os-shell", "high")),
        ("import pickle\npickle.loads(blob)\n", ("unsafe-deserialization", "high")),
        ("import cPickle\ncPickle.load(f)\n", ("unsafe-deserialization", "high")),
        ("import marshal\nmarshal.loads(blob)\n", ("unsafe-deserialization", "high")),
        ("from pickle import loads as l\nl(blob)\n", ("unsafe-deserialization", "high")),
        ("import yaml\nyaml.load(text)\n", ("yaml-unsafe-load", "medium")),
        ("import yaml\nyaml.load(text, Loader=yaml.Loader)\n", ("yaml-unsafe-load", "medium")),
        ("import yaml\nyaml.unsafe_load(text)\n", ("yaml-unsafe-load", "medium")),
        ("try:\n    f()\nexcept:\n    raise\n", ("bare-except", "medium")),
        ("try:\n    f()\nexcept Exception:\n    pass\n", ("swallowed-exception", "low")),
        ("try:\n    f()\nexcept BaseException as e:\n    ...\n", ("swallowed-exception", "low")),
        ("password = 'hunter2'\n", ("hardcoded-secret", "high")),
        ("API_KEY: str = 'abc'\n", ("hardcoded-secret", "high")),
        ("self.apiKey = 'abc'\n", ("hardcoded-secret", "high")),
        ("config['private_key'] = 'abc'\n", ("hardcoded-secret", "high")),
        ("connect(auth_token='abc')\n", ("hardcoded-secret", "high")),
        ("settings = {'client_secret': 'abc'}\n", ("hardcoded-secret", "high")),
        ("def login(user, passwd='abc'):\n    return user\n", ("hardcoded-secret", "high")),
        ("assert user.is_admin\n", ("assert-used", "low")),
        ("def f(items=[]):\n    return items\n", ("mutable-default", "medium")),
        ("def f(*, seen=set()):\n    return seen\n", ("mutable-default", "medium")),
        ("from os.path import *\n", ("wildcard-import", "low")),
        ("import requests\nrequests.get(url, verify=False)\n", ("tls-verify-disabled", "medium")),
        ("import httpx\nhttpx.Client(verify=False)\n", ("tls-verify-disabled", "medium")),
        ("import tempfile\ntempfile.mktemp()\n", ("insecure-tempfile", "medium")),
        ("import hashlib\nhashlib.md5(data)\n", ("weak-hash", "low")),
        ("import hashlib\nhashlib.new('SHA1')\n", ("weak-hash", "low")),
    ],
)
def test_security_rules(source: str, expected: tuple[str, str]) -> None:
    found = [(f.rule, f.severity) for f in review(source).findings]
    assert found == [expected]


@pytest.mark.parametrize(
    "source",
    [
        "import subprocess\nsubprocess.run(['ls', '-l'])\n",
        "import subprocess\nsubprocess.run(cmd, shell=False)\n",
        "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)\n",
        "import yaml\nyaml.load(text, yaml.CSafeLoader)\n",
        "import yaml\nyaml.safe_load(text)\n",
        "import json\njson.loads(text)\n",
        "password = ''\n",
        "password = os.environ['PASSWORD']\n",
        "password_field = 'password'\n",
        "token_url = 'https://example.com/token'\n",
        "tokenizer = 'bert'\n",
        "max_tokens = '5'\n",
        "try:\n    f()\nexcept ValueError:\n    pass\n",
        "try:\n    f()\nexcept Exception:\n    log()\n",
        "def f(items=None, n=0, name='x', t=()):\n    return items\n",
        "import hashlib\nhashlib.sha256(data)\n",
        "import hashlib\nhashlib.md5(data, usedforsecurity=False)\n",
        "import requests\nrequests.get(url, verify=True)\n",
        "import tempfile\ntempfile.mkstemp()\n",
        "from mylib import eval\neval(x)\n",
        "ast.literal_eval(text)\n",
    ],
)
def test_safe_code_has_no_findings(source: str) -> None:
    assert review(source).findings == ()


def test_asserts_are_fine_in_test_files() -> None:
    assert rules("assert 1 + 1 == 2\n", filename="tests/test_math.py") == []
    assert rules("assert 1 + 1 == 2\n", filename="src/app/math.py") == [("assert-used", "low", 1)]


def test_columns_are_one_based_characters() -> None:
    (finding,) = review("s = 'é'; y = eval(s)\n").findings
    assert (finding.line, finding.col) == (1, 14)


# --- report -----------------------------------------------------------------------


def test_findings_sorted_and_summarized() -> None:
    source = """
        import os, pickle
        from os import *

        def f(data, items=[]):
            try:
                os.system(data)
            except:
                pass
            return pickle.loads(data)
    """
    result = run(source, filename="app.py")
    assert result.filename == "app.py"
    assert [(f.rule, f.line) for f in result.findings] == [
        ("wildcard-import", 3),
        ("mutable-default", 5),
        ("os-shell", 7),
        ("bare-except", 8),
        ("unsafe-deserialization", 10),
    ]
    assert (result.summary.high, result.summary.medium, result.summary.low) == (2, 2, 1)
    assert result.summary.total == 5
    assert result.max_severity == "high"
    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["summary"] == {"high": 2, "medium": 2, "low": 1, "total": 5}
    assert data["findings"][0] == {
        "rule": "wildcard-import",
        "severity": "low",
        "line": 3,
        "col": 1,
        "message": result.findings[0].message,
    }


def test_clean_and_empty_source() -> None:
    result = review("")
    assert result.findings == ()
    assert result.functions == ()
    assert result.max_severity == "none"
    assert review("def add(a, b):\n    return a + b\n").max_severity == "none"


def test_secret_values_are_not_echoed() -> None:
    (finding,) = review("db_password = 'correct horse battery staple'\n").findings
    assert "correct horse" not in finding.message
    assert "db_password" in finding.message


# --- validation and limits --------------------------------------------------------


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(InvalidInput) as info:
        review("x = 1\ndef broken(:\n    pass\n")
    assert info.value.field == "source"
    assert info.value.problem.startswith("syntax error at line 2: ")


def test_null_bytes_are_invalid() -> None:
    with pytest.raises(InvalidInput):
        review("x = 1\x00")


def test_source_size_limit() -> None:
    with pytest.raises(LimitExceeded) as info:
        review("#" * (MAX_SOURCE_BYTES + 1))
    assert info.value.limit == "source"
    # Multi-byte characters count by their UTF-8 size.
    with pytest.raises(LimitExceeded):
        review("# " + "é" * (MAX_SOURCE_BYTES // 2))


def test_filename_limit() -> None:
    with pytest.raises(LimitExceeded):
        review("x = 1", filename="a" * (MAX_FILENAME_CHARS + 1))


@pytest.mark.parametrize(
    "source",
    [
        "x = " + "+".join(["1"] * 100_000),  # the parser's own recursion limit
        "x = " + "-" * 100_000 + "1",  # the parser runs out of stack memory
        "x = " + "lambda: " * (MAX_AST_DEPTH + 10) + "1",  # parses, but too deep
        "x = " + "(" * 300 + "1" + ")" * 300,  # "too many nested parentheses"
    ],
)
def test_deep_nesting_is_an_error_not_a_crash(source: str) -> None:
    with pytest.raises((LimitExceeded, InvalidInput)):
        review(source)


def test_moderate_nesting_is_fine() -> None:
    assert review("x = " + "+".join(["1"] * 300)).findings == ()


def test_findings_are_capped_but_all_counted() -> None:
    source = "é = 1; eval(x)\n" * (MAX_FINDINGS + 5)
    result = review(source)
    assert len(result.findings) == MAX_FINDINGS
    assert result.truncated
    assert result.summary.high == MAX_FINDINGS + 5
    assert result.findings[-1].line == MAX_FINDINGS
    assert result.findings[-1].col == 8


def test_nested_evals_each_see_the_user_input_inside() -> None:
    source = "x = input()\nprint(eval(eval(eval(x))))\neval(eval([1, 2]))\n"
    found = [(f.rule, f.line) for f in review(source).findings]
    assert found == [("eval-user-input", 2)] * 3 + [("eval-exec", 3)] * 2
