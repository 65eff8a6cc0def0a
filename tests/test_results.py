"""The run folder's result types: round trips, errors that name the file and the key, schema
versions, a folder written before the types, `--resume` on files that do not fit, the docs."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tests.report_fixtures import write_synthetic_run
from wildcircuits.errors import WildcircuitsError
from wildcircuits.pipeline.config import DiscoverConfig
from wildcircuits.pipeline.fingerprint import file_hash
from wildcircuits.pipeline.run_folder import RunFolder
from wildcircuits.report.html import build_report
from wildcircuits.report.run_folder import read_run
from wildcircuits.results import RESULT_KINDS, ResultFileError, load_result, schema
from wildcircuits.results.manifest import StepState
from wildcircuits.results.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
#: A run folder written by the release before the result types (tiny GGUF model, copy task).
RUN_V0 = ROOT / "tests" / "data" / "run_v0"
#: Result files added after that release (RUN_V0 has none of them).
NEWER_THAN_V0 = ("explanation.json", "verification.json")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    write_synthetic_run(root)
    return root


@pytest.mark.parametrize("folder", ["synthetic", "v0"])
def test_every_file_round_trips_through_its_type(folder, synthetic, tmp_path):
    root = synthetic if folder == "synthetic" else RUN_V0
    for name, kind in RESULT_KINDS.items():
        if folder == "v0" and name in NEWER_THAN_V0:
            assert not (root / name).exists()
            continue
        result = load_result(root / name)
        assert isinstance(result, kind)
        first = result.save(tmp_path / "a" / name).read_text()
        second = kind.load(tmp_path / "a" / name).save(tmp_path / "b" / name).read_text()
        assert first == second, name
        if kind.SCHEMA is not None:
            assert result.to_json()["schema_version"] == kind.SCHEMA


def test_a_folder_from_the_release_before_the_types_loads_and_reports(tmp_path):
    run = shutil.copytree(RUN_V0, tmp_path / "run")
    files = read_run(run)
    newer = set(NEWER_THAN_V0)  # written by a later release; an old folder has none
    assert all(part.ok for name, part in files.parts.items() if name not in newer), files.parts
    page = build_report(run).read_text()
    assert "could not be read" not in page.lower() and "not computed (" not in page.lower()
    metrics = files.result("metrics.json")
    assert (
        metrics.selected.faithfulness
        == json.loads((RUN_V0 / "metrics.json").read_text())["selected"]["faithfulness"]
    )


def test_errors_name_the_file_the_key_and_how_to_rebuild(tmp_path):
    data = json.loads((RUN_V0 / "metrics.json").read_text())
    data["curves"][2]["cpr"] = {"mean": 0.1, "std": 0.0}  # the old `evaluate` shape
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultFileError) as error:
        Metrics.load(path)
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message and "'curves[2].cpr'" in message and "expected a number" in message
    assert "--resume" in message and "evaluate" in message
    with pytest.raises(ResultFileError, match=r"key 'provenance': missing"):
        Metrics.from_json({})
    with pytest.raises(ResultFileError, match="newer than this wildcircuits reads"):
        Metrics.from_json({**data, "schema_version": 99})


def test_an_old_evaluate_metrics_file_fails_with_one_line(tmp_path):
    """`wildcircuits evaluate` before the types wrote no `selected` and a dict CPR."""
    data = json.loads((RUN_V0 / "metrics.json").read_text())
    del data["selected"]
    with pytest.raises(ResultFileError, match=r"metrics.json: key 'selected': missing; rebuild"):
        Metrics.from_json(data)


def test_saving_checks_provenance(tmp_path):
    metrics = Metrics.load(RUN_V0 / "metrics.json")
    from dataclasses import replace

    with pytest.raises(WildcircuitsError, match="lacks provenance"):
        replace(metrics, provenance={"model": "m"}).save(tmp_path / "metrics.json")


def test_resume_treats_a_file_that_does_not_fit_as_not_done(tmp_path):
    run = shutil.copytree(RUN_V0, tmp_path / "run")
    folder = RunFolder(run)
    config = DiscoverConfig.from_dict(json.loads((run / "config.json").read_text()))
    folder.start(config, True)
    assert folder.manifest.steps["evaluate"].state is StepState.DONE
    assert not folder.is_done("evaluate", config)  # written before fingerprints: recomputed
    for step in ("behaviour", "localise", "discover", "evaluate", "redteam", "summarise"):
        folder.finish(step, config, 1.0, folder.manifest.steps[step].outputs)
    assert folder.is_done("evaluate", config) and folder.is_done("localise", config)
    (run / "metrics.json").write_text("{}")
    record = folder.manifest.steps["evaluate"]  # the hash agrees: only parsing can tell
    hashes = {**record.hashes, "metrics.json": file_hash(run / "metrics.json")}
    folder.manifest = folder.manifest.with_step("evaluate", replace(record, hashes=hashes))
    assert not folder.is_done("evaluate", config)
    localise = json.loads((run / "localise.json").read_text())
    localise["grids"]["dla_head"]["values"] = "not a grid"
    (run / "localise.json").write_text(json.dumps(localise))
    assert not folder.is_done("localise", config)
    assert folder.is_done("discover", config)


def test_config_from_dict_names_an_unknown_key():
    data = DiscoverConfig().to_dict() | {"n_exmples": 8}
    with pytest.raises(
        WildcircuitsError, match=r"unknown setting\(s\) n_exmples; valid .*n_examples"
    ):
        DiscoverConfig.from_dict(data)
    assert DiscoverConfig.from_dict(DiscoverConfig().to_dict()) == DiscoverConfig()


def test_report_names_the_key_of_an_ill_typed_file(tmp_path):
    write_synthetic_run(tmp_path)
    data = json.loads((tmp_path / "redteam.json").read_text())
    data["checks"][0]["verdict"] = "maybe"
    (tmp_path / "redteam.json").write_text(json.dumps(data))
    page = build_report(tmp_path).read_text()
    assert re.search(r"Could not be read: redteam.json: key &#x27;checks\[0\].verdict&#x27;", page)


def test_docs_run_folder_is_generated_from_the_types():
    text = (ROOT / "docs" / "run_folder.md").read_text()
    assert schema.missing_blocks(text) == []
    assert schema.update(text) == text, (
        "docs/run_folder.md is out of date: python -m wildcircuits.results.schema "
        "docs/run_folder.md"
    )
