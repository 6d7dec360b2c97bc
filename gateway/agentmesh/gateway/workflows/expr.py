"""The workflow expression language: references, conditions and templates.

Expressions use a small, safe subset of Python's expression syntax, parsed
with :mod:`ast` and evaluated by a walker over an allow-list of node types;
nothing is ever compiled or run. What an expression can use:

* references: ``input.text``, ``input.data.key``, ``steps.ID.output.text``,
  ``steps.ID.output.data.counts.high``, ``steps.ID.outcome``, ``state.key``,
  ``items[0]``, ``data["some-key"]``; a missing key or index is ``null``;
* literals: numbers, ``'strings'``, ``true``/``false``/``null`` (Python's
  spellings too), lists ``[1, 2]``;
* ``and``, ``or`` (returning an operand, as in Python: ``a or b`` is a
  fallback value), ``not``, ``x if cond else y``;
* comparisons ``== != < <= > >=`` (ordering across types, or with ``null``, is
  false rather than an error), ``in`` and ``not in``;
* arithmetic ``+ - * / %`` on numbers (``+`` also joins strings and lists);
* functions ``len(x)`` and ``str(x)``.

Templates are strings with ``${expression}`` inside. A string that is exactly
one ``${...}`` gives the expression's value unchanged (an object stays an
object); otherwise each value is formatted into the text. ``$${`` writes a
literal ``${``.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_EXPRESSION_CHARS = 1000
# Largest string or list an expression or template may build: agent outputs are
# bounded by the message size, but a template can repeat one many times.
MAX_VALUE_LENGTH = 8 * 1024 * 1024
ROOTS = frozenset({"input", "steps", "state", "error", "item", "index"})  # item, index: in a map
_CONSTANT_NAMES: dict[str, Any] = {"true": True, "false": False, "null": None}
_FUNCTIONS = ("len", "str")

PathKey = str | int
Path = tuple[PathKey, ...]


class ExpressionError(ValueError):
    """An expression cannot be parsed or evaluated; the message says why."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def to_text(value: Any) -> str:
    """A value as it appears inside a template: JSON for objects, "" for null."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if _is_number(value):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _lookup(value: Any, key: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get(key) if isinstance(key, str) else None
    if isinstance(value, list | tuple) and isinstance(key, int) and not isinstance(key, bool):
        return value[key] if -len(value) <= key < len(value) else None
    return None


# -- parsing -------------------------------------------------------------------

_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Mod, ast.Compare, ast.Eq, ast.NotEq,
    ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Name, ast.Load, ast.Attribute,
    ast.Subscript, ast.Constant, ast.List, ast.Tuple, ast.Call, ast.IfExp,
)  # fmt: skip


def _path_of(node: ast.expr) -> Path | None:
    """The reference ``node`` spells (``steps.a.output`` -> ("steps", "a", "output"))."""
    keys: list[PathKey] = []
    while True:
        if isinstance(node, ast.Attribute):
            keys.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key = node.slice.value
            if not isinstance(key, str | int) or isinstance(key, bool):
                return None
            keys.append(key)
            node = node.value
        elif isinstance(node, ast.Name) and node.id in ROOTS:
            keys.append(node.id)
            return tuple(reversed(keys))
        else:
            return None


def _check_node(node: ast.AST) -> None:
    if not isinstance(node, _ALLOWED):
        raise ExpressionError(f"{type(node).__name__.lower()} is not allowed in an expression")
    if isinstance(node, ast.Constant) and not (
        node.value is None or isinstance(node.value, str | int | float | bool)
    ):
        raise ExpressionError(f"literal {node.value!r} is not allowed")
    if isinstance(node, ast.Name) and node.id not in ROOTS and node.id not in _CONSTANT_NAMES:
        if node.id in ("True", "False", "None") or node.id in _FUNCTIONS:
            return  # a function's name is only usable as a call: checked at the Call
        raise ExpressionError(
            f"unknown name {node.id!r}; start a reference with input, steps, state or error"
        )
    if isinstance(node, ast.Call) and (
        not isinstance(node.func, ast.Name)
        or node.func.id not in _FUNCTIONS
        or node.keywords
        or len(node.args) != 1
    ):
        raise ExpressionError(f"only {' and '.join(f'{f}(x)' for f in _FUNCTIONS)} can be called")
    if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
        raise ExpressionError(f"attribute {node.attr!r} is not allowed")


def _references(node: ast.AST) -> Iterator[Path]:
    stack: list[ast.AST] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.expr):
            path = _path_of(current)
            if path is not None:
                yield path
                continue
        if isinstance(current, ast.Call):
            stack.extend(current.args)  # the function's own name is not a reference
            continue
        stack.extend(ast.iter_child_nodes(current))


@dataclass(frozen=True, slots=True)
class Expression:
    """One parsed expression; evaluate it against a scope of roots."""

    source: str
    tree: ast.Expression
    references: tuple[Path, ...]

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        """The expression's value; ExpressionError for a type mismatch such as 1 + 'a'."""
        try:
            return _Evaluator(scope).eval(self.tree.body)
        except RecursionError:
            raise ExpressionError("expression is nested too deeply") from None


def parse_expression(source: str) -> Expression:
    """Parse and check ``source``; ExpressionError names what is not allowed."""
    text = source.strip()
    if not text:
        raise ExpressionError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        # Parenthesized, so an expression may span lines (YAML block scalars).
        tree = ast.parse(f"(\n{text}\n)", mode="eval")
    except SyntaxError as exc:
        line = (exc.lineno or 2) - 1  # the opening parenthesis has a line of its own
        if not 1 <= line <= text.count("\n") + 1:
            raise ExpressionError("invalid syntax: the expression ends too early") from None
        where = (
            f"line {line}, column {exc.offset or 1}"
            if "\n" in text
            else f"column {exc.offset or 1}"
        )
        raise ExpressionError(f"invalid syntax at {where}: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError("expression is nested too deeply or malformed") from None
    for node in ast.walk(tree):
        _check_node(node)
    return Expression(text, tree, tuple(_references(tree)))


# -- evaluation ----------------------------------------------------------------


def _compare(op: ast.cmpop, left: Any, right: Any) -> bool:
    if isinstance(op, ast.Eq):
        return bool(left == right)
    if isinstance(op, ast.NotEq):
        return bool(left != right)
    if isinstance(op, ast.In | ast.NotIn):
        if isinstance(right, str):
            found = isinstance(left, str) and left in right
        elif isinstance(right, list | tuple):
            found = left in right
        elif isinstance(right, Mapping):
            found = isinstance(left, str) and left in right
        else:
            found = False
        return found if isinstance(op, ast.In) else not found
    comparable = (_is_number(left) and _is_number(right)) or (
        isinstance(left, str) and isinstance(right, str)
    )
    if not comparable:
        return False  # null or mixed types: not ordered, so the condition is false
    if isinstance(op, ast.Lt):
        return bool(left < right)
    if isinstance(op, ast.LtE):
        return bool(left <= right)
    if isinstance(op, ast.Gt):
        return bool(left > right)
    return bool(left >= right)


def _bounded(value: Any) -> Any:
    if len(value) > MAX_VALUE_LENGTH:
        raise ExpressionError(f"result is longer than {MAX_VALUE_LENGTH} characters or items")
    return value


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    return "object"


def _arithmetic(op: ast.operator, left: Any, right: Any) -> Any:
    symbol = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%"}[type(op)]
    if isinstance(op, ast.Add):
        if isinstance(left, str) and isinstance(right, str):
            return _bounded(left + right)
        if isinstance(left, list) and isinstance(right, list):
            return _bounded(left + right)
    if not (_is_number(left) and _is_number(right)):
        raise ExpressionError(f"cannot compute {_type_name(left)} {symbol} {_type_name(right)}")
    if isinstance(op, ast.Div | ast.Mod) and right == 0:
        raise ExpressionError("division by zero")
    operations: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
        ast.Add: lambda a, b: a + b,
        ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b,
        ast.Mod: lambda a, b: a % b,
    }
    result = operations[type(op)](left, right)
    if isinstance(result, float) and not math.isfinite(result):
        raise ExpressionError("result is not a finite number")
    return result


class _Evaluator:
    def __init__(self, scope: Mapping[str, Any]) -> None:
        self._scope = scope

    def eval(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in _CONSTANT_NAMES:
                return _CONSTANT_NAMES[node.id]
            return self._scope.get(node.id)
        if isinstance(node, ast.Attribute):
            return _lookup(self.eval(node.value), node.attr)
        if isinstance(node, ast.Subscript):
            return _lookup(self.eval(node.value), self.eval(node.slice))
        if isinstance(node, ast.BoolOp):
            value: Any = None
            for operand in node.values:
                value = self.eval(operand)
                # and: stop at the first falsy operand; or: at the first truthy one.
                if bool(value) is isinstance(node.op, ast.Or):
                    return value
            return value
        if isinstance(node, ast.UnaryOp):
            operand = self.eval(node.operand)
            if isinstance(node.op, ast.Not):
                return not operand
            if not _is_number(operand):
                raise ExpressionError(f"cannot negate {_type_name(operand)}")
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            return _arithmetic(node.op, self.eval(node.left), self.eval(node.right))
        if isinstance(node, ast.Compare):
            left = self.eval(node.left)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self.eval(comparator)
                if not _compare(op, left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)
        if isinstance(node, ast.List | ast.Tuple):
            return [self.eval(e) for e in node.elts]
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            argument = self.eval(node.args[0])
            if node.func.id == "len":
                if not isinstance(argument, str | list | tuple | Mapping):
                    raise ExpressionError(f"len() of {_type_name(argument)}")
                return len(argument)
            return to_text(argument)
        raise ExpressionError(f"{type(node).__name__} is not allowed")  # checked at parse time


class RenderTooLarge(ExpressionError):
    """A template would render to more characters than it may."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"renders to more than {limit} characters")
        self.limit = limit


# -- templates -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Template:
    """A string with ``${...}`` expressions; ``render`` fills them in."""

    source: str
    segments: tuple[str | Expression, ...]

    @property
    def references(self) -> tuple[Path, ...]:
        return tuple(r for s in self.segments if isinstance(s, Expression) for r in s.references)

    @property
    def expressions(self) -> tuple[Expression, ...]:
        return tuple(s for s in self.segments if isinstance(s, Expression))

    def render(self, scope: Mapping[str, Any], limit: int = MAX_VALUE_LENGTH) -> Any:
        """The filled-in string (or a lone expression's value); a string longer than
        ``limit`` characters is refused before it is built."""
        if len(self.segments) == 1 and isinstance(self.segments[0], Expression):
            return self.segments[0].evaluate(scope)
        pieces: list[str] = []
        length = 0
        for segment in self.segments:
            piece = segment if isinstance(segment, str) else to_text(segment.evaluate(scope))
            length += len(piece)
            if length > limit:
                raise RenderTooLarge(limit)
            pieces.append(piece)
        return "".join(pieces)


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` ending the expression that starts at ``start`` (quotes respected)."""
    quote: str | None = None
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise ExpressionError(f"'${{' at character {start - 1} is never closed with '}}'")


def parse_template(text: str) -> Template:
    segments: list[str | Expression] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):
            literal.append("${")
            i += 3
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            if literal:
                segments.append("".join(literal))
                literal = []
            segments.append(parse_expression(text[i + 2 : end]))
            i = end + 1
        else:
            literal.append(text[i])
            i += 1
    if literal or not segments:
        segments.append("".join(literal))
    return Template(text, tuple(segments))


# -- values: JSON structures whose strings are templates --------------------------


@dataclass(frozen=True, slots=True)
class Value:
    """A JSON value whose strings may hold ``${...}``; ``render`` resolves them."""

    raw: Any
    templates: tuple[Template, ...]

    @property
    def references(self) -> tuple[Path, ...]:
        return tuple(r for t in self.templates for r in t.references)

    def render(self, scope: Mapping[str, Any], limit: int = MAX_VALUE_LENGTH) -> Any:
        """The value with its strings filled in, all of them within ``limit`` characters."""
        compiled = iter(self.templates)
        room = limit

        def build(value: Any) -> Any:
            nonlocal room
            if isinstance(value, str):
                rendered = next(compiled).render(scope, room)
                if isinstance(rendered, str):
                    room -= len(rendered)
                return rendered
            if isinstance(value, Mapping):
                return {k: build(v) for k, v in value.items()}
            if isinstance(value, list):
                return [build(v) for v in value]
            return value

        return build(self.raw)


def parse_value(raw: Any) -> Value:
    """Compile every string inside ``raw`` (in a fixed walk order) as a template."""
    templates: list[Template] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            templates.append(parse_template(value))
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(raw)
    return Value(raw, tuple(templates))


def format_path(path: Sequence[PathKey]) -> str:
    return "".join(
        f"[{k}]" if isinstance(k, int) else (k if i == 0 else f".{k}") for i, k in enumerate(path)
    )
