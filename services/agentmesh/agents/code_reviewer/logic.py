"""Static review of Python source: McCabe complexity and security smells.

The source is only ever parsed with ``ast.parse``; it is never imported, compiled
to bytecode or run. All tree walks are iterative, so deeply nested input cannot
exhaust the interpreter stack; the parser's own recursion and memory failures are
reported as ``LimitExceeded``.

Names are resolved through the module's imports (flow-insensitively), so
``import subprocess as sp; sp.run(cmd, shell=True)`` and
``from pickle import loads; loads(data)`` are recognised. Rules, by id:

======================== ======== ================================================
rule                     severity what
======================== ======== ================================================
eval-user-input          high     input() (directly, or via a variable assigned
                                  from it in the same scope) reaches eval/exec
eval-exec                high     any other eval()/exec() call
subprocess-shell         high     subprocess.* with shell=True (getoutput and
                                  getstatusoutput always use a shell)
os-shell                 high     os.system() / os.popen()
unsafe-deserialization   high     pickle/cPickle/_pickle/dill/marshal load(s),
                                  Unpickler
hardcoded-secret         high     a non-empty string literal assigned or passed to
                                  a name like password/secret/token/api_key
yaml-unsafe-load         medium   yaml.load/load_all without a safe Loader, and
                                  yaml.unsafe_load*
bare-except              medium   ``except:``
mutable-default          medium   list/dict/set literal or call as a default
tls-verify-disabled      medium   any call with verify=False (requests, httpx...)
insecure-tempfile        medium   tempfile.mktemp()
complexity               med/high cyclomatic complexity > 10 (medium), > 20 (high)
swallowed-exception      low      ``except Exception: pass`` (or BaseException)
assert-used              low      assert statement (not reported for test files)
wildcard-import          low      ``from module import *``
weak-hash                low      hashlib md5/sha1 (unless usedforsecurity=False)
======================== ======== ================================================

Lines are 1-based; columns are 1-based and count characters (not bytes).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agentmesh.runtime.errors import InvalidInput, LimitExceeded

__all__ = [
    "COMPLEXITY_HIGH",
    "COMPLEXITY_MEDIUM",
    "MAX_AST_DEPTH",
    "MAX_FILENAME_CHARS",
    "MAX_FINDINGS",
    "MAX_SOURCE_BYTES",
    "SEVERITIES",
    "Finding",
    "FunctionComplexity",
    "Review",
    "SeverityCounts",
    "cyclomatic_complexity",
    "review",
]

MAX_SOURCE_BYTES = 500_000
"""Largest accepted source, in UTF-8 bytes."""
MAX_AST_DEPTH = 500
"""Deepest accepted syntax tree."""
MAX_FILENAME_CHARS = 1_024
"""Longest accepted ``filename``."""
MAX_FINDINGS = 1_000
"""Most findings returned (the first by line); ``summary`` still counts all."""
COMPLEXITY_MEDIUM = 10
"""A function more complex than this gets a medium finding."""
COMPLEXITY_HIGH = 20
"""A function more complex than this gets a high finding."""
SEVERITIES = ("high", "medium", "low")
"""Severities, most severe first."""

_HIGH, _MEDIUM, _LOW = SEVERITIES
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_SCOPES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")  # what Python counts as a line end

# Secret-looking names, matched against the snake_case form of a name so that
# "apiKey" and "API_KEY" both match but "tokenizer" and "max_tokens" do not.
_SECRET_NAME_RE = re.compile(
    r"(?:^|_)(?:password|passwd|secret|token|api_?key|apikey|private_?key)(?:$|_)"
)
# ... unless the name says it holds something else about the secret.
_NOT_A_SECRET_SUFFIXES = (
    "_url",
    "_uri",
    "_name",
    "_field",
    "_type",
    "_file",
    "_path",
    "_env",
    "_var",
    "_header",
    "_prefix",
    "_length",
    "_len",
    "_pattern",
    "_regex",
    "_label",
    "_prompt",
    "_message",
    "_msg",
)
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

_EVAL_CALLS = frozenset({"eval", "exec", "builtins.eval", "builtins.exec"})
_INPUT_CALLS = frozenset({"input", "builtins.input", "sys.stdin.read", "sys.stdin.readline"})
_ALWAYS_SHELL = frozenset({"subprocess.getoutput", "subprocess.getstatusoutput"})
_OS_SHELL = frozenset({"os.system", "os.popen"})
_DESERIALIZERS = frozenset(
    f"{module}.{function}"
    for module in ("pickle", "cPickle", "_pickle", "dill", "marshal")
    for function in ("load", "loads", "Unpickler")
)
_YAML_LOADS = frozenset({"yaml.load", "yaml.load_all"})
_YAML_UNSAFE = frozenset({"yaml.unsafe_load", "yaml.unsafe_load_all"})
_SAFE_YAML_LOADERS = ("SafeLoader", "CSafeLoader", "BaseLoader")
_WEAK_HASHES = frozenset({"md5", "sha1"})
_MUTABLE_CALLS = frozenset(
    {"list", "dict", "set", "bytearray", "collections.defaultdict", "collections.OrderedDict"}
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: rule id, severity ("high"/"medium"/"low"), position, message."""

    rule: str
    severity: str
    line: int
    col: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "line": self.line,
            "col": self.col,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class FunctionComplexity:
    """Cyclomatic complexity of a function; ``name`` is qualified ("Class.method")."""

    name: str
    line: int
    complexity: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "line": self.line, "complexity": self.complexity}


@dataclass(frozen=True, slots=True)
class SeverityCounts:
    """How many findings of each severity (all of them, even past ``MAX_FINDINGS``)."""

    high: int = 0
    medium: int = 0
    low: int = 0

    @property
    def total(self) -> int:
        return self.high + self.medium + self.low

    def to_dict(self) -> dict[str, Any]:
        return {"high": self.high, "medium": self.medium, "low": self.low, "total": self.total}


@dataclass(frozen=True, slots=True)
class Review:
    """The review of one source file.

    ``findings`` are sorted by line, then column, then rule; ``functions`` by line.
    ``max_severity`` is the worst severity found, or "none".
    """

    filename: str
    findings: tuple[Finding, ...]
    functions: tuple[FunctionComplexity, ...]
    summary: SeverityCounts
    max_severity: str
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "findings": [f.to_dict() for f in self.findings],
            "functions": [f.to_dict() for f in self.functions],
            "summary": self.summary.to_dict(),
            "max_severity": self.max_severity,
            "truncated": self.truncated,
        }


# --- parsing ----------------------------------------------------------------------


def _check_inputs(source: str, filename: str) -> None:
    if not isinstance(source, str):
        raise InvalidInput("source", "must be a string")
    if not isinstance(filename, str):
        raise InvalidInput("filename", "must be a string")
    if len(filename) > MAX_FILENAME_CHARS:
        raise LimitExceeded(
            "filename", f"is {len(filename)} characters long; the limit is {MAX_FILENAME_CHARS}"
        )
    # Cheap bound first: every character is at least one UTF-8 byte.
    size = len(source) if len(source) > MAX_SOURCE_BYTES else len(source.encode("utf-8", "replace"))
    if size > MAX_SOURCE_BYTES:
        raise LimitExceeded("source", f"is over {MAX_SOURCE_BYTES} bytes")


def _parse(source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise InvalidInput("source", f"syntax error at line {exc.lineno}: {exc.msg}") from None
    except ValueError:
        # null bytes, lone surrogates: nothing a Python file can contain
        raise InvalidInput("source", "contains characters Python source cannot hold") from None
    except (RecursionError, MemoryError):
        raise LimitExceeded("source", "is nested too deeply to parse") from None


def _scoped_nodes(tree: ast.Module) -> tuple[list[tuple[ast.AST, ast.AST]], list[int]]:
    """Every node with its enclosing scope node, checking the depth on the way.

    Parents come before their children; the second list gives, for each node,
    the index of its parent (-1 for the module).
    """
    nodes: list[tuple[ast.AST, ast.AST]] = []
    parents: list[int] = []
    stack: list[tuple[ast.AST, ast.AST, int, int]] = [(tree, tree, 1, -1)]
    while stack:
        node, scope, depth, parent = stack.pop()
        if depth > MAX_AST_DEPTH:
            raise LimitExceeded("source", f"nesting is deeper than {MAX_AST_DEPTH} levels")
        index = len(nodes)
        nodes.append((node, scope))
        parents.append(parent)
        inner = node if isinstance(node, _SCOPES) else scope
        stack.extend((child, inner, depth + 1, index) for child in ast.iter_child_nodes(node))
    return nodes, parents


# --- complexity -------------------------------------------------------------------


def _is_wildcard_case(case: ast.match_case) -> bool:
    pattern = case.pattern
    return (
        case.guard is None
        and isinstance(pattern, ast.MatchAs)
        and pattern.pattern is None
        and pattern.name is None
    )


def cyclomatic_complexity(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """McCabe complexity of one function, not counting functions/classes nested in it.

    1, plus one per if/elif, for, while, except handler, conditional expression,
    assert, comprehension ``for`` and ``if``, non-wildcard match case, and one per
    extra operand of each ``and``/``or``. Lambdas count toward the enclosing function.
    """
    complexity = 1
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
            continue  # reported on its own
        if isinstance(
            node,
            ast.If
            | ast.For
            | ast.AsyncFor
            | ast.While
            | ast.IfExp
            | ast.Assert
            | ast.ExceptHandler,
        ):
            complexity += 1
        elif isinstance(node, ast.BoolOp):
            complexity += len(node.values) - 1
        elif isinstance(node, ast.comprehension):
            complexity += 1 + len(node.ifs)
        elif isinstance(node, ast.match_case) and not _is_wildcard_case(node):
            complexity += 1
        stack.extend(ast.iter_child_nodes(node))
    return complexity


def _functions(tree: ast.Module) -> list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]]:
    """All functions and methods with qualified names ("Outer.method", "f.inner")."""
    found: list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]] = []
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        node, prefix = stack.pop()
        if isinstance(node, _FUNCTIONS):
            found.append((node, prefix + node.name))
            prefix = f"{prefix}{node.name}."
        elif isinstance(node, ast.ClassDef):
            prefix = f"{prefix}{node.name}."
        # Definitions only occur as statements, so expressions need no visit.
        stack.extend(
            (child, prefix)
            for child in ast.iter_child_nodes(node)
            if isinstance(child, ast.stmt | ast.excepthandler | ast.match_case)
        )
    found.sort(key=lambda item: (item[0].lineno, item[0].col_offset))
    return found


# --- security rules ---------------------------------------------------------------


def _aliases(nodes: list[tuple[ast.AST, ast.AST]]) -> dict[str, str]:
    """Local name -> dotted origin for every import in the module."""
    aliases: dict[str, str] = {}
    for node, _ in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:  # "import os.path" binds "os"
                    root = alias.name.split(".", 1)[0]
                    aliases[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if alias.name != "*":
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _dotted(expr: ast.expr, aliases: dict[str, str]) -> str | None:
    """The dotted origin of a name or attribute chain, or None if it has none.

    ``sp.run`` gives "subprocess.run" after ``import subprocess as sp``.
    """
    parts: list[str] = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return None
    parts.append(aliases.get(expr.id, expr.id))
    return ".".join(reversed(parts))


def _is_secret_name(name: str) -> bool:
    snake = _CAMEL_RE.sub("_", name).lower()
    return bool(_SECRET_NAME_RE.search(snake)) and not snake.endswith(_NOT_A_SECRET_SUFFIXES)


def _is_secret_value(value: ast.expr | None) -> bool:
    return isinstance(value, ast.Constant) and isinstance(value.value, str) and bool(value.value)


def _target_names(target: ast.expr) -> Iterator[str]:
    """Names bound or keyed by an assignment target (``x``, ``self.x``, ``d["x"]``)."""
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Attribute):
        yield target.attr
    elif isinstance(target, ast.Subscript):
        key = target.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            yield key.value
    elif isinstance(target, ast.Tuple | ast.List):
        for element in target.elts:
            yield from _target_names(element)


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _is_false(expr: ast.expr | None) -> bool:
    return isinstance(expr, ast.Constant) and expr.value is False


def _is_truthy_constant(expr: ast.expr | None) -> bool:
    return isinstance(expr, ast.Constant) and bool(expr.value)


def _is_test_file(filename: str) -> bool:
    base = re.split(r"[\\/]", filename)[-1]
    parts = re.split(r"[\\/]", filename)[:-1]
    return (
        base.startswith("test_")
        or base.endswith("_test.py")
        or base == "conftest.py"
        or "tests" in parts
        or "test" in parts
    )


class _Checker:
    """Applies the security rules to a parsed module; collects raw findings."""

    def __init__(
        self, nodes: list[tuple[ast.AST, ast.AST]], parents: list[int], filename: str
    ) -> None:
        self.nodes = nodes
        self.parents = parents
        self.aliases = _aliases(nodes)
        self.check_asserts = not _is_test_file(filename)
        self.findings: list[tuple[str, str, ast.AST, str]] = []
        self.reads_input = self._subtrees_with(self._calls_input)
        self.tainted = self._tainted_names()
        self.from_user = self._subtrees_with(self._is_user_data) if self.reads_input else set()

    def add(self, rule: str, severity: str, node: ast.AST, message: str) -> None:
        self.findings.append((rule, severity, node, message))

    def name(self, expr: ast.expr) -> str | None:
        return _dotted(expr, self.aliases)

    def _subtrees_with(self, test: Callable[[ast.AST, ast.AST], bool]) -> set[int]:
        """Ids of the nodes whose subtree holds a node passing ``test(node, scope)``.

        Every parent precedes its children in ``nodes``, so one pass in reverse
        order marks a node before its parent is reached: linear, however deeply
        calls nest (walking each ``eval(...)`` argument anew costs depth x size).
        """
        marked = [False] * len(self.nodes)
        found: set[int] = set()
        for index in range(len(self.nodes) - 1, -1, -1):
            node, scope = self.nodes[index]
            if marked[index] or test(node, scope):
                found.add(id(node))
                if self.parents[index] >= 0:
                    marked[self.parents[index]] = True
        return found

    def _calls_input(self, node: ast.AST, scope: ast.AST) -> bool:
        return isinstance(node, ast.Call) and self.name(node.func) in _INPUT_CALLS

    def _is_user_data(self, node: ast.AST, scope: ast.AST) -> bool:
        """input() itself, or a variable assigned from it in the scope where it is read."""
        if isinstance(node, ast.Name):
            return node.id in self.tainted.get(id(scope), ())
        return id(node) in self.reads_input

    def _tainted_names(self) -> dict[int, set[str]]:
        """Per scope (by id), the variables assigned from input() anywhere in it."""
        tainted: dict[int, set[str]] = {}
        for node, scope in self.nodes:
            if (
                isinstance(node, ast.Assign | ast.AnnAssign | ast.NamedExpr)
                and node.value
                and id(node.value) in self.reads_input
            ):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name | ast.Tuple | ast.List):
                        tainted.setdefault(id(scope), set()).update(_target_names(target))
        return tainted

    def run(self) -> list[tuple[str, str, ast.AST, str]]:
        for node, _ in self.nodes:
            if isinstance(node, ast.Call):
                self.call(node)
            elif isinstance(node, ast.ExceptHandler):
                self.handler(node)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                self.secret_assignment(targets, node.value, node)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        self.secret(key.value, value, key)
            elif isinstance(node, (*_FUNCTIONS, ast.Lambda)):
                self.arguments(node.args)
            elif isinstance(node, ast.Assert) and self.check_asserts:
                self.add(
                    "assert-used",
                    _LOW,
                    node,
                    "assert is removed under python -O; raise an exception for runtime checks",
                )
            elif isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                module = "." * node.level + (node.module or "")
                self.add(
                    "wildcard-import",
                    _LOW,
                    node,
                    f"wildcard import from {module} hides where names come from",
                )
        return self.findings

    def secret(self, name: str, value: ast.expr | None, node: ast.AST) -> None:
        if _is_secret_name(name) and _is_secret_value(value):
            # Never echo the value: the report may be shown to other people.
            self.add(
                "hardcoded-secret",
                _HIGH,
                node,
                f"hard-coded secret in '{name}'; load it from the environment or a vault",
            )

    def secret_assignment(
        self, targets: Sequence[ast.expr], value: ast.expr | None, node: ast.AST
    ) -> None:
        for target in targets:
            for name in _target_names(target):
                self.secret(name, value, node)

    def arguments(self, args: ast.arguments) -> None:
        positional = args.posonlyargs + args.args
        # defaults belong to the last positional parameters; kw_defaults holds None
        # for keyword-only parameters without a default.
        with_default = positional[len(positional) - len(args.defaults) :]
        pairs = list(zip(with_default, args.defaults, strict=True))
        pairs += [
            (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None
        ]
        for arg, default in pairs:
            self.secret(arg.arg, default, default)
            mutable = isinstance(
                default, ast.List | ast.Dict | ast.Set | ast.ListComp | ast.DictComp | ast.SetComp
            ) or (isinstance(default, ast.Call) and self.name(default.func) in _MUTABLE_CALLS)
            if mutable:
                self.add(
                    "mutable-default",
                    _MEDIUM,
                    default,
                    f"mutable default for '{arg.arg}' is shared between calls; "
                    "default to None and create it inside",
                )

    def handler(self, node: ast.ExceptHandler) -> None:
        if node.type is None:
            self.add(
                "bare-except",
                _MEDIUM,
                node,
                "bare except also catches SystemExit and KeyboardInterrupt; "
                "catch specific exceptions",
            )
            return
        caught = self.name(node.type)
        silent = all(
            isinstance(s, ast.Pass)
            or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
            for s in node.body
        )
        if caught in ("Exception", "BaseException") and silent:
            self.add(
                "swallowed-exception",
                _LOW,
                node,
                f"except {caught}: pass silently swallows every error; log or narrow it",
            )

    def call(self, node: ast.Call) -> None:
        name = self.name(node.func)
        for keyword in node.keywords:
            if keyword.arg:
                self.secret(keyword.arg, keyword.value, keyword.value)
        if _is_false(_keyword(node, "verify")):
            self.add(
                "tls-verify-disabled",
                _MEDIUM,
                node,
                "verify=False disables TLS certificate verification",
            )
        if name is None:
            return
        if name in _EVAL_CALLS:
            function = name.rsplit(".", 1)[-1]
            if any(id(arg) in self.from_user for arg in node.args):
                self.add(
                    "eval-user-input",
                    _HIGH,
                    node,
                    f"user input reaches {function}(): anyone who can type can run code",
                )
            else:
                self.add(
                    "eval-exec",
                    _HIGH,
                    node,
                    f"{function}() executes arbitrary code; parse the data instead",
                )
        elif name in _ALWAYS_SHELL or (
            name.startswith("subprocess.") and _is_truthy_constant(_keyword(node, "shell"))
        ):
            self.add(
                "subprocess-shell",
                _HIGH,
                node,
                f"{name}() runs its command through a shell; pass an argument list "
                "without shell=True",
            )
        elif name in _OS_SHELL:
            self.add(
                "os-shell",
                _HIGH,
                node,
                f"{name}() runs its command through a shell; use subprocess with a list",
            )
        elif name in _DESERIALIZERS:
            self.add(
                "unsafe-deserialization",
                _HIGH,
                node,
                f"{name}() can execute code from untrusted data; use a data-only format",
            )
        elif name in _YAML_LOADS or name in _YAML_UNSAFE:
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            loader_name = self.name(loader) if loader is not None else None
            safe = name in _YAML_LOADS and bool(
                loader_name and loader_name.endswith(_SAFE_YAML_LOADERS)
            )
            if not safe:
                self.add(
                    "yaml-unsafe-load",
                    _MEDIUM,
                    node,
                    f"{name}() without SafeLoader can construct arbitrary objects; "
                    "use yaml.safe_load",
                )
        elif name == "tempfile.mktemp":
            self.add(
                "insecure-tempfile",
                _MEDIUM,
                node,
                "tempfile.mktemp() is racy; use tempfile.mkstemp() or NamedTemporaryFile",
            )
        elif name.startswith("hashlib.") and not _is_false(_keyword(node, "usedforsecurity")):
            algorithm = name.removeprefix("hashlib.").lower()
            if algorithm == "new" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    algorithm = first.value.lower()
            if algorithm in _WEAK_HASHES:
                self.add(
                    "weak-hash",
                    _LOW,
                    node,
                    f"{algorithm.upper()} is broken for security use; use SHA-256 or better "
                    "(or pass usedforsecurity=False)",
                )


# --- assembly ---------------------------------------------------------------------


def _line(node: ast.AST) -> int:
    line = getattr(node, "lineno", 1)
    return line if isinstance(line, int) else 1


class _Columns:
    """Converts ast's 0-based UTF-8 byte offsets into 1-based character columns.

    ASCII lines need no work; other lines get a byte -> character table built once,
    so many findings on one long line stay linear.
    """

    def __init__(self, source: str) -> None:
        self.lines = _LINE_BREAK_RE.split(source)
        self.tables: dict[int, list[int]] = {}

    def column(self, line: int, byte_offset: int) -> int:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        if text.isascii():
            return byte_offset + 1
        table = self.tables.get(line)
        if table is None:
            table = []
            for index, char in enumerate(text):
                table.extend([index] * len(char.encode("utf-8", "surrogatepass")))
            table.append(len(text))
            self.tables[line] = table
        return table[min(byte_offset, len(table) - 1)] + 1


def review(source: str, *, filename: str = "<input>") -> Review:
    """Review Python ``source`` without running it.

    Raises ``InvalidInput("source", "syntax error at line N: ...")`` for code that
    does not parse and ``LimitExceeded`` for source over ``MAX_SOURCE_BYTES``, nesting
    beyond ``MAX_AST_DEPTH`` (or beyond what the parser can handle), and a filename
    over ``MAX_FILENAME_CHARS``. Empty source is valid and has no findings.
    """
    _check_inputs(source, filename)
    tree = _parse(source)
    nodes, parents = _scoped_nodes(tree)

    raw = _Checker(nodes, parents, filename).run()
    functions: list[FunctionComplexity] = []
    for function, qualname in _functions(tree):
        complexity = cyclomatic_complexity(function)
        functions.append(FunctionComplexity(qualname, function.lineno, complexity))
        if complexity > COMPLEXITY_MEDIUM:
            severity = _HIGH if complexity > COMPLEXITY_HIGH else _MEDIUM
            raw.append(
                (
                    "complexity",
                    severity,
                    function,
                    f"{qualname} has cyclomatic complexity {complexity} "
                    f"(over {COMPLEXITY_HIGH if severity == _HIGH else COMPLEXITY_MEDIUM}); "
                    "split it up",
                )
            )

    # Byte offsets order findings within a line just as characters do, so sort
    # first and convert columns only for the findings that are returned.
    raw.sort(key=lambda r: (_line(r[2]), getattr(r[2], "col_offset", 0), r[0]))
    columns = _Columns(source)
    findings = [
        Finding(
            rule,
            severity,
            _line(node),
            columns.column(_line(node), getattr(node, "col_offset", 0)),
            message,
        )
        for rule, severity, node, message in raw[:MAX_FINDINGS]
    ]
    counts = SeverityCounts(
        high=sum(r[1] == _HIGH for r in raw),
        medium=sum(r[1] == _MEDIUM for r in raw),
        low=sum(r[1] == _LOW for r in raw),
    )
    worst = next((s for s in SEVERITIES if getattr(counts, s)), "none")
    return Review(
        filename=filename,
        findings=tuple(findings),
        functions=tuple(functions),
        summary=counts,
        max_severity=worst,
        truncated=len(raw) > MAX_FINDINGS,
    )
