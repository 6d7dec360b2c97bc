"""Prompt templates with ``${name}`` placeholders (``string.Template`` syntax).

Role prompts are templated from request metadata, so a template naming a
variable that is not supplied is refused instead of silently left in place,
and substitution is a single pass: a value containing ``${x}`` is inserted
verbatim, never expanded. ``$$`` is a literal dollar sign.
"""

from __future__ import annotations

import string
from collections.abc import Mapping


class PromptTemplateError(ValueError):
    """The template is malformed or names a variable that was not supplied."""


def _invalid_placeholder(template: str) -> str:
    for match in string.Template.pattern.finditer(template):
        if match.group("invalid") is not None:
            start = match.start()  # the "$" that starts the bad placeholder
            line = template.count("\n", 0, start) + 1
            column = start - (template.rfind("\n", 0, start) + 1) + 1
            return f"line {line}, column {column}"
    return "unknown position"  # pragma: no cover - is_valid() said there is one


def placeholders(template: str) -> list[str]:
    """The names ``template``'s placeholders use, in order; a malformed one raises
    :class:`PromptTemplateError` naming its position."""
    compiled = string.Template(template)
    if not compiled.is_valid():
        raise PromptTemplateError(
            f"invalid placeholder at {_invalid_placeholder(template)}: "
            "write ${name}, or $$ for a literal '$'"
        )
    return list(compiled.get_identifiers())


def render_prompt(template: str, variables: Mapping[str, str]) -> str:
    """``template`` with each ``${name}``/``$name`` replaced by ``variables[name]``.

    Raises :class:`PromptTemplateError` naming every unknown variable (and the
    known ones), or the position of a malformed placeholder.
    """
    compiled = string.Template(template)
    if not compiled.is_valid():
        raise PromptTemplateError(
            f"invalid placeholder at {_invalid_placeholder(template)}: "
            "write ${name}, or $$ for a literal '$'"
        )
    unknown = [name for name in compiled.get_identifiers() if name not in variables]
    if unknown:
        known = ", ".join(sorted(variables)) or "none"
        names = ", ".join(f"${{{name}}}" for name in unknown)
        raise PromptTemplateError(f"unknown template variable(s) {names} (known: {known})")
    return compiled.substitute(variables)
