"""The explain step, `wc.explain` and `wildcircuits explain RUN_DIR`, with the stage functions
(components at positions, classes, backup, class paths) replaced by small fakes that record
their calls: the order and splits `explain` calls them with, the pipeline step's inputs (the
selected circuit's nodes) and outputs (explanation.json, a hypothesis.yaml that loads), its
fingerprint and resume, and the CLI's checks before any work. The real stages are tested in
their own files; the tiny-model pipeline test runs them end to end."""

# ruff: noqa: F811  (tiny_setup is a fixture imported from test_pipeline)
from __future__ import annotations

import json
import sys
import types

import pytest
import torch

import wildcircuits as wc
from tests.test_pipeline import _config, tiny_setup  # noqa: F401  (a fixture)
from tests.test_run_integrity import _counting
from wildcircuits.cli.main import main
from wildcircuits.explanation.hypothesis import PathSlot, load_hypothesis
from wildcircuits.explanation.run import explain
from wildcircuits.names import NodeKind, Shape, parse_display_node
from wildcircuits.pipeline import discover
from wildcircuits.pipeline.fingerprint import stale_steps
from wildcircuits.report.run_folder import read_run
from wildcircuits.results.explain import (
    AblationFaithfulness,
    ClassPath,
    Explanation,
    HeadClass,
    Pair,
    PositionCircuit,
)

STEPS = ("behaviour", "discover", "evaluate", "explain", "hypothesis")


class Fakes:
    """Stand-ins for the four stage modules; `calls` lists (stage, split) in call order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.nodes: list[str] | None = None

    @staticmethod
    def split(problem) -> str:
        return str(problem.provenance.get("split", "?"))

    def find_position_circuit(  # the contract's signature
        self, model, search, heldout, target=0.8, spec="counterfactual",
        extra_ablations=("mean:template",), nodes=None, progress=True,
    ):  # fmt: skip
        self.calls.append(("circuit", f"{self.split(search)}->{self.split(heldout)}"))
        self.nodes = None if nodes is None else [str(n) for n in nodes]
        names = self.nodes if nodes is not None else ["L0.H0", "L1.H1", "L0.mlp"]
        pairs = tuple(Pair(n, "END") for n in names[:4])
        faithful = tuple(
            AblationFaithfulness(a, 0.9, 1.0, 1.1, 0.0, "test", heldout.batch)
            for a in (spec, *extra_ablations)
        )
        heads = sum(parse_display_node(p.node).kind is NodeKind.HEAD for p in pairs)
        return PositionCircuit(pairs, target, True, faithful, heads, len(pairs) - heads,
                               forwards=10, naive_forwards=50)  # fmt: skip

    def classify(self, model, problem, circuit, progress=True):
        self.calls.append(("classes", self.split(problem)))
        heads = tuple(p for p in circuit.pairs if parse_display_node(p.node).kind is NodeKind.HEAD)
        mlps = tuple(p for p in circuit.pairs if p not in heads)
        classes = []
        if heads:
            evidence = {"attention_to_END": 0.5, "direct_effect": 0.7}
            classes.append(HeadClass("writers", "name mover", heads[:1], "<b>writes</b>", evidence))
        if mlps:
            classes.append(HeadClass("MLPs at END", None, mlps, "MLPs write at END."))
        return tuple(classes), heads[1:]

    def find_backup(self, model, problem, classes, writer=None):
        self.calls.append(("backup", self.split(problem)))
        return None

    def class_paths(self, model, problem, classes, progress=True):
        self.calls.append(("paths", self.split(problem)))
        return tuple(ClassPath(c.name, "logits", "logits", "END", 0.5) for c in classes)

    def describe_algorithm(self, classes, paths):
        return tuple(f"{c.name} write the answer." for c in classes)

    def position_index(self, problem):
        return ("END", "other"), torch.zeros(problem.batch, 1, dtype=torch.long)


@pytest.fixture
def fakes(monkeypatch) -> Fakes:
    """The stage modules (helpers A-C) replaced in sys.modules by fakes, merged or not."""
    fake = Fakes()
    stages = {
        "position_search": ["find_position_circuit"],
        "positions": ["position_index"],
        "classes": ["classify"],
        "backup": ["find_backup"],
        "class_paths": ["class_paths", "describe_algorithm"],
    }
    for module, names in stages.items():
        stub = types.ModuleType(f"wildcircuits.explanation.{module}")
        for name in names:
            setattr(stub, name, getattr(fake, name))
        monkeypatch.setitem(sys.modules, stub.__name__, stub)
    return fake


def _problem(split: str, batch: int = 3):
    return types.SimpleNamespace(
        batch=batch,
        provenance={"model": "m", "quantization": "none", "metric": "logit_diff", "split": split},
    )


def test_explain_calls_the_stages_in_order_on_the_stated_splits(fakes):
    result = explain(None, _problem("train"), _problem("test"), nodes=["L0.H0", "L1.H1"])
    assert fakes.calls == [
        ("circuit", "train->test"),
        ("classes", "train"),
        ("backup", "test"),
        ("paths", "test"),
    ]
    assert fakes.nodes == ["L0.H0", "L1.H1"]
    assert [c.name for c in result.classes] == ["writers"]
    assert result.unexplained == (Pair("L1.H1", "END"),)
    assert [f.ablation for f in result.circuit.faithfulness] == ["counterfactual", "mean:template"]
    assert result.provenance["split"] == "test" and result.provenance["search_split"] == "train"
    assert set(result.provenance["seconds"]) == {"circuit", "classes", "backup", "paths"}
    assert result.algorithm == ("writers write the answer.",)
    assert Explanation.from_json(result.to_json()) == result


def test_wc_explain_is_the_same_verb(fakes):
    import wildcircuits.explanation.hypothesis  # noqa: F401  (importing the package hides nothing)

    result = wc.explain(None, _problem("train"), _problem("test"), progress=False)
    assert isinstance(result, Explanation) and fakes.nodes is None


def test_the_pipeline_step_explains_the_selected_circuit(fakes, tiny_setup, tmp_path):
    model, task = tiny_setup
    run = discover(_config(model, task, steps=STEPS), tmp_path / "run", progress=False)
    circuit = json.loads((run / "circuit.json").read_text())
    in_graph = [n for n, v in circuit["nodes"].items() if v["in_graph"]]
    expected = set(in_graph)  # MIB names (a0.h1, m0, input, logits)
    shown = {parse_display_node(n) for n in fakes.nodes}
    assert {n.name for n in shown} <= expected and shown, (fakes.nodes, in_graph)
    assert all(n.kind in (NodeKind.HEAD, NodeKind.MLP) for n in shown)
    explanation = Explanation.load(run / "explanation.json")
    assert explanation.provenance["candidates"].startswith(f"the {len(fakes.nodes)} heads")
    info = read_run(run)
    assert stale_steps(info.config.to_dict(), info.manifest, run) == {}
    record = info.manifest.steps["explain"]
    assert record.outputs == ("explanation.json",) and record.fingerprint
    record = info.manifest.steps["hypothesis"]
    assert record.outputs == ("hypothesis.yaml",) and record.fingerprint
    shape = Shape(circuit["cfg"]["n_layers"], circuit["cfg"]["n_heads"])
    hypothesis = load_hypothesis(run / "hypothesis.yaml", shape, ("END", "other"))
    assert hypothesis.task == task and set(hypothesis.pairs()) == set(explanation.circuit.pairs)
    assert all(p.slot is PathSlot.LOGITS for p in hypothesis.paths)


def test_resume_skips_explain_until_the_circuit_changes(fakes, tiny_setup, tmp_path, monkeypatch):
    model, task = tiny_setup
    config = _config(model, task, steps=STEPS)
    discover(config, tmp_path / "run", progress=False)
    calls = _counting(monkeypatch)
    discover(config, tmp_path / "run", resume=True, progress=False)
    assert calls == []
    (tmp_path / "run" / "hypothesis.yaml").write_text("edited by hand\n")
    discover(config, tmp_path / "run", resume=True, progress=False)
    assert calls == ["hypothesis"]  # its output changed since it was written
    calls.clear()
    (tmp_path / "run" / "explanation.json").write_text("{}")
    discover(config, tmp_path / "run", resume=True, progress=False)
    assert calls == ["explain", "hypothesis"]  # the draft reads explanation.json
    calls.clear()
    discover(config.with_(random_seeds=(7,)), tmp_path / "run", resume=True, progress=False)
    assert calls == ["evaluate", "explain", "hypothesis"]


def test_the_cli_recomputes_a_finished_run(fakes, tiny_setup, tmp_path, capsys):
    model, task = tiny_setup
    run = discover(_config(model, task, steps=STEPS), tmp_path / "run", progress=False)
    (run / "explanation.json").unlink()
    (run / "hypothesis.yaml").unlink()
    assert main(["explain", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {run / 'explanation.json'}" in out and f"wrote {run / 'hypothesis.yaml'}" in out
    assert Explanation.load(run / "explanation.json").classes
    info = read_run(run)
    assert stale_steps(info.config.to_dict(), info.manifest, run) == {}


def _not_a_run(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def _no_evaluate(tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"task": "ioi"}))
    (folder / "manifest.json").write_text(json.dumps({"steps": {}}))
    return folder


BAD_RUN_DIRS = [
    (lambda tmp: tmp / "missing", "does not exist"),
    (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt", "is not a folder"),
    (_not_a_run, "is not a readable run folder"),
    (_no_evaluate, "no selected circuit to explain (the evaluate step did not finish)"),
]


@pytest.mark.parametrize(
    ("make", "words"), BAD_RUN_DIRS, ids=["missing", "file", "empty", "partial"]
)
def test_a_bad_run_dir_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, make, words):
    loads = []
    monkeypatch.setattr("wildcircuits.models.load_model", lambda *a, **k: loads.append(a))
    status = main(["explain", str(make(tmp_path))])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and words in err, err
    assert err.startswith("error: ") and not loads


def test_a_bad_device_is_refused_first(fakes, tmp_path, capsys):
    assert main(["explain", str(_no_evaluate(tmp_path)), "--device", "tpu:9"]) == 2
    assert "--device" in capsys.readouterr().err
