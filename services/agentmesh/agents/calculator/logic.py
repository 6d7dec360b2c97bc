"""A safe calculator: parse with ``ast``, check the tree, and walk it ourselves.

Nothing is ever passed to ``eval``/``compile``/``exec``. Only a whitelist of node
types is evaluated (numbers, arithmetic operators, a few constants and math
functions called by name); anything else, such as attribute access, subscripts,
lambdas, comprehensions or calls of arbitrary names, is rejected before any
evaluation. Every step that could take unbounded time or memory is bounded:
expression length, tree depth and size, the estimated size of ``int ** int``
before it is computed, the size of every integer intermediate, and factorials.

Integer arithmetic is exact; ``/`` gives an int when the division is exact
(``6/2 == 3``) and a float otherwise (``7/2 == 3.5``). Float results must be finite.
"""

from __future__ import annotations

import ast
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agentmesh.runtime.errors import InvalidInput, LimitExceeded

__all__ = [
    "CONSTANTS",
    "FUNCTIONS",
    "MAX_AST_DEPTH",
    "MAX_AST_NODES",
    "MAX_EXPRESSION_CHARS",
    "MAX_FACTORIAL",
    "MAX_INT_DIGITS",
    "MAX_ROUND_DIGITS",
    "MAX_VARIABLES",
    "Calculation",
    "Number",
    "evaluate",
    "format_number",
    "variables_of",
]

MAX_EXPRESSION_CHARS = 1_000
"""Longest accepted expression, in characters."""
MAX_AST_DEPTH = 50
"""Deepest accepted syntax tree (nesting of operators, calls, parentheses)."""
MAX_AST_NODES = 500
"""Most syntax-tree nodes an expression may have."""
MAX_INT_DIGITS = 10_000
"""Integers (results and intermediates) may have at most this many decimal digits."""
MAX_FACTORIAL = 1_000
"""Largest accepted factorial argument."""
MAX_ROUND_DIGITS = 10_000
"""Largest accepted ``abs(ndigits)`` for ``round``."""
JSON_SAFE_INT = 2**53
"""Integers above this magnitude are not exact as a JSON/protobuf number (a double)."""

Number = int | float

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}

_FIELD = "expression"
_LOG10_2 = math.log10(2)
# Python refuses str() of ints with more than 4300 digits by default (CVE-2020-10735);
# bigger ones are printed in chunks of this many digits instead of changing that
# process-wide setting.
_STR_CHUNK_DIGITS = 4_000


@dataclass(frozen=True, slots=True)
class Calculation:
    """The expression as given, its value, and the value as display text.

    ``text`` is always exact: an int in plain decimal digits, a float in Python's
    shortest round-trip form (``repr``).
    """

    expression: str
    value: Number
    text: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form; ``value`` is null for ints too large to be exact as a double.

        Structured output travels as a protobuf ``Value`` whose numbers are doubles,
        so ints beyond 2**53 are only carried exactly by ``text``.
        """
        exact = isinstance(self.value, float) or abs(self.value) <= JSON_SAFE_INT
        return {
            "expression": self.expression,
            "value": self.value if exact else None,
            "text": self.text,
            "type": "float" if isinstance(self.value, float) else "int",
        }


def format_number(value: Number) -> str:
    """Display text: ints in full (any size), floats via ``repr``."""
    if isinstance(value, float):
        return repr(value)
    if value < 0:
        return "-" + format_number(-value)
    chunk = 10**_STR_CHUNK_DIGITS
    if value < chunk:
        return str(value)
    parts: list[str] = []
    while value >= chunk:
        value, low = divmod(value, chunk)
        parts.append(str(low).zfill(_STR_CHUNK_DIGITS))
    parts.append(str(value))
    return "".join(reversed(parts))


def _int_digits(value: int) -> int:
    """An upper bound on the decimal digits of ``value`` (exact to within one)."""
    return int(abs(value).bit_length() * _LOG10_2) + 1


def _too_many_digits(value: int) -> bool:
    # With b bits, an int has between floor((b-1)*log10(2))+1 and floor(b*log10(2))+1
    # digits; only in between do we pay for an exact count.
    bits = abs(value).bit_length()
    if int(bits * _LOG10_2) + 1 <= MAX_INT_DIGITS:
        return False
    if int((bits - 1) * _LOG10_2) + 1 > MAX_INT_DIGITS:
        return True
    return len(format_number(abs(value))) > MAX_INT_DIGITS


def _check(value: Number) -> Number:
    """Reject over-large ints and non-finite floats; return ``value`` otherwise."""
    if isinstance(value, float):
        if math.isnan(value):
            raise InvalidInput(_FIELD, "result is not a number")
        if math.isinf(value):
            raise LimitExceeded(_FIELD, "result is too large for a float")
    elif _too_many_digits(value):
        raise LimitExceeded(_FIELD, f"integer result has more than {MAX_INT_DIGITS} digits")
    return value


def _float(value: Number, where: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise LimitExceeded(_FIELD, f"{where}: number is too large for a float") from None


# --- operators ------------------------------------------------------------------


def _divide(a: Number, b: Number) -> Number:
    if b == 0:
        raise InvalidInput(_FIELD, "division by zero")
    if isinstance(a, int) and isinstance(b, int):
        if a % b == 0:
            return a // b
        try:
            return a / b  # correctly rounded even for big ints
        except OverflowError:
            raise LimitExceeded(_FIELD, "quotient is too large for a float") from None
    return _float(a, "/") / _float(b, "/")


def _floor_divide(a: Number, b: Number) -> Number:
    if b == 0:
        raise InvalidInput(_FIELD, "division by zero")
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    return _float(a, "//") // _float(b, "//")


def _modulo(a: Number, b: Number) -> Number:
    if b == 0:
        raise InvalidInput(_FIELD, "division by zero")
    if isinstance(a, int) and isinstance(b, int):
        return a % b
    return _float(a, "%") % _float(b, "%")


def _power(a: Number, b: Number) -> Number:
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        # |a| >= 2 has at least 0.3 * b digits, so a huge b is rejected without
        # ever turning it into a float.
        if abs(a) > 1 and (b > 4 * MAX_INT_DIGITS or b * math.log10(abs(a)) > MAX_INT_DIGITS):
            # Estimated before computing, so 9**9**9 fails at once.
            raise LimitExceeded(
                _FIELD, f"integer result would have more than {MAX_INT_DIGITS} digits"
            )
        exact: int = a**b  # b >= 0, so an int (typeshed cannot tell)
        return exact
    if a == 0 and b < 0:
        raise InvalidInput(_FIELD, "division by zero (zero to a negative power)")
    try:
        return math.pow(_float(a, "**"), _float(b, "**"))
    except OverflowError:
        raise LimitExceeded(_FIELD, "result is too large for a float") from None
    except ValueError:
        # math.pow refuses what would be complex, e.g. (-8) ** (1/3).
        raise InvalidInput(
            _FIELD, "negative number to a fractional power has no real value"
        ) from None


_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: _divide,
    ast.FloorDiv: _floor_divide,
    ast.Mod: _modulo,
    ast.Pow: _power,
}
_OPERATOR_SYMBOLS: dict[type[ast.AST], str] = {
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.Not: "not",
}


# --- functions ------------------------------------------------------------------


def _arity(name: str, args: list[Number], low: int, high: int | None) -> None:
    if len(args) < low or (high is not None and len(args) > high):
        if high == low:
            expected = f"{low} argument{'s' if low != 1 else ''}"
        elif high is None:
            expected = f"at least {low} argument{'s' if low != 1 else ''}"
        else:
            expected = f"{low} to {high} arguments"
        raise InvalidInput(_FIELD, f"{name}() takes {expected}, got {len(args)}")


def _domain(name: str, problem: str) -> InvalidInput:
    return InvalidInput(_FIELD, f"{name}() math domain error: {problem}")


def _sqrt(args: list[Number]) -> Number:
    _arity("sqrt", args, 1, 1)
    (x,) = args
    if x < 0:
        raise _domain("sqrt", "argument must not be negative")
    if isinstance(x, int):
        root = math.isqrt(x)
        if root * root == x:
            return root  # exact for perfect squares, however large
    return math.sqrt(_float(x, "sqrt"))


def _log(args: list[Number]) -> Number:
    _arity("log", args, 1, 2)
    if args[0] <= 0:
        raise _domain("log", "argument must be positive")
    if len(args) == 1:
        return math.log(args[0])
    base = args[1]
    if base <= 0 or base == 1:
        raise _domain("log", "base must be positive and not 1")
    return math.log(args[0], base)


def _log10(args: list[Number]) -> Number:
    _arity("log10", args, 1, 1)
    if args[0] <= 0:
        raise _domain("log10", "argument must be positive")
    return math.log10(args[0])


def _exp(args: list[Number]) -> Number:
    _arity("exp", args, 1, 1)
    try:
        return math.exp(_float(args[0], "exp"))
    except OverflowError:
        raise LimitExceeded(_FIELD, "exp() result is too large for a float") from None


def _trig(name: str, function: Callable[[float], float]) -> Callable[[list[Number]], Number]:
    def apply(args: list[Number]) -> Number:
        _arity(name, args, 1, 1)
        return function(_float(args[0], name))

    return apply


def _abs(args: list[Number]) -> Number:
    _arity("abs", args, 1, 1)
    return abs(args[0])


def _round(args: list[Number]) -> Number:
    _arity("round", args, 1, 2)
    if len(args) == 1:
        return round(args[0])
    digits = args[1]
    if not isinstance(digits, int):
        raise InvalidInput(_FIELD, "round() digits must be an integer")
    if abs(digits) > MAX_ROUND_DIGITS:
        raise LimitExceeded(_FIELD, f"round() digits must be at most {MAX_ROUND_DIGITS}")
    return round(args[0], digits)


def _floor(args: list[Number]) -> Number:
    _arity("floor", args, 1, 1)
    return math.floor(args[0])


def _ceil(args: list[Number]) -> Number:
    _arity("ceil", args, 1, 1)
    return math.ceil(args[0])


def _min(args: list[Number]) -> Number:
    _arity("min", args, 1, None)
    return min(args)


def _max(args: list[Number]) -> Number:
    _arity("max", args, 1, None)
    return max(args)


def _hypot(args: list[Number]) -> Number:
    _arity("hypot", args, 1, None)
    return math.hypot(*(_float(a, "hypot") for a in args))


def _factorial(args: list[Number]) -> Number:
    _arity("factorial", args, 1, 1)
    (n,) = args
    if not isinstance(n, int) or n < 0:
        raise _domain("factorial", "argument must be a non-negative integer")
    if n > MAX_FACTORIAL:
        raise LimitExceeded(_FIELD, f"factorial() argument must be at most {MAX_FACTORIAL}")
    return math.factorial(n)


FUNCTIONS: dict[str, Callable[[list[Number]], Number]] = {
    "sqrt": _sqrt,
    "abs": _abs,
    "round": _round,
    "floor": _floor,
    "ceil": _ceil,
    "log": _log,
    "log10": _log10,
    "exp": _exp,
    "sin": _trig("sin", math.sin),
    "cos": _trig("cos", math.cos),
    "tan": _trig("tan", math.tan),
    "min": _min,
    "max": _max,
    "hypot": _hypot,
    "factorial": _factorial,
}


# --- parsing and checking -------------------------------------------------------


def _parse(expression: str) -> ast.Expression:
    """Parse, reporting columns (1-based, in characters) of the expression as given."""
    # The parser rejects leading spaces as an indent; eval() would strip them too.
    body = expression.lstrip(" \t\f")
    shift = len(expression) - len(body)
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError as exc:
        first_line = body.split("\n", 1)[0]
        column = exc.offset if exc.offset and exc.offset > 0 else len(first_line) + 1
        if exc.lineno in (None, 1):
            column += shift
        raise InvalidInput(_FIELD, f"syntax error at column {column}: {exc.msg}") from None
    except ValueError:
        # e.g. "source code string cannot contain null bytes"
        raise InvalidInput(_FIELD, "contains characters that are not allowed") from None
    except (RecursionError, MemoryError):
        raise LimitExceeded(_FIELD, "expression is nested too deeply") from None
    # ast columns are UTF-8 byte offsets into their line; make them character
    # offsets into the expression as given, so error messages point correctly.
    lines = body.split("\n")
    for node in ast.walk(tree):
        if isinstance(node, ast.expr):
            line = lines[node.lineno - 1] if 0 < node.lineno <= len(lines) else ""
            column = len(line.encode()[: node.col_offset].decode(errors="ignore"))
            node.col_offset = column + (shift if node.lineno == 1 else 0)
    return tree


def _at(node: ast.AST) -> str:
    column = getattr(node, "col_offset", None)
    return f" at column {column + 1}" if isinstance(column, int) else ""


_DESCRIPTIONS: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Compare: "comparisons",
    ast.BoolOp: "boolean operators",
    ast.IfExp: "conditional expressions",
    ast.NamedExpr: "assignment expressions",
    ast.Tuple: "tuples",
    ast.List: "lists",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.JoinedStr: "strings",
    ast.Starred: "starred arguments",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slices",
}


def _check_node(node: ast.AST, known: Mapping[str, Number]) -> None:
    """Raise unless ``node`` is part of the calculator grammar (``known``: variables)."""
    if isinstance(node, ast.Expression | ast.Load):
        return
    if isinstance(node, ast.Constant):
        value = node.value
        # bool is an int subclass, but True + True is not arithmetic we want.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(_FIELD, f"{type(value).__name__} literals not allowed{_at(node)}")
    elif isinstance(node, ast.BinOp | ast.UnaryOp):
        if type(node.op) not in _BINARY and not isinstance(node.op, ast.UAdd | ast.USub):
            symbol = _OPERATOR_SYMBOLS.get(type(node.op), type(node.op).__name__)
            raise InvalidInput(_FIELD, f"operator {symbol} not allowed{_at(node)}")
    elif isinstance(node, ast.operator | ast.unaryop):
        return  # checked with the BinOp/UnaryOp that holds it
    elif isinstance(node, ast.Name):
        if node.id in FUNCTIONS:
            raise InvalidInput(_FIELD, f"function '{node.id}' must be called{_at(node)}")
        if node.id not in CONSTANTS and node.id not in known:
            raise InvalidInput(_FIELD, f"unknown name '{node.id}'{_at(node)}")
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise InvalidInput(_FIELD, f"only functions called by name are allowed{_at(node)}")
        name = node.func.id
        if name not in FUNCTIONS:
            if name in CONSTANTS:
                raise InvalidInput(_FIELD, f"'{name}' is a constant, not a function{_at(node)}")
            raise InvalidInput(_FIELD, f"unknown function '{name}'{_at(node)}")
        if node.keywords:
            raise InvalidInput(_FIELD, f"{name}() does not take keyword arguments{_at(node)}")
    else:
        what = _DESCRIPTIONS.get(type(node), type(node).__name__)
        raise InvalidInput(_FIELD, f"{what} not allowed{_at(node)}")


def _validate(tree: ast.Expression, known: Mapping[str, Number]) -> None:
    """Check size, depth and grammar of the whole tree before evaluating anything.

    Breadth-first and iterative, so the outermost problem is reported first and a
    deep tree cannot exhaust the stack; evaluation (recursive) only ever sees a
    tree at most ``MAX_AST_DEPTH`` deep.
    """
    count = 0
    queue: deque[tuple[ast.AST, int]] = deque([(tree, 1)])
    while queue:
        node, depth = queue.popleft()
        count += 1
        if depth > MAX_AST_DEPTH:
            raise LimitExceeded(_FIELD, f"expression nests deeper than {MAX_AST_DEPTH} levels")
        if count > MAX_AST_NODES:
            raise LimitExceeded(_FIELD, f"expression has more than {MAX_AST_NODES} elements")
        _check_node(node, known)
        # A call's function name was checked with the call; only its arguments remain.
        children = node.args if isinstance(node, ast.Call) else ast.iter_child_nodes(node)
        queue.extend((child, depth + 1) for child in children)


def _evaluate(node: ast.expr, known: Mapping[str, Number]) -> Number:
    """Evaluate a tree that ``_validate`` accepted."""
    if isinstance(node, ast.Constant):
        value = node.value
        assert isinstance(value, int | float)  # _check_node admitted only numbers
        return _check(value)
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, known)
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, known), _evaluate(node.right, known)
        # Cheap bound first so we never build a product far past the limit.
        if (
            isinstance(node.op, ast.Mult)
            and isinstance(left, int)
            and isinstance(right, int)
            and _int_digits(left) + _int_digits(right) > MAX_INT_DIGITS + 2
        ):
            raise LimitExceeded(_FIELD, f"integer result has more than {MAX_INT_DIGITS} digits")
        try:
            return _check(_BINARY[type(node.op)](left, right))
        except OverflowError:
            raise LimitExceeded(_FIELD, "result is too large for a float") from None
    if isinstance(node, ast.Name):
        return known[node.id] if node.id in known else CONSTANTS[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        args = [_evaluate(arg, known) for arg in node.args]
        try:
            return _check(FUNCTIONS[name](args))
        except OverflowError:
            raise LimitExceeded(_FIELD, f"{name}() result is too large") from None
        except (ValueError, ZeroDivisionError) as exc:
            # Anything math reports that we did not anticipate is still about the input.
            raise _domain(name, str(exc)) from None
    raise InvalidInput(_FIELD, f"{type(node).__name__} not allowed{_at(node)}")  # unreachable


def evaluate(expression: str, variables: Mapping[str, Number] | None = None) -> Calculation:
    """Evaluate an arithmetic expression safely and exactly where possible.

    Raises ``InvalidInput("expression", ...)`` for empty input, syntax errors
    ("syntax error at column N: ..."), anything outside the grammar, unknown names
    or functions, division by zero and math domain errors (the message names the
    function), and ``LimitExceeded("expression", ...)`` when a size bound is hit.
    ``variables``: values of names the expression may use besides the constants.
    """
    if not isinstance(expression, str):
        raise InvalidInput(_FIELD, "must be a string")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise LimitExceeded(
            _FIELD,
            f"is {len(expression)} characters long; the limit is {MAX_EXPRESSION_CHARS}",
        )
    if not expression.strip():
        raise InvalidInput(_FIELD, "must not be empty")
    tree = _parse(expression.rstrip())
    known = variables or {}
    _validate(tree, known)
    value = _evaluate(tree.body, known)
    return Calculation(expression=expression, value=value, text=format_number(value))


MAX_VARIABLES = 10
"""Most unknown names (variables) one expression may use."""


def variables_of(expression: str) -> list[str]:
    """The names ``expression`` uses that are neither constants nor functions, in order of
    first appearance: the variables whose values :func:`evaluate` must be given."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise LimitExceeded(
            _FIELD, f"is {len(expression)} characters long; the limit is {MAX_EXPRESSION_CHARS}"
        )
    tree = _parse(expression.rstrip())
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    names = sorted(
        (
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Name)
            and id(n) not in called
            and n.id not in CONSTANTS
            and n.id not in FUNCTIONS
        ),
        key=lambda n: (n.lineno, n.col_offset),
    )
    found = list(dict.fromkeys(n.id for n in names))
    if len(found) > MAX_VARIABLES:
        raise LimitExceeded(_FIELD, f"uses {len(found)} unknown names; at most {MAX_VARIABLES}")
    return found
