"""Static checks of a template task spec; errors name the key and what was expected."""

from __future__ import annotations

from wildcircuits.errors import TaskError
from wildcircuits.tasks.spec import RuleKind, TemplateTaskSpec
from wildcircuits.tasks.template import ParsedTemplate, parse_differ, parse_template

TEMPLATE_VARIABLE = "template"  # answers may read template metadata: {template.KEY}


def validate_spec(spec: TemplateTaskSpec) -> None:
    """Raise TaskError on the first inconsistency (unknown variable, list, field, target...)."""
    _check_lists(spec)
    if not spec.templates:
        raise TaskError("templates: expected at least one template")
    if not spec.answers:
        raise TaskError("answers: expected at least one answer template")
    if not spec.corruptions:
        raise TaskError("corruptions: expected at least one named corruption")
    names = spec.corruption_names
    if len(set(names)) != len(names):
        raise TaskError(f"corruptions: names must be unique, got {list(names)}")
    if spec.default_corruption is not None and spec.default_corruption not in names:
        raise TaskError(
            f"default_corruption: {spec.default_corruption!r} is not one of {list(names)}"
        )
    parsed = [parse_template(t.text, f"templates[{t.id}]") for t in spec.templates]
    for template, p in zip(spec.templates, parsed, strict=True):
        _check_placeholders(spec, p, f"templates[{template.id}]")
        for i in range(len(spec.corruptions)):
            _check_corruption(spec, p, i, template.id)
    for key, texts in (("answers", spec.answers), ("distractors", spec.distractors)):
        for i, text in enumerate(texts):
            parsed_answer = parse_template(text, f"{key}[{i}]")
            _check_template_fields(spec, parsed_answer, f"{key}[{i}]")
            _check_placeholders(spec, parsed_answer, f"{key}[{i}]")


def _check_template_fields(spec: TemplateTaskSpec, parsed: ParsedTemplate, where: str) -> None:
    """`{template.KEY}` in answers needs KEY in every template's metadata."""
    for p in parsed.placeholders:
        if p.variable != TEMPLATE_VARIABLE:
            continue
        for template in spec.templates:
            if p.field not in template.metadata:
                raise TaskError(
                    f"{where}: {{template.{p.field}}} but template {template.id!r} has no "
                    f"meta key {p.field!r}"
                )


def _check_lists(spec: TemplateTaskSpec) -> None:
    for variable, list_name in spec.variables.items():
        if list_name not in spec.lists:
            raise TaskError(
                f"variables.{variable}: list {list_name!r} is not defined; "
                f"lists: {', '.join(spec.lists)}"
            )
    for name, word_list in spec.lists.items():
        if not word_list.records:
            raise TaskError(f"lists.{name}: expected at least one word")
        fields = set(word_list.fields)
        for i, record in enumerate(word_list.records):
            if set(record) != fields:
                raise TaskError(
                    f"lists.{name}[{i}]: fields {sorted(record)} differ from the first "
                    f"record's {sorted(fields)}"
                )


def _check_placeholders(spec: TemplateTaskSpec, parsed: ParsedTemplate, where: str) -> None:
    for p in parsed.placeholders:
        if p.variable == TEMPLATE_VARIABLE and not where.startswith("templates"):
            continue
        if p.variable not in spec.variables:
            raise TaskError(
                f"{where}: unknown variable {p.variable!r}; variables: {', '.join(spec.variables)}"
            )
        fields = spec.lists[spec.variables[p.variable]].fields
        if p.field is not None and p.field not in fields:
            raise TaskError(
                f"{where}: list {spec.variables[p.variable]!r} has no field {p.field!r}; "
                f"fields: {', '.join(fields)}"
            )


def _check_corruption(spec: TemplateTaskSpec, parsed: ParsedTemplate, i: int, tid: str) -> None:
    corruption = spec.corruptions[i]
    where = f"corruptions[{corruption.name}]"
    occurrences = parsed.occurrences
    if corruption.kind is RuleKind.RESAMPLE:
        if not corruption.targets:
            raise TaskError(f"{where}.resample: expected a list of variables or occurrences")
        for target in corruption.targets:
            if target not in spec.variables and target not in occurrences:
                raise TaskError(
                    f"{where}.resample: {target!r} is neither a variable nor an occurrence in "
                    f"template {tid!r} (occurrences: {', '.join(occurrences)})"
                )
        differ = parse_differ(corruption.differ, f"{where}.differ")
        for target in corruption.targets if differ and differ[0] else ():
            variable = target if target in spec.variables else occurrences[target].variable
            fields = spec.lists[spec.variables[variable]].fields
            if differ[0] not in fields:
                raise TaskError(
                    f"{where}.differ: list {spec.variables[variable]!r} has no field "
                    f"{differ[0]!r}; fields: {', '.join(fields)}"
                )
        return
    if not corruption.copies:
        raise TaskError(f"{where}.copy: expected a mapping target occurrence -> source")
    for target, source in corruption.copies.items():
        if target not in occurrences:
            raise TaskError(
                f"{where}.copy: target {target!r} is not an occurrence in template {tid!r} "
                f"(occurrences: {', '.join(occurrences)})"
            )
        if source not in spec.variables and source not in occurrences:
            raise TaskError(f"{where}.copy: source {source!r} is neither variable nor occurrence")
