"""User task files: YAML template tasks and JSONL rows. Parsed safely; no code ever runs.

Every malformed file raises TaskFileError naming the file, the line (JSONL, YAML syntax) or the
key path (YAML structure), and what was expected. The YAML schema is documented in docs/tasks.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from wildcircuits.errors import TaskError, TaskFileError
from wildcircuits.files import YAML_VALUE_ERRORS, one_line, read_text_file, yaml_failure
from wildcircuits.tasks.spec import (
    Corruption,
    MetricKind,
    RuleKind,
    Template,
    TemplateTaskSpec,
    VariationKind,
    VariationSpec,
    WordList,
)

_TOP_KEYS = {
    "name", "description", "metric", "default_corruption", "position", "lists", "variables",
    "templates", "corruptions", "answers", "distractors", "variations",
}  # fmt: skip


def load_yaml_spec(path: str | Path) -> TemplateTaskSpec:
    """Read a YAML task file into a validated spec (TaskFileError, one line, on any problem)."""
    path = Path(path)
    data = _parse_yaml(path, read_text_file(path, "YAML task file", TaskFileError))
    if data is None:
        raise TaskFileError(f"{path}: empty file (no YAML mapping), not a YAML task file")
    try:
        spec = spec_from_dict(data, source=str(path))
        from wildcircuits.tasks.validate import validate_spec

        validate_spec(spec)
    except TaskError as error:
        raise TaskFileError(f"{path}: {one_line(error, limit=600, foreign=False)}") from None
    return spec


def _parse_yaml(path: Path, text: str) -> Any:
    """`yaml.safe_load(text)` (no tag ever constructs an object); one-line TaskFileError."""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, *YAML_VALUE_ERRORS) as error:
        message = yaml_failure(error, "task files")
    raise TaskFileError(f"{path}: {one_line(message, limit=600)}")


def spec_from_dict(data: Any, source: str = "builtin") -> TemplateTaskSpec:
    """Build a spec from parsed YAML; TaskError names the offending key."""
    data = _mapping(data, "top level")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise TaskError(f"unknown keys {sorted(unknown)}; expected some of {sorted(_TOP_KEYS)}")
    lists = {k: _word_list(k, v) for k, v in _mapping(data.get("lists"), "lists").items()}
    return TemplateTaskSpec(
        name=_string(data.get("name"), "name"),
        description=_string(data.get("description", ""), "description"),
        lists=lists,
        variables={
            k: _string(v, f"variables.{k}")
            for k, v in _mapping(data.get("variables"), "variables").items()
        },
        templates=tuple(_template(i, t) for i, t in enumerate(_list(data, "templates"))),
        corruptions=tuple(
            _corruption(k, v) for k, v in _mapping(data.get("corruptions"), "corruptions").items()
        ),
        answers=tuple(_string(a, "answers[]") for a in _list(data, "answers")),
        distractors=tuple(_string(d, "distractors[]") for d in _optional_list(data, "distractors")),
        metric=_enum(MetricKind, data.get("metric", "logit_diff"), "metric"),
        default_corruption=data.get("default_corruption"),
        position=_string(data.get("position", "END"), "position"),
        variations=tuple(
            _variation(i, v, lists) for i, v in enumerate(_optional_list(data, "variations"))
        ),
        source=source,
    )


def spec_to_dict(spec: TemplateTaskSpec) -> dict[str, Any]:
    """The YAML-ready form of a spec (`spec_from_dict(spec_to_dict(s)) == s`)."""
    out: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "metric": spec.metric.value,
        "lists": {k: _list_to_dict(v) for k, v in spec.lists.items()},
        "variables": dict(spec.variables),
        "templates": [_template_to_dict(t) for t in spec.templates],
        "corruptions": {c.name: _corruption_to_dict(c) for c in spec.corruptions},
        "answers": list(spec.answers),
        "position": spec.position,
    }
    if spec.default_corruption is not None:
        out["default_corruption"] = spec.default_corruption
    if spec.distractors:
        out["distractors"] = list(spec.distractors)
    if spec.variations:
        out["variations"] = [_variation_to_dict(v) for v in spec.variations]
    return out


def dump_yaml_spec(spec: TemplateTaskSpec, path: str | Path) -> None:
    Path(path).write_text(
        yaml.safe_dump(spec_to_dict(spec), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )


# -- readers ---------------------------------------------------------------------------------


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TaskError(f"{key}: expected a mapping, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list) or not value:
        raise TaskError(f"{key}: expected a non-empty list, got {type(value).__name__}")
    return value


def _optional_list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise TaskError(f"{key}: expected a list, got {type(value).__name__}")
    return value


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise TaskError(f"{key}: expected a string, got {type(value).__name__}")
    return str(value)


def _enum(kind: Any, value: Any, key: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise TaskError(
            f"{key}: expected one of {[m.value for m in kind]}, got {value!r}"
        ) from None


def _word_list(name: str, value: Any) -> WordList:
    where = f"lists.{name}"
    if isinstance(value, list):
        value = {"words": value}
    value = _mapping(value, where)
    single = value.get("single_token", True)
    if not isinstance(single, bool):
        raise TaskError(f"{where}.single_token: expected true or false, got {single!r}")
    if "words" in value:
        words = value["words"]
        if not isinstance(words, list):
            raise TaskError(f"{where}.words: expected a list of strings")
        records = tuple({"value": _string(w, f"{where}.words[{i}]")} for i, w in enumerate(words))
    elif "records" in value:
        raw = value["records"]
        if not isinstance(raw, list):
            raise TaskError(f"{where}.records: expected a list of mappings")
        records = tuple(
            {k: _string(v, f"{where}.records[{i}].{k}") for k, v in _mapping(r, where).items()}
            for i, r in enumerate(raw)
        )
    elif "sequences" in value:
        records = _windows(value["sequences"], f"{where}.sequences")
    else:
        raise TaskError(
            f"{where}: expected a list of words, or a mapping with 'words', 'records' or "
            "'sequences'"
        )
    return WordList(name, records, single)


def _windows(value: Any, where: str) -> tuple[dict[str, str], ...]:
    """Sliding windows over ordered sequences: records {w0, ..., w(k-1), kind}.

    Each sequence is a mapping: items (list), window (int >= 2), step (int, default 1),
    cyclic (bool, default false), kind (str, default "sequence").
    """
    if not isinstance(value, list) or not value:
        raise TaskError(f"{where}: expected a non-empty list of sequences")
    records = []
    for i, raw in enumerate(value):
        seq = _mapping(raw, f"{where}[{i}]")
        items = seq.get("items")
        if not isinstance(items, list) or len(items) < 2:
            raise TaskError(f"{where}[{i}].items: expected a list of at least 2 strings")
        items = [_string(x, f"{where}[{i}].items[]") for x in items]
        window, step = seq.get("window", 4), seq.get("step", 1)
        if not isinstance(window, int) or not isinstance(step, int) or window < 2 or step < 1:
            raise TaskError(f"{where}[{i}]: expected integer window >= 2 and step >= 1")
        cyclic = bool(seq.get("cyclic", False))
        kind = _string(seq.get("kind", "sequence"), f"{where}[{i}].kind")
        span = (window - 1) * step
        starts = range(len(items)) if cyclic else range(len(items) - span)
        for start in starts:
            words = [items[(start + j * step) % len(items)] for j in range(window)]
            records.append({**{f"w{j}": w for j, w in enumerate(words)}, "kind": kind})
    return tuple(records)


def _template(index: int, value: Any) -> Template:
    if isinstance(value, str):
        return Template(f"t{index}", value)
    value = _mapping(value, f"templates[{index}]")
    meta = _mapping(value.get("meta", {}), f"templates[{index}].meta")
    return Template(
        _string(value.get("id", f"t{index}"), f"templates[{index}].id"),
        _string(value.get("text"), f"templates[{index}].text"),
        {k: _string(v, f"templates[{index}].meta.{k}") for k, v in meta.items()},
    )


def _corruption(name: str, value: Any) -> Corruption:
    where = f"corruptions.{name}"
    value = _mapping(value, where)
    if "resample" in value:
        targets = value["resample"]
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list):
            raise TaskError(f"{where}.resample: expected a list of variables or occurrences")
        differ = value.get("differ")
        differ = None if differ is None else _string(differ, f"{where}.differ")
        names = tuple(_string(t, f"{where}.resample[]") for t in targets)
        return Corruption(name, RuleKind.RESAMPLE, targets=names, differ=differ)
    if "copy" in value:
        copies = {
            k: _string(v, f"{where}.copy.{k}") for k, v in _mapping(value["copy"], where).items()
        }
        return Corruption(name, RuleKind.COPY, copies=copies)
    raise TaskError(f"{where}: expected a rule with key 'resample' or 'copy', got {list(value)}")


def _variation(index: int, value: Any, lists: Mapping[str, WordList]) -> VariationSpec:
    where = f"variations[{index}]"
    value = _mapping(value, where)
    name = _string(value.get("name"), f"{where}.name")
    description = _string(value.get("description", ""), f"{where}.description")
    if "group_by" in value:
        key = _string(value["group_by"], f"{where}.group_by")
        return VariationSpec(name, VariationKind.GROUP_BY, key=key, description=description)
    if "templates" in value:
        raw = value["templates"]
        if not isinstance(raw, list) or not raw:
            raise TaskError(f"{where}.templates: expected a non-empty list")
        templates = tuple(_template(i, t) for i, t in enumerate(raw))
        return VariationSpec(
            name, VariationKind.TEMPLATES, templates=templates, description=description
        )
    if "lists" in value:
        new = {k: _word_list(k, v) for k, v in _mapping(value["lists"], f"{where}.lists").items()}
        unknown = set(new) - set(lists)
        if unknown:
            raise TaskError(f"{where}.lists: unknown lists {sorted(unknown)}")
        return VariationSpec(name, VariationKind.LISTS, lists=new, description=description)
    raise TaskError(f"{where}: expected one of the keys group_by, templates, lists")


# -- writers ---------------------------------------------------------------------------------


def _list_to_dict(word_list: WordList) -> dict[str, Any]:
    out: dict[str, Any] = {"single_token": word_list.single_token}
    if word_list.fields == ("value",):
        out["words"] = [r["value"] for r in word_list.records]
    else:
        out["records"] = [dict(r) for r in word_list.records]
    return out


def _template_to_dict(template: Template) -> dict[str, Any]:
    out: dict[str, Any] = {"id": template.id, "text": template.text}
    if template.metadata:
        out["meta"] = dict(template.metadata)
    return out


def _corruption_to_dict(corruption: Corruption) -> dict[str, Any]:
    if corruption.kind is RuleKind.COPY:
        return {"copy": dict(corruption.copies)}
    out: dict[str, Any] = {"resample": list(corruption.targets)}
    if corruption.differ is not None:
        out["differ"] = corruption.differ
    return out


def _variation_to_dict(variation: VariationSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": variation.name, "description": variation.description}
    if variation.kind is VariationKind.GROUP_BY:
        out["group_by"] = variation.key
    elif variation.kind is VariationKind.TEMPLATES:
        out["templates"] = [_template_to_dict(t) for t in variation.templates]
    else:
        out["lists"] = {k: _list_to_dict(v) for k, v in variation.lists.items()}
    return out
