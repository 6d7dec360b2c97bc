"""Tests for the safe calculator."""

from __future__ import annotations

import json
import math
import time

import pytest

from agentmesh.agents.calculator.logic import (
    MAX_AST_DEPTH,
    MAX_EXPRESSION_CHARS,
    MAX_INT_DIGITS,
    Calculation,
    evaluate,
    format_number,
)
from agentmesh.runtime.errors import InvalidInput, LimitExceeded


def value(expression: str) -> int | float:
    return evaluate(expression).value


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2", 3),
        ("2*(3+4)**2", 98),
        ("7/2", 3.5),
        ("6/2", 3),
        ("7//2", 3),
        ("-7//2", -4),
        ("7 % 3", 1),
        ("-7 % 3", 2),
        ("2**-1", 0.5),
        ("-2**2", -4),
        ("+5", 5),
        ("2**3**2", 512),
        ("1.5 * 4", 6.0),
        ("0.1 + 0.2", 0.1 + 0.2),
        ("7.5 % 2", 1.5),
        ("10**20 // 3", 33333333333333333333),
    ],
)
def test_arithmetic(expression: str, expected: int | float) -> None:
    result = value(expression)
    assert result == expected
    assert type(result) is type(expected)


def test_integer_arithmetic_is_exact() -> None:
    assert value("2**100 + 1") == 2**100 + 1
    assert value("10**30 / 10**10") == 10**20
    assert isinstance(value("10**30 / 10**10"), int)
    assert value("factorial(25)") == math.factorial(25)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("pi", math.pi),
        ("e", math.e),
        ("tau / 2", math.pi),
        ("sqrt(2)", math.sqrt(2)),
        ("sqrt(16)", 4),
        ("abs(-3)", 3),
        ("abs(-2.5)", 2.5),
        ("round(2.567, 2)", 2.57),
        ("round(2.5)", 2),
        ("floor(-1.5)", -2),
        ("ceil(1.2)", 2),
        ("log(e)", 1.0),
        ("log(8, 2)", 3.0),
        ("log10(1000)", 3.0),
        ("exp(0)", 1.0),
        ("sin(0)", 0.0),
        ("cos(0)", 1.0),
        ("tan(0)", 0.0),
        ("min(3, 1.5, 2)", 1.5),
        ("max(3, 1.5, 2)", 3),
        ("hypot(3, 4)", 5.0),
        ("factorial(5)", 120),
    ],
)
def test_constants_and_functions(expression: str, expected: int | float) -> None:
    result = value(expression)
    assert result == pytest.approx(expected)
    assert type(result) is type(expected)


def test_text_is_plain_for_ints_and_repr_for_floats() -> None:
    assert evaluate("2*(3+4)**2").text == "98"
    assert evaluate("7/2").text == "3.5"
    assert evaluate("0.1+0.2").text == "0.30000000000000004"
    assert evaluate("1e16*10").text == "1e+17"
    assert evaluate("2.0*3").text == "6.0"
    big = evaluate("10**5000 + 1")  # beyond Python's default 4300-digit str() limit
    assert big.text == "1" + "0" * 4999 + "1"
    assert format_number(-(10**4500)) == "-1" + "0" * 4500


def test_to_dict() -> None:
    result = evaluate(" 1 + 1 ")
    assert isinstance(result, Calculation)
    assert result.to_dict() == {"expression": " 1 + 1 ", "value": 2, "text": "2", "type": "int"}
    assert evaluate("1/4").to_dict()["value"] == 0.25
    huge = evaluate("2**200").to_dict()
    assert huge["value"] is None  # not exact as a double; text carries it
    assert huge["text"] == str(2**200)
    assert json.loads(json.dumps(huge)) == huge


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("().__class__", "attribute access not allowed"),
        ("(1).real", "attribute access not allowed"),
        ("math.pi", "attribute access not allowed"),
        ("[1][0]", "subscripts not allowed"),
        ("[1]", "lists not allowed"),
        ("x[0]", "subscripts not allowed"),
        ("lambda: 1", "lambda not allowed"),
        ("[i for i in (1, 2)]", "comprehensions not allowed"),
        ("sum(i for i in (1, 2))", "unknown function 'sum'"),
        ("(lambda: 1)()", "only functions called by name"),
        ("'a' * 3", "str literals not allowed"),
        ("True + 1", "bool literals not allowed"),
        ("1j", "complex literals not allowed"),
        ("1 < 2", "comparisons not allowed"),
        ("1 if 1 else 2", "conditional expressions not allowed"),
        ("(x := 1)", "assignment expressions not allowed"),
        ("1 << 100", "operator << not allowed"),
        ("~1", "operator ~ not allowed"),
        ("foo + 1", "unknown name 'foo'"),
        ("sqrt", "function 'sqrt' must be called"),
        ("pi(2)", "'pi' is a constant, not a function"),
        ("round(2.5, ndigits=1)", "does not take keyword arguments"),
        ("sqrt(1, 2)", "sqrt() takes 1 argument, got 2"),
        ("log()", "log() takes 1 to 2 arguments, got 0"),
        ("max()", "max() takes at least 1 argument, got 0"),
    ],
)
def test_rejects_everything_outside_the_grammar(expression: str, fragment: str) -> None:
    with pytest.raises(InvalidInput) as info:
        evaluate(expression)
    assert info.value.field == "expression"
    assert fragment in info.value.problem


def test_grammar_is_checked_before_anything_is_evaluated() -> None:
    # The division by zero on the left would fail first if we evaluated eagerly.
    with pytest.raises(InvalidInput, match="attribute access"):
        evaluate("1/0 + ().__class__")


@pytest.mark.parametrize("expression", ["1/0", "1//0", "1 % 0", "1.0/0", "0**-1", "5 % 0.0"])
def test_division_by_zero(expression: str) -> None:
    with pytest.raises(InvalidInput) as info:
        evaluate(expression)
    assert info.value.problem.startswith("division by zero")


@pytest.mark.parametrize(
    ("expression", "function"),
    [
        ("sqrt(-1)", "sqrt"),
        ("log(0)", "log"),
        ("log(-1)", "log"),
        ("log(8, 1)", "log"),
        ("log10(0)", "log10"),
        ("factorial(-1)", "factorial"),
        ("factorial(2.5)", "factorial"),
    ],
)
def test_domain_errors_name_the_function(expression: str, function: str) -> None:
    with pytest.raises(InvalidInput) as info:
        evaluate(expression)
    assert info.value.problem.startswith(f"{function}() math domain error")


def test_fractional_power_of_negative_number_is_not_real() -> None:
    with pytest.raises(InvalidInput, match="no real value"):
        evaluate("(-8) ** (1/3)")


@pytest.mark.parametrize(
    ("expression", "column"),
    [("1 +", 4), ("1 2", 3), ("  (1", 3), ("1 + * 2", 5)],
)
def test_syntax_errors_report_the_column(expression: str, column: int) -> None:
    with pytest.raises(InvalidInput) as info:
        evaluate(expression)
    assert info.value.problem.startswith(f"syntax error at column {column}: ")


def test_error_columns_count_from_the_original_expression() -> None:
    with pytest.raises(InvalidInput, match="unknown name 'foo' at column 7"):
        evaluate("  1 + foo")


@pytest.mark.parametrize(
    "expression",
    [
        "9**9**9",
        "2**2**2**2**2",
        "10**10001",
        "(10**9999) * (10**9999)",
        "factorial(1001)",
        "factorial(1000) ** 5",
        "10**(10**100)",
    ],
)
def test_huge_integers_are_rejected_quickly(expression: str) -> None:
    started = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        evaluate(expression)
    assert time.perf_counter() - started < 1.0
    assert info.value.limit == "expression"


def test_integer_digit_limit_is_exact() -> None:
    assert len(evaluate(f"10**{MAX_INT_DIGITS - 1}").text) == MAX_INT_DIGITS
    with pytest.raises(LimitExceeded):
        evaluate(f"10**{MAX_INT_DIGITS}")


@pytest.mark.parametrize("expression", ["1e308 * 10", "exp(1000)", "1e400", "2.0 ** 5000"])
def test_non_finite_floats_are_rejected(expression: str) -> None:
    with pytest.raises(LimitExceeded):
        evaluate(expression)


def test_big_int_mixed_with_float_is_rejected() -> None:
    with pytest.raises(LimitExceeded, match="too large"):
        evaluate("10**400 * 1.5")


def test_length_limit() -> None:
    with pytest.raises(LimitExceeded, match="characters long"):
        evaluate("1+" * (MAX_EXPRESSION_CHARS // 2) + "1")


def test_depth_limit() -> None:
    with pytest.raises(LimitExceeded, match="nests deeper"):
        evaluate("-" * (MAX_AST_DEPTH + 5) + "1")
    with pytest.raises(LimitExceeded, match="nests deeper"):
        evaluate("1" + "+1" * (MAX_AST_DEPTH + 5))
    # Parentheses alone add no depth.
    assert value("(" * 150 + "1" + ")" * 150) == 1
    assert value("1" + "+1" * 40) == 41


def test_node_count_limit() -> None:
    expression = "max(" + "pi," * 330 + "pi)"
    assert len(expression) <= MAX_EXPRESSION_CHARS
    with pytest.raises(LimitExceeded, match="elements"):
        evaluate(expression)


def test_parser_nesting_limit_is_an_error_not_a_crash() -> None:
    with pytest.raises((InvalidInput, LimitExceeded)):
        evaluate("(" * 300 + "1" + ")" * 300)


@pytest.mark.parametrize("expression", ["", "   ", "\n"])
def test_empty_expression_is_invalid(expression: str) -> None:
    with pytest.raises(InvalidInput) as info:
        evaluate(expression)
    assert info.value.field == "expression"


def test_null_bytes_are_invalid() -> None:
    with pytest.raises(InvalidInput):
        evaluate("1 +\x00 2")
