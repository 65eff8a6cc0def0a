# ruff: noqa: F811  (tiny_setup is a fixture imported from test_pipeline)
"""Issue #12: a run folder never mixes results (fingerprints, --resume, --fresh), one run at a
time (the lock), and a `kill -9` loses at most the step in progress (a real subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_pipeline import _config, tiny_setup  # noqa: F401  (a fixture)
from wildcircuits.errors import WildcircuitsError
from wildcircuits.pipeline import discover
from wildcircuits.pipeline import runner as runner_module
from wildcircuits.pipeline.fingerprint import stale_steps
from wildcircuits.pipeline.lock import RunFolderLocked
from wildcircuits.report.run_folder import PartState, read_run
from wildcircuits.results import RESULT_KINDS
from wildcircuits.results.manifest import Manifest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _counting(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = dict(runner_module.STEP_FUNCTIONS)

    def wrap(name):
        def step(ctx):
            calls.append(name)
            return original[name](ctx)

        return step

    monkeypatch.setattr(runner_module, "STEP_FUNCTIONS", {n: wrap(n) for n in original})
    return calls


def _agrees(root: Path) -> None:
    """Every output parses and every fingerprint agrees with config.json."""
    run = read_run(root)
    assert stale_steps(run.config.to_dict(), run.manifest, root) == {}
    for name, kind in RESULT_KINDS.items():
        if (root / name).exists():
            kind.load(root / name)


def test_another_seed_without_resume_refuses_and_fresh_restarts(tiny_setup, tmp_path):
    model, task = tiny_setup
    run = tmp_path / "run"
    discover(_config(model, task), run, progress=False)
    with pytest.raises(WildcircuitsError, match=r"other settings \(seed: 0 -> 5\).*--fresh"):
        discover(_config(model, task, seed=5, steps=("behaviour",)), run, progress=False)
    discover(_config(model, task, seed=5, steps=("behaviour",)), run, progress=False, fresh=True)
    assert not (run / "metrics.json").exists() and not (run / "scores.pt").exists()
    assert list(Manifest.load(run / "manifest.json").steps) == ["behaviour"]
    _agrees(run)


def test_resume_with_a_changed_config_recomputes_affected_steps_only(
    tiny_setup, tmp_path, monkeypatch
):
    model, task = tiny_setup
    run = tmp_path / "run"
    discover(_config(model, task), run, progress=False)
    calls = _counting(monkeypatch)
    discover(_config(model, task, random_seeds=(3, 4)), run, resume=True, progress=False)
    assert calls == [
        "evaluate", "explain", "hypothesis", "verify", "redteam", "summarise", "report",
    ]  # fmt: skip
    _agrees(run)
    calls.clear()
    discover(_config(model, task, random_seeds=(3, 4)), run, resume=True, progress=False)
    assert calls == ["report"]


def test_a_new_method_version_recomputes_that_step_and_what_reads_it(
    tiny_setup, tmp_path, monkeypatch
):
    from wildcircuits.pipeline import fingerprint as fingerprint_module

    model, task = tiny_setup
    run = tmp_path / "run"
    discover(_config(model, task), run, progress=False)
    versions = {**fingerprint_module.METHOD_VERSIONS, "explain": 99}
    old = fingerprint_module.METHOD_VERSIONS["explain"]
    monkeypatch.setattr(fingerprint_module, "METHOD_VERSIONS", versions)
    manifest = Manifest.load(run / "manifest.json")
    stale = stale_steps(read_run(run).config.to_dict(), manifest, run)
    assert set(stale) == {"explain", "hypothesis", "verify"}
    assert f"method_version: {old} -> 99" in stale["explain"]
    calls = _counting(monkeypatch)
    discover(_config(model, task), run, resume=True, progress=False)
    assert calls == ["explain", "hypothesis", "verify", "report"]
    assert Manifest.load(run / "manifest.json").steps["explain"].inputs["method_version"] == 99
    _agrees(run)


def test_a_folder_whose_explain_step_drafted_the_hypothesis_only_redrafts_and_reverifies(
    tiny_setup, tmp_path, monkeypatch
):
    """Before the hypothesis step existed, the explain step wrote hypothesis.yaml too (its
    record lists it, with its hash). On --resume the explain step is kept, the hypothesis step
    takes the file over (the explain record drops it) and verify reads the new draft."""
    from wildcircuits.pipeline.fingerprint import file_hash

    model, task = tiny_setup
    run = tmp_path / "run"
    discover(_config(model, task), run, progress=False)
    data = json.loads((run / "manifest.json").read_text())
    del data["steps"]["hypothesis"]
    explain = data["steps"]["explain"]
    explain["outputs"].append("hypothesis.yaml")
    explain["hashes"]["hypothesis.yaml"] = file_hash(run / "hypothesis.yaml")
    (run / "manifest.json").write_text(json.dumps(data))
    before = Manifest.load(run / "manifest.json").steps["explain"].fingerprint
    calls = _counting(monkeypatch)
    discover(_config(model, task), run, resume=True, progress=False)
    assert calls == ["hypothesis", "verify", "report"]
    explain = Manifest.load(run / "manifest.json").steps["explain"]
    assert explain.fingerprint == before
    assert explain.outputs == ("explanation.json",) and set(explain.hashes) == {"explanation.json"}
    _agrees(run)
    calls.clear()
    discover(_config(model, task), run, resume=True, progress=False)
    assert calls == ["report"]


def test_a_subset_of_steps_with_another_seed_is_hidden_in_the_report(tiny_setup, tmp_path):
    model, task = tiny_setup
    run = tmp_path / "run"
    discover(_config(model, task), run, progress=False)
    new = _config(model, task, seed=5, steps=("behaviour", "report"))
    discover(new, run, resume=True, progress=False)
    files = read_run(run)
    assert files.part("behaviour.json").ok
    for name in ("metrics.json", "localise.json", "redteam.json", "circuit.json"):
        assert files.part(name).state is PartState.STALE, name
    page = (run / "report.html").read_text()
    assert "are not shown" in page and "Not shown: metrics.json" in page


def test_metrics_holding_an_empty_object_is_not_a_finished_step(tiny_setup, tmp_path, monkeypatch):
    model, task = tiny_setup
    run = tmp_path / "run"
    discover(_config(model, task), run, progress=False)
    (run / "metrics.json").write_text("{}")
    assert read_run(run).part("metrics.json").state is PartState.STALE
    calls = _counting(monkeypatch)
    discover(_config(model, task), run, resume=True, progress=False)
    assert calls == [
        "evaluate", "explain", "hypothesis", "verify", "redteam", "summarise", "report",
    ]  # fmt: skip
    _agrees(run)


def _env(tmp_path: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


HOLD = """
import sys, time
from wildcircuits.pipeline.lock import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_run_into_a_locked_folder_names_the_holder(tiny_setup, tmp_path):
    model, task = tiny_setup
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], env=_env(tmp_path),
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderLocked, match=rf"pid {holder.pid} on host"):
            discover(_config(model, task, steps=("behaviour",)), run, progress=False)
    finally:
        holder.kill()
        holder.wait()
    discover(_config(model, task, steps=("behaviour",)), run, progress=False)  # lock released


KILLED = """
import json, sys, time
from wildcircuits.pipeline import DiscoverConfig, discover
from wildcircuits.pipeline import runner
config = DiscoverConfig.from_dict(json.loads(sys.argv[2]))
step, output = sys.argv[3], sys.argv[4]
real = runner.STEP_FUNCTIONS[step]
def killed_step(ctx):
    real(ctx)
    path = ctx.folder.path(output)
    data = path.read_bytes()
    with open(path, "wb") as handle:  # a write cut in half by the kill
        handle.write(data[: len(data) // 2])
        handle.flush()
    print("in " + step, flush=True)
    time.sleep(60)
runner.STEP_FUNCTIONS[step] = killed_step
discover(config, sys.argv[1], progress=False)
"""

#: (step killed, its output left half-written): one per kind of output (JSON result, a tensor
#: file, a figure of a step that writes several files, the YAML hypothesis) and early, middle and
#: late steps. Every step writes through one atomic writer and one manifest, so more JSON steps
#: (explain, red team) would repeat the verify case at ~18 s each.
KILL_POINTS = [
    ("behaviour", "behaviour.json"),
    ("discover", "scores.pt"),
    ("evaluate", "figures/faithfulness.png"),
    ("hypothesis", "hypothesis.yaml"),
    ("verify", "verification.json"),
]
STEP_ORDER = [
    "behaviour", "localise", "discover", "evaluate", "explain", "hypothesis", "verify",
    "redteam", "summarise", "report",
]  # fmt: skip


@pytest.mark.parametrize(("step", "output"), KILL_POINTS)
def test_kill_9_during_a_step_loses_only_that_step(step, output, tiny_setup, tmp_path, monkeypatch):
    model, task = tiny_setup
    run, config = tmp_path / "run", _config(model, task)
    args = [sys.executable, "-c", KILLED, str(run), json.dumps(config.to_dict()), step, output]
    child = subprocess.Popen(args, env=_env(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == f"in {step}"
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["steps"][step]["state"] == "running"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    before = {s: r.fingerprint for s, r in Manifest.load(run / "manifest.json").steps.items()}
    calls = _counting(monkeypatch)
    discover(config, run, resume=True, progress=False)
    killed = STEP_ORDER.index(step)
    assert calls == STEP_ORDER[killed:]
    after = Manifest.load(run / "manifest.json").steps
    for earlier in STEP_ORDER[:killed]:
        assert after[earlier].fingerprint == before[earlier]
    _agrees(run)
