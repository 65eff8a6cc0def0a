"""report.html in a real browser: headless Debian Chromium driven by Playwright.

`make test` installs both (the `browser` target: apt-get chromium, pip playwright). The browser is
launched from /usr/bin/chromium; Playwright's own browser download is never used.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.report_fixtures import HOSTILE_EVIDENCE, HOSTILE_PROMPT, write_synthetic_run
from tests.verify_fixtures import HOSTILE_CLAIM
from wildcircuits.report.html import build_report

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

# Quarantine (tests/QUARANTINES.md), never a silent skip: only where `make browser` could not
# install Debian's chromium or the playwright package, and the reason is printed with the skip.
_LACKS = [
    what
    for what, present in (
        (f"Debian chromium at {CHROMIUM}", os.access(CHROMIUM, os.X_OK)),
        ("the playwright package", importlib.util.find_spec("playwright") is not None),
    )
    if not present
]
if _LACKS:
    pytest.skip(
        f"quarantined (tests/QUARANTINES.md): this machine lacks {' and '.join(_LACKS)}; "
        "`make browser` installs them (apt-get chromium, pip playwright)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def page_run(tmp_path_factory):
    """Open the synthetic run's report; yields (page, facts, problems seen while loading)."""
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("run")
    facts = write_synthetic_run(root)
    report = build_report(root)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.on(
            "request",
            lambda r: (
                r.url.startswith("data:")
                or r.url.startswith("file:")
                or problems.append(f"request: {r.url}")
            ),
        )
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        yield page, facts, problems
        browser.close()


def test_loads_without_errors_dialogs_or_requests(page_run):
    page, _, problems = page_run
    assert problems == []
    assert page.title().startswith("wildcircuits report")


def test_hostile_strings_are_visible_text(page_run):
    page, _, problems = page_run
    text = page.inner_text("body")
    assert HOSTILE_PROMPT in text
    assert HOSTILE_EVIDENCE in text
    assert page.locator("img[src='x']").count() == 0  # the injected <img> was not created
    assert problems == []


def test_graph_has_one_element_per_node(page_run):
    page, facts, _ = page_run
    nodes = page.locator("#circuit-graph .node")
    assert nodes.count() == facts["graph_nodes"]
    active = page.locator("#circuit-graph .node:not(.dim)")
    assert active.count() == facts["circuit_nodes"]  # the page opens at the selected circuit


def test_class_diagram_has_one_box_per_class_and_one_arrow_per_path(page_run):
    page, facts, problems = page_run
    explanation = facts["explanation"]
    diagram = page.locator("#explain #class-diagram")
    assert diagram.is_visible()
    boxes = diagram.locator(".class-box")
    assert boxes.count() == len(explanation.classes)
    assert boxes.all_inner_texts() and diagram.locator(".logits-box").count() == 1
    names = [boxes.nth(k).get_attribute("data-class") for k in range(boxes.count())]
    assert names == [c.name for c in explanation.classes]  # the hostile name arrives as text
    assert diagram.locator(".class-arrow").count() == len(explanation.paths)
    for k in range(boxes.count()):  # every box is drawn with a size, none collapsed
        box = boxes.nth(k).bounding_box()
        assert box is not None and box["width"] > 50 and box["height"] > 20
    assert page.locator("section").first.get_attribute("id") == "explain"
    assert problems == []


def test_verification_section_renders(page_run):
    page, facts, problems = page_run
    verification = facts["verification"]
    section = page.locator("#verify")
    assert section.is_visible()
    assert section.locator("h2").inner_text() == "Does the explanation hold?"
    rows = section.locator("#verify-claims tbody tr")
    assert rows.count() == len(verification.claims)
    for k, claim in enumerate(verification.claims):
        assert rows.nth(k).locator(".verdict").inner_text() == claim.status.value
    assert HOSTILE_CLAIM in rows.nth(1).inner_text()  # the injected script arrives as text
    points = section.locator("#completeness-scatter .ko-point")
    assert points.count() == len(verification.criteria.completeness)
    bars = section.locator("#scrub-bars .scrub-bar")
    assert bars.count() == len(verification.scrubbing.claims)
    for figure in ("#completeness-scatter", "#scrub-bars"):  # drawn with a size
        box = section.locator(figure).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100
    for k in range(points.count()):  # every marker is drawn inside the scatter
        box = points.nth(k).bounding_box()
        assert box is not None and box["width"] > 2
    assert page.locator("#headline").inner_text().endswith(verification.verdict)
    assert page.locator("script").count() == 2
    assert problems == []


def test_slider_changes_edges_shown(page_run):
    page, facts, problems = page_run
    count = page.locator("#edge-count")
    visible = "#circuit-graph .edge:not(.off)"
    sizes = facts["sizes"]
    start = count.inner_text()
    assert start.startswith(f"{sizes[1]['n_edges']:,} edges")
    assert page.locator(visible).count() == sizes[1]["n_edges"]
    page.locator("#size-slider").fill(str(len(sizes) - 1))
    after = count.inner_text()
    assert after != start and after.startswith(f"{sizes[-1]['n_edges']:,} edges")
    assert page.locator(visible).count() == sizes[-1]["n_edges"]
    page.locator("#size-slider").fill("0")
    assert page.locator(visible).count() == sizes[0]["n_edges"]
    page.locator("#size-slider").fill("1")
    assert problems == []


def test_hover_shows_scores(page_run):
    page, _, _ = page_run
    page.locator("#circuit-graph .edge:not(.off)").first.hover(force=True)
    tip = page.locator("#wc-tooltip")
    assert tip.is_visible() and "score" in tip.inner_text()


def test_screenshot_saved(page_run):
    page, _, _ = page_run
    ARTIFACTS.mkdir(exist_ok=True)
    page.mouse.move(0, 0)
    page.locator("#circuit").scroll_into_view_if_needed()
    shot = page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    page.locator("#verify").screenshot(path=str(ARTIFACTS / "report_verify.png"))
    assert len(shot) > 10_000
    pdf = page.pdf(path=str(ARTIFACTS / "report.pdf"))  # the print stylesheet renders
    assert pdf[:4] == b"%PDF"
