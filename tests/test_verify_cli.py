# ruff: noqa: F811  (tiny_setup is a fixture imported from test_pipeline)
"""`wildcircuits verify` into a run folder: the run's own hypothesis only, recorded as its
verify step (fingerprint, report rebuilt); an edited copy must go elsewhere."""

from __future__ import annotations

import json
import shutil

from tests.test_pipeline import _config, tiny_setup  # noqa: F401  (a fixture)
from wildcircuits.cli.main import main
from wildcircuits.pipeline import discover
from wildcircuits.results.manifest import Manifest

STEPS = ("behaviour", "discover", "evaluate", "explain", "hypothesis", "report")


def test_verify_into_its_run_folder_is_recorded_as_the_verify_step(tiny_setup, tmp_path, capsys):
    model, task = tiny_setup
    run = discover(_config(model, task, steps=STEPS), tmp_path / "run", progress=False)
    assert not (run / "verification.json").exists()
    status = main(["verify", str(run / "hypothesis.yaml"), "--task", task, "--model", model,
                   "--out", str(run), "--quiet"])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    record = Manifest.load(run / "manifest.json").steps["verify"]
    assert record.state.value == "done" and record.fingerprint
    assert json.loads((run / "verification.json").read_text())["verdict"]
    assert "Does the explanation hold?" in (run / "report.html").read_text()
    edited = shutil.copy(run / "hypothesis.yaml", tmp_path / "edited.yaml")
    status = main(["verify", str(edited), "--task", task, "--model", model, "--out", str(run)])
    assert status == 2 and "another --out folder" in capsys.readouterr().err


def test_verify_settings_given_for_a_run_folder_are_stored_and_fingerprinted(
    tiny_setup, tmp_path, capsys
):
    model, task = tiny_setup
    run = discover(_config(model, task, steps=STEPS), tmp_path / "run", progress=False)
    args = ["verify", str(run / "hypothesis.yaml"), "--task", task, "--model", model,
            "--out", str(run), "--quiet"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    first = Manifest.load(run / "manifest.json").steps["verify"].fingerprint
    assert main([*args, "--max-n", "6", "--budget", "7000"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["verify_settings"] == {"max_n": 6, "budget_forwards": 7000}
    assert Manifest.load(run / "manifest.json").steps["verify"].fingerprint != first
    verification = json.loads((run / "verification.json").read_text())
    assert verification["provenance"]["settings"]["budget_forwards"] == 7000
    assert verification["provenance"]["settings"]["max_n"] == 6
    status = main([*args, "--n", "4"])  # the run's held-out size is 6
    assert status == 2 and "n 4: a run folder's verify step" in capsys.readouterr().err
    status = main([*args, "--corruption", "something_else"])
    assert status == 2 and "--corruption something_else" in capsys.readouterr().err
