"""Template parsing and rendering: `{VAR}`, `{VAR.field}`, `{VAR.field|filter}`; `{{`/`}}` escape.

Rendering is plain string substitution: no expression is ever evaluated.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from wildcircuits.errors import TaskError
from wildcircuits.tasks.dataset import Span
from wildcircuits.tasks.spec import Filter

Record = Mapping[str, str]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PLACEHOLDER = re.compile(rf"\{{({_NAME})(?:\.({_NAME}))?(?:\|({_NAME}))?\}}")


@dataclass(frozen=True)
class Placeholder:
    """One slot occurrence in a template: variable, field, filter and occurrence name."""

    variable: str
    field: str | None
    filter: Filter | None
    occurrence: str


@dataclass(frozen=True)
class ParsedTemplate:
    """A template as literal strings and placeholders, in reading order."""

    parts: tuple[str | Placeholder, ...]

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        return tuple(p for p in self.parts if isinstance(p, Placeholder))

    @property
    def occurrences(self) -> dict[str, Placeholder]:
        return {p.occurrence: p for p in self.placeholders}

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.variable for p in self.placeholders))

    def preceding_char(self, index: int) -> str:
        """The literal character just before part `index` ('' at the start)."""
        before = self.parts[index - 1] if index > 0 else ""
        return before[-1] if isinstance(before, str) and before else ""


def parse_filter(name: str | None, where: str) -> Filter | None:
    if name is None:
        return None
    try:
        return Filter(name)
    except ValueError:
        known = ", ".join(f.value for f in Filter)
        raise TaskError(f"{where}: unknown filter {name!r}; expected one of: {known}") from None


def parse_template(text: str, where: str = "template") -> ParsedTemplate:
    """Split a template into literals and placeholders; occurrences are named as in spec.py."""
    parts: list[str | tuple[str, str | None, str | None]] = []
    literal, i = [], 0
    while i < len(text):
        pair = text[i : i + 2]
        if pair in ("{{", "}}"):
            literal.append(pair[0])
            i += 2
            continue
        match = _PLACEHOLDER.match(text, i) if text[i] == "{" else None
        if match:
            parts.extend(["".join(literal), match.groups()])
            literal, i = [], match.end()
            continue
        if text[i] in "{}":
            raise TaskError(
                f"{where}: stray {text[i]!r} at character {i} of {text!r}; expected "
                "{VAR}, {VAR.field} or {VAR.field|filter} (write {{ or }} for a literal brace)"
            )
        literal.append(text[i])
        i += 1
    parts.append("".join(literal))
    counts = Counter(p[0] for p in parts if isinstance(p, tuple))
    seen: Counter[str] = Counter()
    out: list[str | Placeholder] = []
    for part in parts:
        if isinstance(part, str):
            if part:
                out.append(part)
            continue
        variable, field, filter_name = part
        seen[variable] += 1
        occurrence = variable if counts[variable] == 1 else f"{variable}{seen[variable]}"
        out.append(Placeholder(variable, field, parse_filter(filter_name, where), occurrence))
    return ParsedTemplate(tuple(out))


def apply_filter(value: str, filter_: Filter | None) -> str:
    if filter_ is Filter.INITIAL:
        return value[:1]
    if filter_ is Filter.UPPER:
        return value.upper()
    if filter_ is Filter.LOWER:
        return value.lower()
    if filter_ is Filter.CAPITALIZE:
        return value[:1].upper() + value[1:]
    return value


def field_value(record: Record, field: str | None, filter_: Filter | None, where: str) -> str:
    """A record's field (default: its only / first field), filtered."""
    key = field or next(iter(record))
    if key not in record:
        raise TaskError(f"{where}: records have no field {key!r}; fields: {', '.join(record)}")
    return apply_filter(record[key], filter_)


def render(
    template: ParsedTemplate,
    values: Mapping[str, Record],
    single_token: Mapping[str, bool],
    where: str = "template",
) -> tuple[str, tuple[Span, ...]]:
    """Fill every occurrence from `values` (occurrence name -> record); return text and spans."""
    pieces: list[str] = []
    spans: list[Span] = []
    cursor = 0
    for part in template.parts:
        if isinstance(part, str):
            pieces.append(part)
            cursor += len(part)
            continue
        text = field_value(values[part.occurrence], part.field, part.filter, where)
        spans.append(Span(part.occurrence, cursor, cursor + len(text), single_token[part.variable]))
        pieces.append(text)
        cursor += len(text)
    return "".join(pieces), tuple(spans)


def render_plain(template: ParsedTemplate, variables: Mapping[str, Record], where: str) -> str:
    """Fill a template whose placeholders name variables (answers, distractors)."""
    values = {p.occurrence: variables[p.variable] for p in template.placeholders}
    flags = dict.fromkeys(template.variables, False)
    return render(template, values, flags, where)[0]


def parse_differ(text: str | None, where: str) -> tuple[str | None, Filter | None] | None:
    """`field` or `field|filter` -> (field, filter)."""
    if text is None:
        return None
    field, _, filter_name = text.partition("|")
    return field or None, parse_filter(filter_name or None, where)
