"""User task files: YAML and JSONL round trips, and the documented errors for bad files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.tasks_fixtures import JSONL_ROW, real_tokenizers  # noqa: F401
from wildcircuits.errors import TaskError, TaskFileError
from wildcircuits.tasks import load_task
from wildcircuits.tasks.files import dump_yaml_spec, load_yaml_spec, spec_to_dict
from wildcircuits.tasks.jsonl_task import dataset_rows, write_jsonl

USER_YAML = """
name: likes
description: a user task
lists:
  people: [Alice, Bob, Carol, Dave, Erin, Frank]
  fruit: {records: [{name: apple, color: red}, {name: banana, color: yellow},
                    {name: lime, color: green}]}
variables: {P: people, F: fruit}
templates:
  - {id: t0, text: "{P} ate a {F.name}. The {F.name} was", meta: {kind: plain}}
corruptions:
  other_fruit: {resample: [F], differ: color}
answers: [" {F.color}"]
variations:
  - {name: kind, group_by: kind}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_round_trip(tmp_path: Path, real_tokenizers: dict) -> None:  # noqa: F811
    spec = load_yaml_spec(write(tmp_path, "likes.yaml", USER_YAML))
    dump_yaml_spec(spec, tmp_path / "again.yaml")
    again = load_yaml_spec(tmp_path / "again.yaml")
    assert spec_to_dict(again) == spec_to_dict(spec)
    tokenizer = real_tokenizers["smollm2-135m-instruct"]
    a = load_task(tmp_path / "likes.yaml").build(tokenizer, 4)
    b = load_task(tmp_path / "again.yaml").build(tokenizer, 4)
    assert a.texts() == b.texts() and a.texts("other_fruit") == b.texts("other_fruit")
    e = a.examples[0]
    assert e.corrupted["other_fruit"].positions == e.clean.positions
    assert e.answer_texts != e.distractor_texts


def test_builtin_yaml_round_trip() -> None:
    for name in ("ioi", "colored_objects", "successor"):
        spec = load_task(name).spec
        from wildcircuits.tasks.files import spec_from_dict

        assert spec_from_dict(spec_to_dict(spec), source=spec.source) == spec


def test_jsonl_round_trip(tmp_path: Path, real_tokenizers: dict) -> None:  # noqa: F811
    tokenizer = real_tokenizers["gemma3-270m"]
    data = load_task("ioi").build(tokenizer, 6, seed=2)
    write_jsonl(dataset_rows(data), tmp_path / "ioi_rows.jsonl")
    again = load_task(tmp_path / "ioi_rows.jsonl").build(tokenizer, 6)
    assert again.texts() == data.texts()
    for name in data.corruptions:
        assert again.texts(name) == data.texts(name)
    assert [e.answers for e in again.examples] == [e.answers for e in data.examples]
    assert again.default_corruption == "abc"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\n  bad: [", "line"),
        ("- just a list", "top level: expected a mapping"),
        (USER_YAML.replace("answers:", "answerz:"), "unknown keys"),
        (USER_YAML.replace("{P} ate", "{Q} ate"), "unknown variable 'Q'"),
        (USER_YAML.replace("F: fruit}", "F: fruits}"), "variables.F: list 'fruits'"),
        (USER_YAML.replace("differ: color", "differ: colour"), "no field 'colour'"),
        (USER_YAML.replace("resample: [F]", "resample: [G]"), "'G' is neither"),
        (USER_YAML.replace("{F.name}.", "{F.name|shout}."), "unknown filter 'shout'"),
        (USER_YAML.replace("The {F.name} was", "The { was"), "stray '{'"),
        (USER_YAML.replace("{resample: [F], differ: color}", "{swap: F}"), "'resample' or 'copy'"),
        (USER_YAML.replace("[Alice, Bob", "[[1], Bob"), "lists.people.words[0]: expected a string"),
    ],
)
def test_bad_yaml_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(TaskFileError, match=re.escape(message)) as info:
        load_task(path)
    assert str(path) in str(info.value)


def test_yaml_never_runs_code(tmp_path: Path) -> None:
    path = write(tmp_path, "evil.yaml", "!!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(TaskFileError, match="invalid YAML"):
        load_task(path)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"clean": "a", "corrupted": "b", "answer": " x"}'], "line 1: missing key 'distractor'"),
        (['{"clean": "a", "corrupted": "b", "answer": " x", "distractor": " y"}', "{oops"],
         "line 2: invalid JSON"),
        (['{"clean": "a", "corrupted": {"c1": "b"}, "answer": " x", "distractor": " y"}',
          '{"clean": "a", "corrupted": {"c2": "b"}, "answer": " x", "distractor": " y"}'],
         "line 2: corruptions"),
        (['{"clean": 3, "corrupted": "b", "answer": " x", "distractor": " y"}'],
         "line 1: key 'clean': expected a non-empty string"),
        ([""], "at least one JSON row"),
    ],
)  # fmt: skip
def test_bad_jsonl_errors(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write(tmp_path, "bad.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(TaskFileError, match=message):
        load_task(path)


def test_jsonl_unaligned_rows_are_dropped_and_reported(
    tmp_path: Path,
    real_tokenizers: dict,  # noqa: F811
) -> None:
    path = write(
        tmp_path,
        "rows.jsonl",
        JSONL_ROW % "When the tall old man and John left, John thanked" + "\n",
    )
    with pytest.raises(TaskError, match="token length differs"):
        load_task(path).build(real_tokenizers["smollm2-135m-instruct"], 1)


def test_jsonl_rows_of_unequal_length_are_counted_on_the_report(
    tmp_path: Path,
    real_tokenizers: dict,  # noqa: F811
) -> None:
    lines = [
        JSONL_ROW % "When the tall old man and John left, John thanked",
        JSONL_ROW % "When Anna and John left, John thanked",
    ]
    path = write(tmp_path, "rows.jsonl", "\n".join(lines) + "\n")
    dataset = load_task(path).build(real_tokenizers["smollm2-135m-instruct"], 2, min_n=1)
    assert len(dataset) == 1 and dataset.report.dropped_unequal_length == 1
    assert dataset.report.to_dict()["dropped_unequal_length"] == 1
    assert any("token length differs" in line for line in dataset.report.dropped_lines())
