"""The catalogue's comparison analyses and pages, on hand-written explanations with known
overlaps (tests.compare_fixtures.py): exact Jaccard values, recurring classes, the
same-algorithm verdict both ways, the IOI-paper table, escaping and skipped cells."""

from __future__ import annotations

import json
from itertools import combinations

import pytest

from tests.compare_fixtures import (
    HOSTILE_CLASS,
    greater_than_alpha,
    induction_alpha,
    ioi_alpha,
    ioi_beta,
    write_catalogue,
)
from wildcircuits.catalogue.compare import Cell, load_cells, write_compare_pages
from wildcircuits.catalogue.compare_models import (
    IOI_PAPER_CLASSES,
    EffectSource,
    Universality,
    Verdict,
    compare_models,
    compare_task,
)
from wildcircuits.catalogue.compare_tasks import Reuse, compare_tasks, jaccard


def _alpha_cells() -> list[Cell]:
    return [
        Cell("ioi", "alpha", ioi_alpha(), 3),
        Cell("induction", "alpha", induction_alpha(), 3),
        Cell("greater-than", "alpha", greater_than_alpha(), 3),
    ]


def _slow_jaccard(a: set[str], b: set[str]) -> float | None:
    """The definition, by counting every head of either set."""
    both = [h for h in sorted(a | b) if h in a and h in b]
    either = sorted(a | b)
    return None if not either else len(both) / len(either)


def test_jaccard_matrix_exact_values_and_shared_heads():
    (reuse,) = compare_tasks(_alpha_cells()).models
    assert reuse.tasks == ("greater-than", "induction", "ioi")
    assert reuse.jaccard == ((1.0, 1 / 3, 0.0), (1 / 3, 1.0, 0.4), (0.0, 0.4, 1.0))
    assert reuse.heads["ioi"] == ("L0.H1", "L1.H0", "L2.H0", "L2.H1")  # the MLP is left out
    pair = next(p for p in reuse.pairs if {p.first, p.second} == {"induction", "ioi"})
    assert pair.shared == ("L0.H1", "L2.H0") and pair.jaccard == pytest.approx(0.4)
    for cell_a, cell_b in combinations(_alpha_cells(), 2):  # against the slow definition
        assert jaccard(cell_a.heads(), cell_b.heads()) == _slow_jaccard(
            set(cell_a.heads()), set(cell_b.heads())
        )
    assert jaccard(frozenset(), frozenset()) is None


def test_recurring_classes_and_shared_heads_name_the_heads():
    (reuse,) = compare_tasks(_alpha_cells()).models
    (recurring,) = reuse.recurring  # only duplicate token is in two tasks
    assert recurring.compared == "duplicate token"
    assert set(recurring.tasks) == {"ioi", "induction"}
    assert recurring.shared_heads == ("L0.H1",)
    shared = {s.head: s.classes for s in reuse.shared_heads}
    assert shared == {
        "L0.H1": {"induction": "duplicate token", "ioi": "duplicate token"},
        "L1.H1": {"greater-than": "writes the answer at END", "induction": "induction"},
        "L2.H0": {"induction": "induction", "ioi": "name mover"},
    }
    assert any("L0.H1" in s and "duplicate token recurs" in s for s in reuse.sentences)


def test_same_algorithm_when_the_classes_come_in_the_same_depth_order():
    cells = [Cell("ioi", "alpha", ioi_alpha(), 3), Cell("ioi", "beta", ioi_beta(negative=False), 6)]
    t = compare_task("ioi", cells)
    assert t.verdict is Verdict.SAME and t.compared_by == "IOI-paper classes"
    assert t.shared == ("duplicate token", "S-inhibition", "name mover")
    alpha, beta = t.models
    assert [c.depth for c in alpha.classes] == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert [c.depth for c in beta.classes] == pytest.approx([0.5 / 6, 3 / 6, 5 / 6])
    assert alpha.effect_source is EffectSource.PATH_TO_LOGITS
    assert [c.share for c in alpha.classes] == pytest.approx([0.0, 0.25, 0.75])
    assert t.sentences[0].startswith("The same algorithm appears in both models")
    movers = next(s for s in t.sentences if s.startswith("Both models have name movers at END"))
    assert "fed by S-inhibition heads (q: alpha +0.40, beta +0.25)" in movers


def test_reordered_and_different_verdicts():
    reordered = [Cell("ioi", "a", ioi_alpha(), 3), Cell("ioi", "b", ioi_beta(True, False), 6)]
    t = compare_task("ioi", reordered)
    assert t.verdict is Verdict.REORDERED
    assert t.models[1].order == ("duplicate token", "name mover", "S-inhibition")
    assert not t.shared_order_agrees
    different = [Cell("ioi", "a", ioi_alpha(), 3), Cell("ioi", "b", ioi_beta(), 6)]
    t = compare_task("ioi", different)
    assert t.verdict is Verdict.DIFFERENT and t.shared_order_agrees
    assert t.only == {"a": (), "b": ("negative name mover",)}
    assert "only b has negative name mover" in t.sentences[0]


def test_ioi_paper_table_rows():
    cells = [Cell("ioi", "alpha", ioi_alpha(), 3), Cell("ioi", "beta", ioi_beta(), 6)]
    rows = {r.paper_class: r for r in compare_task("ioi", cells).paper_rows}
    assert list(rows) == [name for name, _ in IOI_PAPER_CLASSES]
    assert sum(len(r.gpt2_small_heads) for r in rows.values()) == 26  # the paper's 26 heads
    assert {k: len(r.gpt2_small_heads) for k, r in rows.items()} == {
        "name mover": 3, "negative name mover": 2, "backup name mover": 8, "S-inhibition": 4,
        "induction": 4, "duplicate token": 3, "previous token": 2,
    }  # fmt: skip
    assert {k: r.heads for k, r in rows.items()} == {
        "name mover": {"alpha": 2, "beta": 3},
        "negative name mover": {"alpha": 0, "beta": 1},
        "backup name mover": {"alpha": 0, "beta": 0},
        "S-inhibition": {"alpha": 1, "beta": 1},
        "induction": {"alpha": 0, "beta": 0},
        "duplicate token": {"alpha": 1, "beta": 2},
        "previous token": {"alpha": 0, "beta": 0},
    }
    other = compare_task("greater-than", [Cell("greater-than", m, greater_than_alpha(), 3)
                                          for m in ("a", "b")])  # fmt: skip
    assert other.paper_rows == () and other.verdict is Verdict.SAME
    assert other.models[0].effect_source is EffectSource.DIRECT_EFFECT


def test_paper_classes_match_the_explanation_package():
    from wildcircuits.explanation.classes import PAPER_CLASSES

    assert tuple(name for name, _ in IOI_PAPER_CLASSES) == PAPER_CLASSES


def test_results_round_trip_through_json():
    universality = compare_models(
        [Cell("ioi", "alpha", ioi_alpha(), 3), Cell("ioi", "beta", ioi_beta(), 6)]
    )
    data = json.loads(json.dumps(universality.to_json()))
    assert Universality.from_json(data) == universality
    reuse = compare_tasks(_alpha_cells())
    assert Reuse.from_json(json.loads(json.dumps(reuse.to_json()))) == reuse


def test_missing_cells_are_skipped_with_a_reason(tmp_path):
    used, skipped = load_cells(write_catalogue(tmp_path / "runs"))
    assert {(c.task, c.model) for c in used} == {
        ("ioi", "alpha"), ("ioi", "beta"), ("induction", "alpha"),
        ("greater-than", "alpha"), ("greater-than", "beta"),
    }  # fmt: skip
    reasons = {(s.task, s.model): s.reason for s in skipped}
    assert "explanation.json is not in the run folder" in reasons[("induction", "beta")]
    assert "the model does not do the task" in reasons[("induction", "beta")]
    assert "n_layers" in reasons[("docstring", "beta")]
    assert "does not exist" in reasons[("successor", "beta")]
    (gt_beta,) = [c for c in used if (c.task, c.model) == ("greater-than", "beta")]
    assert any("metrics.json" in n for n in gt_beta.notes)  # unreadable: a note, not a skip


def test_pages_escape_and_note_skipped_cells(tmp_path):
    paths = write_compare_pages(tmp_path / "site", write_catalogue(tmp_path / "runs"))
    assert [p.name for p in paths] == ["universality.html", "reuse.html"]
    for path in paths:
        html = path.read_text()
        assert HOSTILE_CLASS not in html and "<script" not in html
        assert "&lt;script&gt;alert(&#x27;class&#x27;)&lt;/script&gt;" in html
        assert html.count('class="skipped-cell"') == 3
        assert "http://" not in html and "https://" not in html  # nothing fetched
    universality = paths[0].read_text()
    assert "arXiv:2211.00593" in universality
    used, skipped = load_cells(write_catalogue(tmp_path / "runs"))
    stored = json.loads((tmp_path / "site" / "universality.json").read_text())
    assert Universality.from_json(stored) == compare_models(used, skipped)
    stored = json.loads((tmp_path / "site" / "reuse.json").read_text())
    assert Reuse.from_json(stored) == compare_tasks(used, skipped)
    assert universality.count('class="compare-diagram"') == 4  # ioi and greater-than, 2 each


CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def _open(path, problems):
    """A headless Debian Chromium page on `path` (as tests/test_report_browser.py opens one)."""
    from playwright.sync_api import sync_playwright

    driver = sync_playwright().start()
    browser = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("request", lambda r: r.url.startswith(("data:", "file:")) or problems.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return driver, browser, page


@pytest.mark.browser
def test_pages_in_chromium(tmp_path):
    """4 class diagrams (ioi and greater-than, two models each), each drawn with a size and its
    own id; 3 x 3 + 2 x 2 heat-map cells (alpha's three tasks, beta's two); the hostile class
    arrives as text; no errors, dialogs or requests."""
    import importlib.util
    import os

    if not os.access(CHROMIUM, os.X_OK) or importlib.util.find_spec("playwright") is None:
        pytest.skip("quarantined (tests/QUARANTINES.md): no Debian chromium or playwright")
    universality, reuse = write_compare_pages(tmp_path / "site", write_catalogue(tmp_path / "r"))
    problems: list[str] = []
    driver, browser, page = _open(universality, problems)
    try:
        diagrams = page.locator(".compare-diagram svg.class-diagram")
        assert diagrams.count() == 4
        ids = {diagrams.nth(k).get_attribute("id") for k in range(4)}
        assert len(ids) == 4
        for k in range(4):
            box = diagrams.nth(k).bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 50
        ioi = page.locator('section[data-task="ioi"]')
        assert ioi.locator(".class-box").count() == 3 + 4  # alpha's and beta's classes
        assert ioi.locator(".paper-table tbody tr").count() == 7
        assert HOSTILE_CLASS in page.inner_text("body")
        assert page.locator(".skipped-cell").count() == 3
        page.goto(reuse.as_uri())
        page.wait_for_load_state("load")
        maps = page.locator(".jaccard-map")
        assert maps.count() == 2
        assert page.locator('.jaccard-map[data-model="alpha"] rect > title').count() == 9
        assert page.locator('.jaccard-map[data-model="beta"] rect > title').count() == 4
        tip = page.locator('.jaccard-map[data-model="alpha"] rect > title').nth(5).text_content()
        assert tip == "task induction, task ioi: Jaccard 0.400"
        assert HOSTILE_CLASS in page.inner_text("body")
        assert problems == []
    finally:
        browser.close()
        driver.stop()


def test_optional_files_add_the_verdict_and_whether_the_hypothesis_was_edited(tmp_path):
    from dataclasses import replace

    from tests.compare_fixtures import write_cell
    from tests.verify_fixtures import write_verification
    from wildcircuits.catalogue.compare import load_cell
    from wildcircuits.explanation.hypothesis import hypothesis_from_explanation, write_hypothesis
    from wildcircuits.results import explain as x

    root = write_cell(tmp_path / "cell", "alpha", 3, ioi_alpha())
    assert load_cell("ioi", "alpha", root).hypothesis_edited is None  # no hypothesis.yaml
    draft = hypothesis_from_explanation(ioi_alpha(), "ioi", "alpha")
    write_hypothesis(root / "hypothesis.yaml", draft)
    verification = write_verification(root)
    cell = load_cell("ioi", "alpha", root)
    assert cell.hypothesis_edited is False and cell.verdict == verification.verdict
    mover = draft.classes[-1]  # a person moves L2.H1@END out of the name movers
    assert mover.name == "name mover" and mover.members[-1] == x.Pair("L2.H1", "END")
    classes = draft.classes[:-1] + (replace(mover, members=mover.members[:-1]),)
    edited = replace(draft, classes=classes, unexplained=draft.unexplained + mover.members[-1:])
    write_hypothesis(root / "hypothesis.yaml", edited)
    assert load_cell("ioi", "alpha", root).hypothesis_edited is True
