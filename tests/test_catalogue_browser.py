"""index.html in headless Chromium (the report's browser set-up and quarantine): a click on a
heading sorts the rows, typing in the filter hides the others, hostile names stay text."""

from __future__ import annotations

import pytest

from tests.test_report_browser import ARGS, CHROMIUM  # same quarantine (module-level skip)
from wildcircuits.report.catalogue_index import write_index
from wildcircuits.results.catalogue import (
    Catalogue,
    Cell,
    CellState,
    Faithfulness,
    VerifiedCriteria,
)

pytestmark = pytest.mark.browser
HOSTILE = "<img src=x onerror=alert(1)>"


def _catalogue() -> Catalogue:
    rows = [
        ("ioi", "smollm2", CellState.VERIFIED, 0.91),
        ("ioi", "gemma3", CellState.NOT_VERIFIED, 0.62),
        ("greater_than", "smollm2", CellState.VERIFIED, 1.05),
        (HOSTILE, "gemma3", CellState.FAILED, None),
        ("induction", "gemma3", CellState.NOT_VERIFIED, 0.2),
    ]
    cells = tuple(
        Cell(
            task,
            model,
            f"cells/{k}",
            state,
            faithfulness=None if f is None else Faithfulness(f, f - 0.1, f + 0.1),
            error=HOSTILE if state is CellState.FAILED else None,
        )
        for k, (task, model, state, f) in enumerate(rows)
    )
    return Catalogue(
        provenance={"package_version": "0"},
        tasks=("ioi",),
        models=("smollm2",),
        settings={},
        criteria=VerifiedCriteria(),
        cells=cells,
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("catalogue")
    path = write_index(root, _catalogue())
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("dialog", lambda d: (problems.append(d.message), d.dismiss()))
        page.on("request", lambda r: r.url.startswith(("file:", "data:")) or problems.append(r.url))
        page.goto(path.as_uri())
        yield page, problems
        browser.close()


def _column(page, name: str) -> list[str]:
    headers = page.locator("#cells th").all_inner_texts()
    col = [h.strip(" ▲▼") for h in headers].index(name)
    return page.locator(f"#cells tbody tr:not([hidden]) td:nth-child({col + 1})").all_inner_texts()


def test_clicking_a_heading_sorts_and_clicking_again_reverses(page):
    page, problems = page
    page.locator("#cells th", has_text="faithfulness").first.click()
    values = [t.split(" ")[0] for t in _column(page, "faithfulness")]
    assert values == ["0.200", "0.620", "0.910", "1.050", "n/a"]  # n/a last
    page.locator("#cells th", has_text="faithfulness").first.click()
    values = [t.split(" ")[0] for t in _column(page, "faithfulness")]
    assert values == ["1.050", "0.910", "0.620", "0.200", "n/a"]
    page.locator("#cells th", has_text="task").first.click()
    assert _column(page, "task")[:2] == ["<img src=x onerror=alert(1)>", "greater_than"]
    assert problems == []


def test_typing_in_the_filter_keeps_only_matching_rows(page):
    page, problems = page
    page.fill("#filter", "gemma3 not verified")
    assert sorted(_column(page, "task")) == ["induction", "ioi"]
    assert page.inner_text("#shown") == "2 of 5 cells"
    page.fill("#filter", "")
    assert len(_column(page, "task")) == 5
    assert page.locator("img[src='x']").count() == 0 and HOSTILE in page.inner_text("body")
    assert problems == []
