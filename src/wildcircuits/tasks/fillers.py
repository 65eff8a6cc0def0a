"""Filler validation: drop word-list records that are not single tokens for a tokenizer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from wildcircuits.tasks.dataset import DroppedFiller, token_count
from wildcircuits.tasks.spec import Filter, TemplateTaskSpec, WordList
from wildcircuits.tasks.template import ParsedTemplate, field_value

Form = tuple[str | None, Filter | None, str]  # field, filter, prefix (" " or "")


def required_forms(
    spec: TemplateTaskSpec, templates: Iterable[ParsedTemplate]
) -> dict[str, set[Form]]:
    """For each list, how its records appear: field, filter, and a leading space or not.

    A placeholder right after a space is tokenized with that space (" Mary"), anything else
    without ("(" + "G").
    """
    forms: dict[str, set[Form]] = {}
    for parsed in templates:
        for index, part in enumerate(parsed.parts):
            if isinstance(part, str):
                continue
            if part.variable not in spec.variables:  # `{template.KEY}` in answers
                continue
            prefix = " " if parsed.preceding_char(index) == " " else ""
            list_name = spec.variables[part.variable]
            forms.setdefault(list_name, set()).add((part.field, part.filter, prefix))
    return forms


def filter_lists(
    spec: TemplateTaskSpec, tokenizer: Any, templates: Iterable[ParsedTemplate]
) -> tuple[dict[str, WordList], list[DroppedFiller]]:
    """The spec's lists with every single-token list reduced to records that are one token in
    each required form, and the report of what was dropped."""
    forms = required_forms(spec, templates)
    lists: dict[str, WordList] = dict(spec.lists)
    dropped: list[DroppedFiller] = []
    cache: dict[str, int] = {}
    for name, word_list in spec.lists.items():
        if not word_list.single_token or name not in forms:
            continue
        kept = []
        for record in word_list.records:
            failure = _first_failure(record, sorted(forms[name], key=str), tokenizer, cache)
            if failure is None:
                kept.append(record)
            else:
                dropped.append(DroppedFiller(name, _describe(record), *failure))
        lists[name] = replace(word_list, records=tuple(kept))
    return lists, dropped


def _first_failure(
    record: Mapping[str, str], forms: list[Form], tokenizer: Any, cache: dict[str, int]
) -> tuple[str, int] | None:
    for field, filter_, prefix in forms:
        text = prefix + field_value(record, field, filter_, "filler")
        if text not in cache:
            cache[text] = token_count(tokenizer, text)
        if cache[text] != 1:
            return text, cache[text]
    return None


def _describe(record: Mapping[str, str]) -> str:
    return "/".join(record.values())
