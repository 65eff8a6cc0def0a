"""The report's section "Does the explanation hold?", from a hand-made verification.json (no
model): one row per claim, the completeness scatter, the scrubbing bars, escaping, offline."""

from __future__ import annotations

import html
import math
import re
from dataclasses import replace

import pytest

from tests.report_fixtures import HOSTILE_EVIDENCE, write_synthetic_run
from tests.test_report import Elements
from tests.verify_fixtures import HOSTILE_CLAIM, VERDICT, synthetic_verification
from wildcircuits.report.html import build_report
from wildcircuits.report.run_folder import read_run
from wildcircuits.report.verify_figures import (
    completeness_svg,
    estimate_text,
    nice_ticks,
    scrub_bars_svg,
)
from wildcircuits.report.verify_view import verification_section
from wildcircuits.results.verify import Estimate, Interval, KnockoutPoint, ScrubClaim, Verification


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    facts = write_synthetic_run(root)
    page = build_report(root).read_text(encoding="utf-8")
    return root, facts["verification"], page, Elements(page)


def _section(page: str) -> str:
    start = page.index('<section id="verify"')
    return page[start : page.index("</section>", start)]


def _claim_rows(section: str) -> list[str]:
    block = section[section.index('<div id="verify-claims">') :]
    body = block[block.index("<tbody>") : block.index("</tbody>")]
    return re.findall(r"<tr>(.*?)</tr>", body)


def test_estimate_text_formats_value_and_interval():
    interval = Interval(0.714, 0.9249, 0.95, 1000)
    assert estimate_text(Estimate(0.8312, interval)) == "0.83 [0.71, 0.92]"
    assert estimate_text(Estimate(0.6)) == "0.60"
    assert estimate_text(None) == "n/a"
    assert estimate_text(Estimate(float("nan"), interval)) == "n/a [0.71, 0.92]"
    assert estimate_text(Estimate(12345.0)) == "12,345"  # the report's `fmt` underneath


def test_fixture_is_the_real_format(built):
    root, verification, _, _ = built
    assert Verification.load(root / "verification.json") == verification
    assert read_run(root).result("verification.json") == verification


def test_section_has_one_row_per_claim_in_order(built):
    _, verification, page, _ = built
    rows = _claim_rows(_section(page))
    assert len(rows) == len(verification.claims) == 5
    for row, claim in zip(rows, verification.claims, strict=True):
        assert html.escape(claim.claim) in row
        assert f'class="verdict verdict-{claim.status.value}"' in row
        assert f">{claim.status.value}</span>" in row
        assert html.escape(claim.test) in row and html.escape(claim.reason) in row
        assert f'<td class="num">{estimate_text(claim.value)}</td>' in row
    assert '<td class="num">0.95 [0.90, 1.02]</td>' in rows[0]
    assert '<td class="num">n/a</td>' in rows[3]  # the claim that could not be scrubbed


def test_section_order_and_contents(built):
    _, verification, page, _ = built
    assert page.index('id="explain"') < page.index('id="verify"') < page.index('id="task"')
    assert page.index('href="#explain"') < page.index('href="#verify"') < page.index('href="#task"')
    section = _section(page)
    assert "<h2>Does the explanation hold?</h2>" in section
    assert html.escape(VERDICT) in section
    for text in (
        "ablation mean:template; metric logit_diff; split test; prompts 64; seed 0; "
        "model tiny-test-model",
        "<th>value [95% interval]</th>",  # the level read from the intervals
        "0.84 [0.71, 0.92]",  # relative faithfulness
        "greedy K: 1.20 [1.10, 1.30]",  # the worst completeness
        "flagged members (2 of 6)",
        "&lt; 0.001",  # the independence test's p-value
        "paired permutation of prompts, 1000 draws",
        "Does it hold on held-out templates?",
        html.escape(HOSTILE_EVIDENCE),
        "supported_loss_recovered = 0.800; falsified_loss_recovered = 0.500",
    ):
        assert text in section, text
    assert section.count("supported_loss_recovered") == 1  # the thresholds stated once
    tests = re.findall(r'<span class="verdict verdict-(pass|fail)"', section)
    assert tests.count("fail") == 1 + 2  # the failed test, the two flagged members


def test_scatter_has_one_point_per_knockout_point(built):
    _, verification, page, _ = built
    points = verification.criteria.completeness
    svg = Elements(completeness_svg(points, verification.criteria.worst))
    drawn = svg.with_class("g", "ko-point")
    assert [g["data-kind"] for g in drawn] == [p.kind for p in points]
    assert {p.kind for p in points} == {"empty", "class", "random", "greedy"}
    assert len(svg.with_class("line", "ko-diagonal")) == 1
    on_page = Elements(_section(page)).with_class("g", "ko-point")
    assert len(on_page) == len(points) == 9
    greedy = completeness_svg(points[-1:])
    for member in points[-1].knocked_out:  # the tooltip names K
        assert member.name in re.search(r"<title>(.*?)</title>", greedy, re.S).group(1)


def _point(label: str, f_circuit: float, f_model: float) -> KnockoutPoint:
    return KnockoutPoint(label, "class", (), Estimate(f_circuit), Estimate(f_model), Estimate(0.0))


def test_scatter_geometry_puts_equal_points_on_the_diagonal():
    points = [_point("a", 1.0, 1.0), _point("b", 2.0, 2.0), _point("c", 0.5, 2.0)]
    svg = completeness_svg(points)
    line = Elements(svg).with_class("line", "ko-diagonal")[0]
    x1, y1, x2, y2 = (float(line[k]) for k in ("x1", "y1", "x2", "y2"))
    markers = re.findall(r'<g class="ko-point".*?<circle cx="([\d.]+)" cy="([\d.]+)"', svg, re.S)
    centres = [(float(cx), float(cy)) for cx, cy in markers]
    assert len(centres) == 3
    for cx, cy in centres[:2]:  # F(C \ K) == F(M \ K): on y = x (within half a pixel)
        cross = (x2 - x1) * (cy - y1) - (y2 - y1) * (cx - x1)
        assert abs(cross) / math.hypot(x2 - x1, y2 - y1) < 0.5
    (ax, ay), (bx, by), (cx, cy) = centres
    assert bx > ax and by < ay  # larger values: right and up
    assert cx == pytest.approx(bx, abs=0.11) and cy > ay  # same F(M \ K), lower F(C \ K)


def test_scatter_leaves_out_points_without_a_value():
    points = [_point("a", 1.0, 1.0), _point("nan", float("nan"), 1.0)]
    svg = completeness_svg(points)
    assert len(Elements(svg).with_class("g", "ko-point")) == 1
    assert "1 points have no finite value and are not drawn." in svg


def test_one_scrub_bar_per_claim_with_widths_in_proportion(built):
    _, verification, page, _ = built
    scrubbing = verification.scrubbing
    svg = scrub_bars_svg(scrubbing)
    elements = Elements(svg)
    rows = elements.with_class("g", "scrub-bar")
    assert len(rows) == len(scrubbing.claims) == 5
    assert len(Elements(_section(page)).with_class("g", "scrub-bar")) == 5
    assert [r["data-scrubbable"] for r in rows] == ["true"] * 4 + ["false"]
    assert "not scrubbable: position other is not named by the task" in svg
    zero, one = (float(a["x1"]) for t, a in elements.tags if a.get("class") == "ref")
    bars = [(float(a["x"]), float(a["width"])) for a in elements.with_class("rect", "bar")]
    assert len(bars) == 4  # the unscrubbable claim has a row and no bar
    for (x, width), claim in zip(bars, scrubbing.claims, strict=False):
        value = claim.loss_recovered.value
        assert width == pytest.approx(abs(value) * (one - zero), abs=0.2)
        assert x == pytest.approx(zero if value >= 0 else zero - width, abs=0.2)
    assert len(elements.with_class("path", "whisker")) == 3  # one claim has no interval
    assert "0.78 [0.66, 0.88] (n = 60)" in svg


def test_a_claim_without_a_number_gets_its_reason_not_a_bar():
    scrubbing = synthetic_verification().scrubbing
    claims = (
        ScrubClaim("class a", "class", None, None, 0, "no row has a valid resample"),
        ScrubClaim("class b", "class", Estimate(float("nan")), None, 0),
        scrubbing.claims[0],
    )
    svg = scrub_bars_svg(replace(scrubbing, claims=claims))
    rows = Elements(svg).with_class("g", "scrub-bar")
    assert [r["data-scrubbable"] for r in rows] == ["false", "false", "true"]
    assert "not scrubbable: no row has a valid resample</text>" in svg
    assert "not scrubbable</text>" in svg and len(Elements(svg).with_class("rect", "bar")) == 1


def test_malicious_claim_is_escaped_text(built):
    _, _, page, elements = built
    assert HOSTILE_CLAIM not in page and 'alert("claim")</script>' not in page
    assert html.escape(HOSTILE_CLAIM) in _claim_rows(_section(page))[1]
    assert f'data-claim="{html.escape(HOSTILE_CLAIM)}"' in page  # the scrub bar's attribute
    assert len(elements.scripts) == 2  # the data block and the page script, nothing injected


def test_no_external_urls(built):
    _, _, page, elements = built
    section = _section(page)
    assert not re.search(r"https?://|url\(|<link|<img|<script", section)
    for _, attrs in Elements(section).tags:
        assert not {"src", "href"} & set(attrs) or attrs.get("href", "").startswith("#")
    assert not re.search(r"https?://", page)


def test_opening_sentence_states_the_verdict(built):
    _, verification, page, elements = built
    headline = page.index('<p class="headline" id="headline">')
    assert page.index("</h1>") < headline < page.index("<nav") < page.index("<section")
    text = page[headline : page.index("</p>", headline)]
    assert html.escape(verification.verdict) in text
    assert text.endswith(f"<b>Does the explanation hold? {html.escape(VERDICT)}</b>")


def test_section_absent_without_verification_json(tmp_path):
    write_synthetic_run(tmp_path, verification=False)
    page = build_report(tmp_path).read_text()
    assert 'id="verify"' not in page and "Does the explanation hold?" not in page
    assert 'id="headline"' not in page and 'href="#verify"' not in page
    assert 'id="explain"' in page  # the rest of the report is unchanged


def test_unreadable_verification_says_so(tmp_path):
    write_synthetic_run(tmp_path)
    (tmp_path / "verification.json").write_text('{"schema_version": 1, "claims": 3}')
    page = build_report(tmp_path).read_text()
    assert "Could not be read: verification.json" in _section(page)
    assert 'id="headline"' not in page and "ko-point" not in page


def test_missing_parts_give_notes():
    v = synthetic_verification()
    body = verification_section(replace(v, scrubbing=None, checks=(), tests=(), claims=()))
    for note in (
        "Causal scrubbing was not run.",
        "No red-team check was run.",
        "No statistical test was run.",
        "The hypothesis states no claim.",
    ):
        assert note in body
    assert "scrub-bar" not in body and body.count('class="ko-point"') == 9


@pytest.mark.parametrize(("lo", "hi"), [(0.08, 2.72), (-0.3, 1.05), (0.0, 1.0), (99.5, 100.1)])
def test_nice_ticks_are_round_and_inside(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert 3 <= len(ticks) <= 6 and ticks == sorted(ticks)
    assert all(lo - 1e-9 <= t <= hi + 1e-9 for t in ticks)
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, k) for k in (1, 2, 2.5, 5))
    assert all(math.isclose(b - a, step) for a, b in zip(ticks, ticks[1:], strict=False))
