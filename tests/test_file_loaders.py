"""Every file loader turns a bad file into one WildcircuitsError line naming the file.

Loaders: scores `.pt` (EdgeScores.load), circuit `.pt` and MIB `.json` (load_circuit), the ACDC
checkpoint (read_checkpoint), YAML and JSONL task files (load_task), and the model cache's record
and safetensors checks (which return a reason to rebuild instead of raising). Bad files: crafted
pickles that would run code, random bytes, truncations, empty files, directories, missing files,
and valid JSON / tensors of the wrong structure; then generated contents (hypothesis).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wildcircuits.discovery.acdc import read_checkpoint
from wildcircuits.discovery.registry import DiscoveryError
from wildcircuits.errors import GraphError, ModelFileError, TaskFileError, WildcircuitsError
from wildcircuits.graph.circuit import Circuit, EdgeScores
from wildcircuits.graph.graph import Graph
from wildcircuits.graph.mib import load_circuit, save_circuit_pt, save_mib_json
from wildcircuits.models import cache
from wildcircuits.tasks import load_task

GRAPH = Graph(2, 2)
SHAPE = tuple(GRAPH.valid.shape)
PROPERTY = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

YAML_TASK = """\
name: likes
lists:
  people: [Alice, Bob, Carol, Dave]
  fruit: {records: [{name: apple, color: red}, {name: lime, color: green}]}
variables: {P: people, F: fruit}
templates:
  - {id: t0, text: "{P} ate a {F.name}. The {F.name} was"}
corruptions:
  other_fruit: {resample: [F], differ: color}
answers: [" {F.color}"]
"""
JSONL_ROW = {"clean": "When Mary and John", "corrupted": "When Anna and John",
             "answer": " Mary", "distractor": " John"}  # fmt: skip


# valid files -------------------------------------------------------------------------------------
def _scores() -> EdgeScores:
    return EdgeScores(GRAPH, torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)), "hand")


def _write_scores(path: Path) -> None:
    _scores().save(path)


def _write_circuit_pt(path: Path) -> None:
    save_circuit_pt(path, Circuit.from_edges(GRAPH, ["m1->logits"]), _scores())


def _write_circuit_json(path: Path) -> None:
    save_mib_json(path, Circuit.from_edges(GRAPH, ["m1->logits"]), _scores())


def _checkpoint() -> dict:
    return {
        "fingerprint": "abc", "removed": torch.zeros(SHAPE, dtype=torch.bool),
        "initial": torch.zeros(SHAPE, dtype=torch.bool), "scores": torch.full(SHAPE, torch.nan),
        "done": 3, "forwards": 4, "evaluations": 5, "filtered": 0, "seconds": 1.5,
    }  # fmt: skip


def _write_checkpoint(path: Path) -> None:
    torch.save(_checkpoint(), path)


def _write_yaml(path: Path) -> None:
    path.write_text(YAML_TASK)


def _write_jsonl(path: Path) -> None:
    path.write_text("".join(json.dumps(JSONL_ROW) + "\n" for _ in range(3)))


@dataclass(frozen=True)
class Loader:
    """One loader: the file name it reads, how to write a valid file, how to load, its error."""

    name: str
    file_name: str
    write_valid: Callable[[Path], None]
    load: Callable[[Path], object]
    error: type[WildcircuitsError]
    torch_file: bool


LOADERS = {
    loader.name: loader
    for loader in (
        Loader(
            "scores",
            "scores.pt",
            _write_scores,
            lambda p: EdgeScores.load(p, GRAPH),
            GraphError,
            True,
        ),
        Loader("scores_no_graph", "scores.pt", _write_scores, EdgeScores.load, GraphError, True),
        Loader(
            "circuit_pt",
            "circuit.pt",
            _write_circuit_pt,
            lambda p: load_circuit(p, GRAPH),
            GraphError,
            True,
        ),
        Loader(
            "circuit_json",
            "circuit.json",
            _write_circuit_json,
            lambda p: load_circuit(p, GRAPH),
            GraphError,
            False,
        ),
        Loader(
            "acdc_checkpoint",
            "acdc.pt",
            _write_checkpoint,
            lambda p: read_checkpoint(p, SHAPE, GRAPH.n_receivers),
            DiscoveryError,
            True,
        ),
        Loader("yaml_task", "task.yaml", _write_yaml, load_task, TaskFileError, False),
        Loader("jsonl_task", "task.jsonl", _write_jsonl, load_task, TaskFileError, False),
    )  # fmt: skip
}
PT_LOADERS = [name for name, loader in LOADERS.items() if loader.torch_file]


def _assert_clean_error(loader: Loader, path: Path) -> str:
    with pytest.raises(loader.error) as info:
        loader.load(path)
    message = str(info.value)
    assert isinstance(info.value, WildcircuitsError)
    assert "\n" not in message, message
    assert str(path) in message, message
    assert "weights_only" not in message and "Traceback" not in message, message
    return message


def test_valid_files_load(tmp_path: Path) -> None:
    for loader in LOADERS.values():
        path = tmp_path / loader.file_name
        loader.write_valid(path)
        assert loader.load(path) is not None


# crafted pickles ---------------------------------------------------------------------------------
class _SystemCall:
    """Unpickling this would run a shell command creating the marker file."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _WriteFile:
    """Unpickling this would write the marker file from Python."""

    marker = ""

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _hostile(loader: Loader, payload: object) -> object:
    """The payload inside a structure that otherwise looks like this loader's file."""
    if loader.name.startswith("acdc"):
        return {**_checkpoint(), "fingerprint": payload}
    return {"format": "wildcircuits.edge_scores/1", "cfg": {"n_layers": 2, "n_heads": 2},
            "method": payload}  # fmt: skip


@pytest.mark.parametrize("container", ["zip", "legacy", "raw_pickle"])
@pytest.mark.parametrize("payload", [_SystemCall, _WriteFile])
@pytest.mark.parametrize("name", PT_LOADERS)
def test_crafted_pickle_never_runs(tmp_path: Path, name: str, payload: type, container: str):
    loader = LOADERS[name]
    marker = tmp_path / "MARKER"
    payload.marker = str(marker)
    path = tmp_path / loader.file_name
    data = _hostile(loader, payload())
    if container == "raw_pickle":
        path.write_bytes(pickle.dumps(data, protocol=2))
    else:
        torch.save(data, path, _use_new_zipfile_serialization=container == "zip")
    message = _assert_clean_error(loader, path)
    assert not marker.exists(), "the pickle ran code"
    assert "never runs pickled code" in message and "would import" in message


def test_hostile_acdc_checkpoint_is_ignored_and_rebuilt(tmp_path: Path, capsys) -> None:
    """The search itself reports a bad checkpoint in one line and starts afresh."""
    from wildcircuits.discovery.acdc import AcdcConfig, _Search

    marker, path = tmp_path / "MARKER", tmp_path / "acdc.pt"
    _SystemCall.marker = str(marker)
    torch.save(_hostile(LOADERS["acdc_checkpoint"], _SystemCall()), path)
    search = object.__new__(_Search)
    search.config, search.graph, search.fingerprint = AcdcConfig(checkpoint=str(path)), GRAPH, "x"
    assert search._resume() is False
    error = capsys.readouterr().err
    assert not marker.exists() and error.count("\n") == 1 and str(path) in error
    assert "weights_only" not in error
    _write_checkpoint(path)
    search.fingerprint = "abc"
    assert search._resume() is True and search.done == 3


# table: every loader x every kind of bad file ----------------------------------------------------
def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(700))


def _cut(fraction: float) -> Callable[[Path, Loader], None]:
    def write(path: Path, loader: Loader) -> None:
        loader.write_valid(path)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    write.__name__ = f"truncated_{fraction}"
    return write


COMMON_CASES: dict[str, Callable[[Path, Loader], None]] = {
    "missing": lambda path, loader: None,
    "directory": lambda path, loader: path.mkdir(),
    "empty": lambda path, loader: path.write_bytes(b""),
    "random_bytes": lambda path, loader: _random_bytes(path),
    "not_utf8_text": lambda path, loader: path.write_bytes(b"\xff\xfe\x00 caf\xe9\n"),
}
TORCH_CASES = {
    "text": lambda path, loader: path.write_text('{"scores": [1, 2]}'),
    **{f"truncated_{f}": _cut(f) for f in (0.01, 0.1, 0.5, 0.9, 0.99)},
    "list_not_dict": lambda path, loader: torch.save([1, 2, 3], path),
    "tensor_not_dict": lambda path, loader: torch.save(torch.zeros(3), path),
}


def _pt_structure(change: dict) -> Callable[[Path, Loader], None]:
    def write(path: Path, loader: Loader) -> None:
        loader.write_valid(path)
        data = torch.load(path, weights_only=True)
        data.update(change)
        for key in [k for k, v in change.items() if v is _DELETE]:
            del data[key]
        torch.save(data, path)

    return write


_DELETE = object()
_WRONG_SHAPE = torch.zeros(3, 4)
STRUCTURE_CASES: dict[str, dict[str, tuple[Callable[[Path, Loader], None], str]]] = {
    "scores": {
        "other_format": (
            _pt_structure({"format": "something/2"}),
            "not a wildcircuits edge-scores file (format",
        ),
        "missing_scores": (_pt_structure({"scores": _DELETE}), "'scores'"),
        "scores_wrong_shape": (_pt_structure({"scores": _WRONG_SHAPE}), "shape (3, 4)"),
        "scores_bool": (_pt_structure({"scores": torch.zeros(SHAPE, dtype=torch.bool)}), "dtype"),
        "scores_nan": (_pt_structure({"scores": torch.full(SHAPE, torch.nan)}), "NaN"),
        "scores_list": (_pt_structure({"scores": [[1.0]]}), "a list"),
        "method_number": (_pt_structure({"method": 3}), "method is an int"),
        "other_graph": (
            _pt_structure({"graph": {"n_layers": 30, "n_heads": 9}}),
            "30 layers x 9 heads, sequential blocks; this model's graph is 2 layers x 2 heads",
        ),
        "huge_graph": (
            _pt_structure({"graph": {"n_layers": 10**9, "n_heads": 2}}),
            "between 1 and 256",
        ),
        "layers_string": (
            _pt_structure({"graph": {"n_layers": "2", "n_heads": 2}}),
            "expected an integer",
        ),
        "settings_list": (_pt_structure({"settings": [1]}), "settings is a list"),
    },
    "circuit_pt": {
        "missing_cfg": (_pt_structure({"cfg": _DELETE}), "'cfg'"),
        "cfg_list": (_pt_structure({"cfg": [2, 2]}), "cfg must give n_layers"),
        "src_not_list": (_pt_structure({"src_nodes": "a0.h0"}), "src_nodes is a str"),
        "src_number": (_pt_structure({"src_nodes": [1, 2]}), "src_nodes[0] is an int"),
        "unknown_node": (_pt_structure({"src_nodes": ["zz"] * 7}), "zz"),
        "flags_wrong_shape": (
            _pt_structure({"edges_in_graph": _WRONG_SHAPE}),
            "edges_in_graph is (3, 4)",
        ),
        "scores_string": (_pt_structure({"edges_scores": "high"}), "edges_scores is a str"),
        "meta_bad": (
            _pt_structure({"wildcircuits": {"provenance": [1]}}),
            "wildcircuits.provenance is a list",
        ),
    },
    "acdc_checkpoint": {
        "missing_done": (_pt_structure({"done": _DELETE}), "'done'"),
        "removed_float": (_pt_structure({"removed": torch.zeros(SHAPE)}), "dtype"),
        "scores_wrong_shape": (_pt_structure({"scores": _WRONG_SHAPE}), "shape (3, 4)"),
        "done_too_large": (_pt_structure({"done": 10**6}), "done is 1000000"),
        "seconds_string": (_pt_structure({"seconds": "1.5"}), "expected a number"),
    },
}


def _json_case(document: object) -> Callable[[Path, Loader], None]:
    return lambda path, loader: path.write_text(json.dumps(document))


_CFG = {"n_layers": 2, "n_heads": 2}
STRUCTURE_CASES["circuit_json"] = {
    "invalid_json": (lambda p, _: p.write_text('{"cfg": {'), "JSON line 1: invalid JSON"),
    "list_not_object": (_json_case([1, 2]), "needs 'cfg' and 'edges'"),
    "edges_list": (_json_case({"cfg": _CFG, "edges": ["m1->logits"]}), "edges is a list"),
    "layers_string": (_json_case({"cfg": {"n_layers": "abc", "n_heads": 2}, "edges": {}}),
                      "cfg.n_layers is a str"),
    "other_graph": (_json_case({"cfg": {"n_layers": 30, "n_heads": 9}, "edges": {}}),
                    "30 layers x 9 heads"),
    "score_string": (_json_case({"cfg": _CFG, "edges": {"m1->logits": {"in_graph": True,
                                                                        "score": "x"}}}),
                     "non-numeric score"),
    "score_huge": (_json_case({"cfg": _CFG, "edges": {"m1->logits": {"in_graph": True,
                                                                      "score": 10**400}}}),
                   "too large"),
    "nodes_list": (_json_case({"cfg": _CFG, "edges": {}, "nodes": ["m0"]}), "nodes is a list"),
    "bad_node": (_json_case({"cfg": _CFG, "edges": {}, "nodes": {"q9": True}}), "q9"),
    "deep_nesting": (lambda p, _: p.write_text("[" * 100_000), "nested too deeply"),
}  # fmt: skip
STRUCTURE_CASES["yaml_task"] = {
    "syntax": (lambda p, _: p.write_text("name: x\nlists: [a, b\n"), "YAML line 3"),
    "python_tag": (lambda p, _: p.write_text("!!python/object/apply:os.system ['touch M']\n"),
                   "never constructs objects"),
    "list_top": (lambda p, _: p.write_text("- a\n- b\n"), "expected a mapping, got list"),
    "templates_number": (lambda p, _: p.write_text(YAML_TASK.replace(
        '  - {id: t0, text: "{P} ate a {F.name}. The {F.name} was"}', "").replace(
        "templates:", "templates: 5")), "templates: expected a non-empty list"),
    "distractors_number": (lambda p, _: p.write_text(YAML_TASK + "distractors: 5\n"),
                           "distractors: expected a list"),
    "variations_number": (lambda p, _: p.write_text(YAML_TASK + "variations: 7\n"),
                          "variations: expected a list"),
    "bad_date": (lambda p, _: p.write_text("name: 2001-13-45\n"), "cannot be read"),
    "deep_nesting": (lambda p, _: p.write_text("[" * 5000), "invalid YAML"),
}  # fmt: skip
_ROWS = [json.dumps(JSONL_ROW)] * 6
STRUCTURE_CASES["jsonl_task"] = {
    "line_7_not_object": (lambda p, _: p.write_text("\n".join([*_ROWS, "[1, 2]"])),
                          "JSONL line 7: not a JSON object"),
    "line_2_invalid": (lambda p, _: p.write_text("\n".join([_ROWS[0], "{oops"])),
                       "JSONL line 2: invalid JSON"),
    "missing_key": (lambda p, _: p.write_text(json.dumps({"clean": "a"})),
                    "line 1: missing key 'corrupted'"),
    "answer_number": (lambda p, _: p.write_text(json.dumps({**JSONL_ROW, "answer": 3})),
                      "key 'answer': expected a non-empty string, got an int"),
    "metadata_list": (lambda p, _: p.write_text(json.dumps({**JSONL_ROW, "metadata": [1]})),
                      "'metadata': expected a mapping"),
    "deep_nesting": (lambda p, _: p.write_text("[" * 100_000), "nested too deeply"),
    "only_blank_lines": (lambda p, _: p.write_text("\n \n"), "at least one JSON row"),
}  # fmt: skip
STRUCTURE_CASES["scores_no_graph"] = {
    "huge_graph": STRUCTURE_CASES["scores"]["huge_graph"],
    "scores_wrong_shape": STRUCTURE_CASES["scores"]["scores_wrong_shape"],
}


def _table() -> list[tuple[str, str, Callable, str]]:
    rows = []
    for name, loader in LOADERS.items():
        cases = {**COMMON_CASES, **(TORCH_CASES if loader.torch_file else {})}
        if not loader.torch_file and name == "circuit_json":
            cases |= {f"truncated_{f}": _cut(f) for f in (0.01, 0.5, 0.99)}
        rows += [(name, case, write, "") for case, write in cases.items()]
        rows += [(name, case, *entry) for case, entry in STRUCTURE_CASES.get(name, {}).items()]
    return rows


TABLE = _table()


@pytest.mark.parametrize(("name", "case", "write", "expected"), TABLE,
                         ids=[f"{row[0]}-{row[1]}" for row in TABLE])  # fmt: skip
def test_bad_file_gives_one_clean_line(tmp_path, name, case, write, expected) -> None:
    loader = LOADERS[name]
    path = tmp_path / loader.file_name
    write(path, loader)
    message = _assert_clean_error(loader, path)
    assert expected in message, message


def test_torch_problems_are_named(tmp_path: Path) -> None:
    """The wording the issue asks for: what kind of bad file it is."""
    loader = LOADERS["scores"]
    path = tmp_path / loader.file_name
    _random_bytes(path)
    assert "random bytes, not a torch file" in _assert_clean_error(loader, path)
    _cut(0.5)(path, loader)
    assert "truncated (zip central directory missing)" in _assert_clean_error(loader, path)
    path.write_bytes(b"")
    assert "empty file" in _assert_clean_error(loader, path)


# the model cache: a bad entry is a reason to rebuild, never an exception -------------------------
def _entry(folder: Path, record: object, safetensors: bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / cache.MARKER_NAME).write_text("x\n")
    text = record if isinstance(record, str) else json.dumps(record)
    (folder / cache.RECORD_NAME).write_text(text)
    (folder / "config.json").write_text("{}")
    if safetensors is not None:
        (folder / "model.safetensors").write_bytes(safetensors)
    return folder


def _record(**change) -> dict:
    record = {"format_version": cache.FORMAT_VERSION, "source_sha256": "s" * 64,
              "files": {"config.json": 2}, "crc32": {"config.json": 0}}  # fmt: skip
    return record | change


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("{not json", "unreadable"),
        ([1, 2], "not a JSON object"),
        ("[" * 100_000, "unreadable"),
        (_record(files=["config.json"]), "lists no files"),
        (_record(files={"config.json": "two"}, crc32={"config.json": 0}), "malformed"),
        (_record(files={"config.json": 2, "../../etc/passwd": 1},
                 crc32={"config.json": 0, "../../etc/passwd": 0}), "malformed"),
        (_record(crc32={"config.json": "x"}), "malformed"),
        (_record(format_version=[1]), "format version"),
    ],
)  # fmt: skip
def test_bad_cache_record_is_a_reason_to_rebuild(tmp_path: Path, record, reason) -> None:
    problem = cache.check_entry(_entry(tmp_path / "entry", record), "s" * 64)
    assert problem is not None and reason in problem, problem


@pytest.mark.parametrize(
    "header",
    [b"[1, 2]", b'{"w": "x"}', b'{"w": {"data_offsets": ["a", "b"]}}', b"\xff\xfe", b"{" * 50],
)
def test_bad_safetensors_header_is_a_reason(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    assert isinstance(cache.check_safetensors(path), str)


@pytest.mark.parametrize("text", ["{oops", "[1]", "\xff"])
def test_bad_tokenizer_config_is_model_file_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "tokenizer_config.json").write_text(text, encoding="latin-1")
    with pytest.raises(ModelFileError) as info:
        cache.load_tokenizer(tmp_path)
    assert "\n" not in str(info.value) and "tokenizer_config.json" in str(info.value)


# generated contents ------------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip
YAMLISH = st.text(alphabet=st.sampled_from(list("ab01 :-[]{}#&*!|>'\",.?%@`\t\n")), max_size=120)


def _loads_or_clean_error(loader: Loader, path: Path) -> None:
    try:
        loader.load(path)
    except WildcircuitsError as error:
        assert "\n" not in str(error) and str(path) in str(error), str(error)
        assert "weights_only" not in str(error)


@pytest.mark.parametrize("name", list(LOADERS))
@PROPERTY
@given(data=st.binary(max_size=1024))
def test_random_bytes_never_raise_raw(tmp_path: Path, name: str, data: bytes) -> None:
    loader = LOADERS[name]
    path = tmp_path / loader.file_name
    path.write_bytes(data)
    _loads_or_clean_error(loader, path)


@pytest.mark.parametrize("name", list(LOADERS))
@PROPERTY
@given(fraction=st.floats(0, 1), flip=st.integers(0, 10**6), value=st.integers(0, 255))
def test_damaged_valid_files_never_raise_raw(tmp_path, name, fraction, flip, value) -> None:
    """A valid file cut short, or with one byte changed."""
    loader = LOADERS[name]
    path = tmp_path / loader.file_name
    loader.write_valid(path)
    data = bytearray(path.read_bytes())
    data[flip % len(data)] = value
    path.write_bytes(bytes(data[: int(len(data) * fraction)] if fraction < 1 else data))
    _loads_or_clean_error(loader, path)


_PT_KEYS = {
    "scores": ["format", "graph", "scores", "method", "settings", "provenance"],
    "scores_no_graph": ["graph", "scores", "method"],
    "circuit_pt": ["cfg", "src_nodes", "dst_nodes", "edges_scores", "edges_in_graph",
                   "wildcircuits"],
    "acdc_checkpoint": list(_checkpoint()),
}  # fmt: skip
TENSORS = st.sampled_from(
    [torch.zeros(SHAPE), torch.zeros(SHAPE, dtype=torch.bool), torch.zeros(3), torch.tensor(1),
     torch.full(SHAPE, torch.inf), torch.zeros(SHAPE[::-1]), torch.zeros(0, dtype=torch.int64)]
)  # fmt: skip


@pytest.mark.parametrize("name", PT_LOADERS)
@PROPERTY
@given(data=st.data())
def test_wrong_structure_pt_never_raises_raw(tmp_path: Path, name: str, data) -> None:
    """A valid file with some fields replaced by random values or tensors."""
    loader = LOADERS[name]
    path = tmp_path / loader.file_name
    loader.write_valid(path)
    content = torch.load(path, weights_only=True)
    for key in data.draw(st.lists(st.sampled_from(_PT_KEYS[name]), min_size=1, max_size=3)):
        content[key] = data.draw(JSON_VALUES | TENSORS)
    torch.save(content, path)
    _loads_or_clean_error(loader, path)


def _mutate(document: object, data, depth: int = 0) -> object:
    """`document` with one random branch replaced by a random JSON value."""
    if isinstance(document, dict) and document and depth < 4:
        key = data.draw(st.sampled_from(sorted(document)))
        return {**document, key: _mutate(document[key], data, depth + 1)}
    if isinstance(document, list) and document and depth < 4:
        index = data.draw(st.integers(0, len(document) - 1))
        return [*document[:index], _mutate(document[index], data, depth + 1),
                *document[index + 1:]]  # fmt: skip
    return data.draw(JSON_VALUES)


@PROPERTY
@given(data=st.data())
def test_mutated_mib_json_never_raises_raw(tmp_path: Path, data) -> None:
    loader = LOADERS["circuit_json"]
    path = tmp_path / loader.file_name
    loader.write_valid(path)
    document = _mutate(json.loads(path.read_text()), data)
    path.write_text(json.dumps(document))
    _loads_or_clean_error(loader, path)


@PROPERTY
@given(data=st.data())
def test_mutated_yaml_task_never_raises_raw(tmp_path: Path, data) -> None:
    loader = LOADERS["yaml_task"]
    path = tmp_path / loader.file_name
    path.write_text(yaml.safe_dump(_mutate(yaml.safe_load(YAML_TASK), data)))
    _loads_or_clean_error(loader, path)


@PROPERTY
@given(text=YAMLISH)
def test_yamlish_text_never_raises_raw(tmp_path: Path, text: str) -> None:
    loader = LOADERS["yaml_task"]
    path = tmp_path / loader.file_name
    path.write_text(text)
    _loads_or_clean_error(loader, path)


@PROPERTY
@given(data=st.data())
def test_generated_jsonl_never_raises_raw(tmp_path: Path, data) -> None:
    loader = LOADERS["jsonl_task"]
    path = tmp_path / loader.file_name
    rows = data.draw(st.lists(JSON_VALUES | st.builds(lambda: JSONL_ROW), min_size=1, max_size=4))
    rows.append(_mutate(JSONL_ROW, data))
    path.write_text("\n".join(json.dumps(row) for row in rows))
    _loads_or_clean_error(loader, path)


@PROPERTY
@given(record=JSON_VALUES, header=st.binary(max_size=64))
def test_generated_cache_entries_never_raise(tmp_path: Path, record, header: bytes) -> None:
    folder = _entry(tmp_path / "entry", record, struct.pack("<Q", len(header)) + header)
    assert isinstance(cache.check_entry(folder, "s" * 64), str)
    assert cache.check_safetensors(folder / "model.safetensors") is None or isinstance(
        cache.check_safetensors(folder / "model.safetensors"), str
    )


# small things: the build report and `wildcircuits tasks FILE` -----------------------------------
def test_build_report_counts_rows_of_unequal_token_length() -> None:
    from wildcircuits.tasks.dataset import UNEQUAL_LENGTH, BuildReport

    report = BuildReport(10, 6, 10, (), {f"corruption corrupted: {UNEQUAL_LENGTH}": 3, "x": 1})
    assert report.dropped_unequal_length == 3
    assert report.to_dict()["dropped_unequal_length"] == 3
    assert report.to_dict()["dropped_examples"] == dict(report.dropped_examples)
    assert json.loads(json.dumps(report.to_dict())) == report.to_dict()
    assert any("3 candidate examples" in line for line in report.dropped_lines())
    assert BuildReport(4, 4, 4).dropped_lines() == []


def test_tasks_command_caps_a_huge_prompt(tmp_path: Path, capsys) -> None:
    from wildcircuits.cli.main import main

    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({**JSONL_ROW, "clean": "word " * 200_000}) + "\n")
    assert main(["tasks", str(path)]) == 0
    out = capsys.readouterr().out
    assert len(out) < 5_000 and "1,000,000 characters in all" in out


def test_a_path_with_odd_characters_is_named_exactly(tmp_path: Path) -> None:
    folder = tmp_path / "two  spaces. and a dot"
    folder.mkdir()
    for name in ("scores", "yaml_task", "circuit_json"):
        loader = LOADERS[name]
        path = folder / loader.file_name
        _random_bytes(path)
        _assert_clean_error(loader, path)
