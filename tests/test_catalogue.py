"""The catalogue on tiny GGUF cells: states (finished, does not do the task, failed), the
verified criteria on hand-set files (each criterion fails alone), catalogue.json round trip and
rebuild from disk, resume after a killed cell, and bad names refused before any cell runs."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest

from tests.catalogue_fixtures import tiny_config, write_inputs
from wildcircuits.catalogue.cells import KEPT, CellFiles, read_cell
from wildcircuits.catalogue.criteria import failed_criteria
from wildcircuits.catalogue.plan import cell_folder_name, load_plan, make_plan
from wildcircuits.catalogue.run import catalogue, rebuild
from wildcircuits.errors import InputError, WildcircuitsError
from wildcircuits.pipeline import runner as runner_module
from wildcircuits.results import RESULT_KINDS
from wildcircuits.results.catalogue import Catalogue, CellState, VerifiedCriteria
from wildcircuits.results.verdicts import CheckVerdict
from wildcircuits.results.verify import ClaimStatus, Estimate, Interval


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One catalogue of bad, copy and swapped x the tiny model (the bad cell first, so the
    others must run after it fails); yields (root, inputs, catalogue)."""
    root = tmp_path_factory.mktemp("catalogue")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WILDCIRCUITS_CACHE", str(root / "cache"))
        inputs = write_inputs(root / "inputs")
        tasks = [inputs["bad"], inputs["copy"], inputs["swapped"]]
        result = catalogue(
            tasks, [inputs["model"]], root / "out", config=tiny_config(), progress=False
        )
        yield root / "out", inputs, result


def test_each_cell_has_its_state_and_the_failed_one_does_not_stop_the_others(built):
    root, inputs, result = built
    bad = result.cell(inputs["bad"], inputs["model"])
    assert bad.state is CellState.FAILED and "not a single token" in bad.error
    copy = result.cell(inputs["copy"], inputs["model"])
    assert copy.state in (CellState.VERIFIED, CellState.NOT_VERIFIED)
    assert (root / copy.folder / "report.html").exists()
    steps = {s.step: s.state for s in copy.steps}
    assert set(steps.values()) == {"done"} and "verify" in steps
    assert copy.n_edges > 0 and copy.faithfulness is not None and copy.classes
    swapped = result.cell(inputs["swapped"], inputs["model"])
    assert swapped.state is CellState.NO_BEHAVIOUR
    assert "does not do the task" in swapped.stop_reason
    # its behaviour numbers are kept: exactly copy's accuracy mirrored, below the gate
    assert swapped.behaviour.accuracy == pytest.approx(1 - copy.behaviour.accuracy, abs=1e-6)
    assert swapped.behaviour.accuracy < tiny_config().min_accuracy <= copy.behaviour.accuracy
    assert swapped.behaviour.clean_mean == pytest.approx(-copy.behaviour.clean_mean, abs=1e-6)
    assert result.counts()["failed"] == 1 and result.counts()["model does not do the task"] == 1


def test_the_finished_cell_lists_the_criteria_it_fails_by_name(built):
    _, inputs, result = built
    copy = result.cell(inputs["copy"], inputs["model"])
    names = [f.name for f in copy.failed_criteria]
    # the tiny random model's F(C) / F(M) is -1.6 [-18, 19]: not faithful, and it says so
    assert copy.state is CellState.NOT_VERIFIED and "faithful" in names
    assert all(f.reason for f in copy.failed_criteria)


def test_catalogue_json_round_trips_and_rebuilds_to_the_same_bytes(built):
    root, _, result = built
    path = root / "catalogue.json"
    assert Catalogue.load(path) == result
    before = path.read_bytes()
    path.unlink()
    assert rebuild(root) == result
    assert path.read_bytes() == before
    data = json.loads(before)
    assert data["schema_version"] == 1 and data["criteria"]["faithful_low"] == 0.8
    assert [c["state"] for c in data["cells"]] == [
        "failed",
        "not verified",
        "model does not do the task",
    ]


def test_resume_keeps_finished_and_stopped_cells_and_retries_the_failed_one(built, monkeypatch):
    root, inputs, result = built
    monkeypatch.setenv("WILDCIRCUITS_CACHE", str(root.parent / "cache"))
    calls = _count_steps(monkeypatch)
    tasks = [inputs["bad"], inputs["copy"], inputs["swapped"]]
    with pytest.raises(InputError, match="already holds a catalogue.*--resume"):
        catalogue(tasks, [inputs["model"]], root, config=tiny_config(), progress=False)
    again = catalogue(
        tasks, [inputs["model"]], root, config=tiny_config(), resume=True, progress=False
    )
    assert calls == ["behaviour"]  # only the failed cell ran, and failed again at its first step
    assert again.cells[1:] == result.cells[1:]  # the finished and the stopped cell, unchanged
    assert again.cells[0].error == result.cells[0].error  # (its step took other seconds)


def _count_steps(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = dict(runner_module.STEP_FUNCTIONS)

    def counting(name):
        def step(ctx):
            calls.append(name)
            return original[name](ctx)

        return step

    monkeypatch.setattr(runner_module, "STEP_FUNCTIONS", {n: counting(n) for n in original})
    return calls


class Killed(BaseException):
    """Stands for a kill: not an Exception, so nothing records it as a failed cell."""


def test_a_killed_cell_continues_at_the_step_in_progress(tmp_path, tmp_cache, monkeypatch):
    inputs = write_inputs(tmp_path / "inputs")
    original = dict(runner_module.STEP_FUNCTIONS)

    def killed(ctx):
        raise Killed()

    monkeypatch.setattr(runner_module, "STEP_FUNCTIONS", {**original, "verify": killed})
    out = tmp_path / "out"
    with pytest.raises(Killed):
        catalogue([inputs["copy"]], [inputs["model"]], out, config=tiny_config(), progress=False)
    folder = out / "cells" / cell_folder_name(inputs["copy"], inputs["model"])
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["steps"]["verify"] = {"state": "running"}  # what a kill -9 leaves behind
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert rebuild(out).cells[0].state is CellState.PENDING
    monkeypatch.setattr(runner_module, "STEP_FUNCTIONS", original)
    calls = _count_steps(monkeypatch)
    result = catalogue(
        [inputs["copy"]], [inputs["model"]], out, config=tiny_config(), resume=True, progress=False
    )
    assert calls == ["verify", "redteam", "summarise", "report"]
    assert result.cells[0].state in (CellState.VERIFIED, CellState.NOT_VERIFIED)


# the criteria on hand-set files ----------------------------------------------------------------
@pytest.fixture(scope="module")
def passing(built):
    """The copy cell's real files, edited so that every criterion holds."""
    root, inputs, result = built
    folder = root / result.cell(inputs["copy"], inputs["model"]).folder
    load = {
        name: RESULT_KINDS[name].load(folder / name)
        for name in ("metrics.json", "redteam.json", "verification.json", "explanation.json")
    }
    metrics = load["metrics.json"]
    metrics = replace(metrics, selected=replace(metrics.selected, faithfulness=0.9))
    redteam = load["redteam.json"]
    checks = tuple(_pass(c) for c in redteam.checks)
    redteam = replace(
        redteam,
        checks=tuple(
            replace(
                c, numbers={**c.numbers, "circuit": 0.9, "random_mean": 0.1, "random_std": 0.05}
            )
            if c.name == "random_circuit"
            else c
            for c in checks
        ),
    )
    v = load["verification.json"]
    rel = Estimate(0.95, Interval(0.85, 1.05))
    measured = Estimate(0.9, Interval(0.85, 0.95))  # a claim the tiny run could not measure
    claims = tuple(
        replace(c, status=ClaimStatus.SUPPORTED, value=c.value or measured) for c in v.claims
    )
    v = replace(
        v,
        criteria=replace(v.criteria, relative_faithfulness=rel),
        claims=claims,
        checks=tuple(_pass(c) for c in v.checks),
    )
    e = load["explanation.json"]
    e = replace(e, circuit=replace(e.circuit, reached=True))
    return CellFiles(metrics, redteam, v, e)


def _pass(check):
    return replace(check, verdict=CheckVerdict.PASS)


def _claim(files: CellFiles, claim: str, status: ClaimStatus) -> CellFiles:
    v = files.verification
    claims = tuple(replace(c, status=status) if c.claim == claim else c for c in v.claims)
    return replace(files, verification=replace(v, claims=claims))


def _faith(files: CellFiles, value: float, low: float | None, high: float | None) -> CellFiles:
    v = files.verification
    rel = Estimate(value, None if low is None else Interval(low, high))
    return replace(
        files, verification=replace(v, criteria=replace(v.criteria, relative_faithfulness=rel))
    )


def _check(files: CellFiles, name: str, **numbers) -> CellFiles:
    r = files.redteam
    checks = tuple(
        replace(
            c,
            verdict=CheckVerdict.WARN if not numbers else c.verdict,
            numbers={**c.numbers, **numbers},
        )
        if c.name == name
        else c
        for c in r.checks
    )
    return replace(files, redteam=replace(r, checks=checks))


def _names(files: CellFiles, criteria: VerifiedCriteria | None = None) -> list[str]:
    return [f.name for f in failed_criteria(files, criteria or VerifiedCriteria())]


def test_the_edited_files_meet_every_criterion(passing):
    assert _names(passing) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda f: _faith(f, 0.79, 0.7, 0.9), "faithful"),  # below the band
        (lambda f: _faith(f, 1.25, 1.1, 1.4), "faithful"),  # overshoot
        (lambda f: _faith(f, 0.9, 0.55, 1.2), "faithful"),  # interval low end < 0.6
        (lambda f: _faith(f, 0.9, None, None), "faithful"),  # no interval
        (
            lambda f: replace(
                f,
                explanation=replace(
                    f.explanation, circuit=replace(f.explanation.circuit, reached=False)
                ),
            ),
            "compact",
        ),
        (
            lambda f: replace(
                f,
                metrics=replace(f.metrics, selected=replace(f.metrics.selected, faithfulness=0.7)),
            ),
            "edge_faithful",
        ),
        (lambda f: _check(f, "random_circuit", random_mean=0.45), "random_far_below"),
        (lambda f: _check(f, "random_circuit", random_std=0.21), "random_far_below"),
        (
            lambda f: _claim(f, "the circuit is complete", ClaimStatus.FALSIFIED),
            "claim: the circuit is complete",
        ),
        (
            lambda f: _claim(f, "the circuit is faithful", ClaimStatus.FALSIFIED),
            "claim: the circuit is faithful",
        ),
        (lambda f: _check(f, "other_seed"), "red team: other_seed"),
        (lambda f: _check(f, "ablation_type"), "red team: ablation_type"),
    ],
)
def test_each_criterion_fails_alone(passing, edit, expected):
    assert _names(edit(passing)) == [expected]


def test_inconclusive_claims_pass_unmeasured_claims_missing_checks_and_files_fail(passing):
    files = _claim(passing, "the circuit is complete", ClaimStatus.INCONCLUSIVE)
    assert _names(files) == []  # measured, its interval straddling the bar
    v = files.verification
    unmeasured = tuple(
        replace(c, value=None, reason="not scrubbable: needs 429 class runs")
        if c.claim == "the whole hypothesis" else c
        for c in v.claims
    )  # fmt: skip
    failed = failed_criteria(replace(files, verification=replace(v, claims=unmeasured)),
                             VerifiedCriteria())  # fmt: skip
    assert [(f.name, f.reason) for f in failed] == [
        ("claim: the whole hypothesis", "not measured: not scrubbable: needs 429 class runs")
    ]
    dropped = tuple(c for c in v.claims if c.claim != "the whole hypothesis")
    assert _names(replace(files, verification=replace(v, claims=dropped))) == [
        "claim: the whole hypothesis"
    ]
    r = passing.redteam
    no_seed = replace(
        passing, redteam=replace(r, checks=tuple(c for c in r.checks if c.name != "other_seed"))
    )
    assert _names(no_seed) == ["red team: other_seed"]
    assert _names(CellFiles()) == [
        "faithful",
        "compact",
        "edge_faithful",
        "random_far_below",
        "claim: the circuit is faithful",
        "claim: the circuit is complete",
        "claim: the whole hypothesis",
        "red team: random_circuit",
        "red team: other_seed",
        "red team: other_corruption",
    ]
    warned = _check(passing, "ablation_type")
    assert _names(warned, VerifiedCriteria(exempt_checks=("ablation_type",))) == []


def test_a_plan_read_back_gives_the_same_cells(built):
    root, inputs, result = built
    plan = load_plan(root)
    assert [(c.task, c.model) for c in plan.cells] == [c.key for c in result.cells]
    assert plan.base == tiny_config().with_(task="_", model="_")
    assert read_cell(root, plan.cells[1], plan) == result.cells[1]


def test_a_cell_reduced_to_the_kept_files_still_reads_as_finished(built, tmp_path):
    """docs/catalogue/ commits only KEPT: such a copy gives the same rows, and a missing or
    edited kept file makes the cell pending again (run it)."""
    import shutil

    root, inputs, result = built
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("cache"))
    plan = load_plan(copy)
    dropped = []
    for cell in copy.glob("cells/*/*"):
        if cell.name not in KEPT:
            dropped.append(cell.name)
            shutil.rmtree(cell) if cell.is_dir() else cell.unlink()
    assert {"report.html", "examples.json"} <= set(dropped)
    assert [read_cell(copy, s, plan) for s in plan.cells] == [
        read_cell(root, s, plan) for s in plan.cells
    ]
    assert read_cell(copy, plan.cells[1], plan) == result.cells[1]
    folder = copy / result.cells[1].folder
    metrics = folder / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"faithfulness"', ' "faithfulness"', 1))
    assert read_cell(copy, plan.cells[1], plan).state is CellState.PENDING
    metrics.unlink()
    assert read_cell(copy, plan.cells[1], plan).state is CellState.PENDING


def _reduced_copy(root, tmp_path):
    """A copy of the built catalogue with every cell reduced to KEPT (as docs/catalogue/)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("cache"))
    for cell in copy.glob("cells/*/*"):
        if cell.name not in KEPT:
            shutil.rmtree(cell) if cell.is_dir() else cell.unlink()
    return copy


def test_a_new_verify_method_reruns_only_verify_in_a_reduced_cell(built, tmp_path, monkeypatch):
    """Rerunning a reduced cell's upstream steps would redo the whole cell; a stale verify step
    reads only hypothesis.yaml, so it alone runs again, and the cell reads as finished."""
    from wildcircuits.catalogue.cells import cell_folder, run_cell, steps_to_rerun
    from wildcircuits.pipeline import fingerprint
    from wildcircuits.results.manifest import Manifest

    root, inputs, result = built
    copy = _reduced_copy(root, tmp_path)
    monkeypatch.setenv("WILDCIRCUITS_CACHE", str(root / "cache"))
    plan = load_plan(copy)
    spec = plan.cells[1]
    folder, config = cell_folder(copy, spec), spec.config(plan.base)
    before = Manifest.load(folder / "manifest.json").steps
    assert steps_to_rerun(folder, config) is None  # nothing is stale
    hypothesis_version = fingerprint.METHOD_VERSIONS["hypothesis"]
    monkeypatch.setitem(fingerprint.METHOD_VERSIONS, "verify", 99)
    assert read_cell(copy, spec, plan).state is CellState.PENDING
    assert steps_to_rerun(folder, config) == ("verify",)
    monkeypatch.setitem(fingerprint.METHOD_VERSIONS, "hypothesis", 99)
    assert steps_to_rerun(folder, config) == ("hypothesis", "verify")
    monkeypatch.setitem(fingerprint.METHOD_VERSIONS, "hypothesis", hypothesis_version)
    assert run_cell(folder, config) is None
    after = Manifest.load(folder / "manifest.json").steps
    assert after["verify"].fingerprint != before["verify"].fingerprint
    assert {s: r for s, r in after.items() if s != "verify"} == {
        s: r for s, r in before.items() if s != "verify"
    }
    assert not (folder / "localise.json").exists() and not (folder / "circuit.json").exists()
    assert read_cell(copy, spec, plan).state is result.cells[1].state
    assert steps_to_rerun(folder, config) is None
    monkeypatch.setitem(fingerprint.METHOD_VERSIONS, "explain", 99)  # reads circuit.json
    assert steps_to_rerun(folder, config) is None


def test_the_gitignore_keeps_exactly_the_kept_files_of_a_committed_cell():
    from pathlib import Path

    lines = (Path(__file__).parents[1] / ".gitignore").read_text().splitlines()
    kept = {ln.rsplit("/", 1)[1] for ln in lines if ln.startswith("!docs/catalogue/cells/*/")}
    assert "docs/catalogue/cells/*/*" in lines and kept == set(KEPT)


# bad input and names ---------------------------------------------------------------------------
def test_unknown_names_are_refused_before_any_cell_runs(tmp_path, tmp_cache, monkeypatch):
    inputs = write_inputs(tmp_path / "inputs")
    calls = _count_steps(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="unknown task 'ioi_typo'; built-in tasks: .*ioi"):
        catalogue([inputs["copy"], "ioi_typo"], [inputs["model"]], out, progress=False)
    with pytest.raises(InputError, match="'smollm3' is not a built-in model.*smollm2-135m"):
        catalogue([inputs["copy"]], [inputs["model"], "smollm3"], out, progress=False)
    with pytest.raises(InputError, match="--models names nothing"):
        catalogue([inputs["copy"]], " , ", out, progress=False)
    assert calls == [] and not out.exists()


def test_ray_missing_names_the_extra(monkeypatch, tmp_path, tmp_cache):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    inputs = write_inputs(tmp_path / "inputs")
    with pytest.raises(WildcircuitsError, match=r"pip install wildcircuits\[ray\]"):
        catalogue(
            [inputs["copy"]], [inputs["model"]], tmp_path / "out", executor="ray", progress=False
        )
    assert not (tmp_path / "out").exists()


def test_cell_folder_names_are_safe_and_distinct():
    assert cell_folder_name("ioi", "smollm2-135m-instruct") == "ioi--smollm2-135m-instruct"
    assert (
        cell_folder_name("ioi", "HuggingFaceTB/SmolLM2-135M") == "ioi--HuggingFaceTB_SmolLM2-135M"
    )
    a = cell_folder_name("/x/copy.jsonl", "/m/tiny.gguf")
    b = cell_folder_name("/y/copy.jsonl", "/m/tiny.gguf")
    assert a != b and a.startswith("copy-") and "/" not in a
    assert "/" not in cell_folder_name("../../etc", "a b")


def test_all_means_every_built_in_task():
    from wildcircuits.tasks import builtin_names

    plan = make_plan("all", "smollm2-135m-instruct")
    assert plan.tasks == tuple(builtin_names()) and len(plan.cells) == len(builtin_names())


def test_the_cli_reports_a_bad_name_and_rebuilds(built, capsys):
    from wildcircuits.cli.main import main

    root, _, _ = built
    assert main(["catalogue", "--tasks", "nope", "--models", "x", "--out", str(root)]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    before = (root / "catalogue.json").read_bytes()
    assert (
        main(["catalogue", "--tasks", "all", "--models", "x", "--out", str(root), "--rebuild"]) == 0
    )
    assert (root / "catalogue.json").read_bytes() == before
    page = (root / "index.html").read_text()
    assert page.count("<tr data-state=") == 3 and "report.html" in page


def test_failures_count_each_criterion_and_the_cells_it_alone_fails(built):
    from dataclasses import replace

    from wildcircuits.report.catalogue_markdown import render_markdown
    from wildcircuits.results.catalogue import FailedCriterion

    _, _, result = built
    a, b = FailedCriterion("faithful", "x"), FailedCriterion("compact", "y")
    cells = tuple(
        replace(result.cells[1], task=f"t{i}", failed_criteria=failed)
        for i, failed in enumerate([(a, b), (a,), (b, a), (), (a,)])
    )
    made = replace(result, cells=cells)
    assert made.failures() == [("faithful", 4, 2), ("compact", 2, 0)]
    assert "| faithful | 4 | 2 |" in render_markdown(made)
    assert render_markdown(replace(made, cells=cells[3:4])).count("Criteria the cells fail") == 0


def test_index_escapes_names_and_links_each_cell(built):
    root, inputs, result = built
    page = (root / "index.html").read_text()
    for cell in result.cells:
        assert f'href="{cell.folder}/report.html"' in page
    assert "http://" not in page and "https://" not in page  # nothing is fetched
    import importlib.util

    if importlib.util.find_spec("wildcircuits.catalogue.compare") is None:  # not merged yet
        assert "comparison pages (universality.html, reuse.html) are not built" in page


def test_the_comparison_pages_are_called_with_the_finished_cells_and_linked(built, monkeypatch):
    import types

    root, inputs, result = built
    seen = {}

    def write_compare_pages(out_dir, cells):
        seen.update(cells)
        (out_dir / "universality.html").write_text("<p>u</p>")
        return [out_dir / "universality.html"]

    fake = types.ModuleType("wildcircuits.catalogue.compare")
    fake.write_compare_pages = write_compare_pages
    monkeypatch.setitem(sys.modules, "wildcircuits.catalogue.compare", fake)
    for name in ("universality.html", "reuse.html"):  # the real module's, from the fixture
        (root / name).unlink(missing_ok=True)
    rebuild(root)
    copy = result.cell(inputs["copy"], inputs["model"])
    assert seen == {copy.key: root / copy.folder}  # finished cells only, not failed / stopped
    page = (root / "index.html").read_text()
    assert 'href="universality.html"' in page and 'href="reuse.html"' not in page
    (root / "universality.html").unlink()


def test_catalogue_md_has_one_row_per_cell_and_escapes_pipes(built):
    from dataclasses import replace

    from wildcircuits.report.catalogue_markdown import render_markdown

    root, _, result = built
    table = (root / "catalogue.md").read_text()
    lines = table.splitlines()
    main = lines[next(i for i, ln in enumerate(lines) if ln.startswith("| task |")) :]
    rows = [line for line in main if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(result.cells)  # the header and one row per cell
    for cell in result.cells:
        assert any(f"| {cell.task} | {cell.model} | {cell.state.value} |" in r for r in rows)
    hostile = replace(result, cells=(replace(result.cells[0], task="a|b\nc"),))
    assert "| a\\|b c |" in render_markdown(hostile)


def test_token_forwards_are_summed_and_a_partial_count_says_so(built):
    """The index and catalogue.md show each cell's cost in token-forwards; a cell whose done
    steps predate the count (rerun only in part) shows the counted sum and how many steps."""
    from wildcircuits.report.catalogue_index import forwards_cell
    from wildcircuits.results.catalogue import StepSeconds

    root, inputs, result = built
    cell = result.cells[1]
    counted = [s.token_forwards for s in cell.steps if s.state == "done"]
    assert counted and all(c is not None for c in counted) and sum(counted) > 0
    assert forwards_cell(cell) == (f"{sum(counted):,}", repr(float(sum(counted))))
    old = tuple(StepSeconds(s.step, s.state, s.seconds) for s in cell.steps)
    partial = replace(cell, steps=(*old[:-1], cell.steps[-1]))
    n_done = sum(s.state == "done" for s in cell.steps)
    assert forwards_cell(partial)[0].endswith(f"(1 of {n_done} steps)")
    assert forwards_cell(replace(cell, steps=old)) == ("n/a", "")
    assert f"{sum(counted):,}" in (root / "catalogue.md").read_text()
