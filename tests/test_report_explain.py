"""The report's "How the model does it" section: the class diagram, the class sentences and the
algorithm in words, from a synthetic explanation.json (no model)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from tests.report_fixtures import HOSTILE_CLASS, synthetic_explanation, write_synthetic_run
from tests.test_report import Elements
from wildcircuits.explanation.algorithm import ARROW_THRESHOLD, describe_algorithm
from wildcircuits.report.class_diagram import class_diagram_svg
from wildcircuits.report.explain_view import explanation_html, explanation_section
from wildcircuits.report.html import build_report
from wildcircuits.results.explain import ClassPath, HeadClass, Pair


@pytest.fixture(scope="module")
def explanation():
    return synthetic_explanation()


def test_diagram_has_one_box_per_class_and_one_arrow_per_path(explanation):
    svg = Elements(class_diagram_svg(explanation))
    boxes = svg.with_class("g", "class-box")
    assert [b["data-class"] for b in boxes] == [c.name for c in explanation.classes]
    arrows = svg.with_class("path", "class-arrow")
    assert len(arrows) == len(explanation.paths)
    drawn = sorted((a["data-sender"], a["data-receiver"], a["data-slot"]) for a in arrows)
    assert drawn == sorted((p.sender, p.receiver, p.slot) for p in explanation.paths)
    weak = [p for p in explanation.paths if abs(p.effect) < ARROW_THRESHOLD]
    assert len(svg.with_class("path", "weak")) == len(weak) == 2
    assert len(svg.with_class("g", "logits-box")) == 1


def test_layers_run_top_to_bottom(explanation):
    svg = class_diagram_svg(explanation)
    box = r'data-class="([^"]+)"><title>[^<]*</title><rect x="\d+" y="(\d+)"'
    tops = {name: int(y) for name, y in re.findall(box, svg)}
    assert tops["duplicate token"] < tops["S-inhibition"] < tops["name mover"]
    assert tops["S-inhibition"] == tops["&lt;b&gt;moves S2&lt;/b&gt; to END"]  # same layer


def test_arrows_that_pass_a_row_never_cross_a_box(explanation):
    svg = class_diagram_svg(explanation)
    rights = [int(x) + 210 for x in re.findall(r'<rect x="(\d+)" y="\d+" width="210"', svg)]
    passing = re.findall(
        r'd="M([\d.]+),[\d.]+ C([\d.]+),[\d.]+ ([\d.]+),[\d.]+ ([\d.]+),[\d.]+"[^>]*'
        r'data-sender="(duplicate token|&lt;b&gt;moves S2&lt;/b&gt; to END)" '
        r'data-receiver="(name mover|logits)"',
        svg,
    )
    lanes = {("duplicate token", "name mover"), ("&lt;b&gt;moves S2&lt;/b&gt; to END", "logits")}
    passing = [m for m in passing if m[4:] in lanes]
    assert len(passing) == 2  # L0 -> L2 and L1 -> logits pass a row
    for x1, c1, c2, x2, _, _ in passing:
        assert float(c1) == float(c2) > max(rights)
        assert round(float(x1)) in rights and round(float(x2)) in rights  # box side to side


def test_strings_are_escaped(explanation):
    page = explanation_section(explanation)
    assert HOSTILE_CLASS not in page and "<img" not in page
    assert "&lt;b&gt;moves S2&lt;/b&gt; to END" in page
    assert "<script" not in page and "<style" not in page


def test_algorithm_mentions_only_measured_arrows_above_the_threshold(explanation):
    sentences = describe_algorithm(explanation.classes, explanation.paths)
    strong = {f"{p.effect:+.2f}" for p in explanation.paths if abs(p.effect) >= ARROW_THRESHOLD}
    said = {n for s in sentences[:-1] for n in re.findall(r"[+-]\d\.\d\d", s)}
    assert said == strong
    assert sentences[0].startswith("Duplicate-token heads at S2 detect that S is repeated; ")
    assert "name movers at END copy the name S-inhibition did not suppress" in sentences[0]
    assert sentences[-1] == "Arrows with |path effect| below 0.05 are left out (2 of 8 measured)."


def test_the_chain_carrying_most_effect_beats_a_short_cut():
    early = HeadClass("early", None, (Pair("L1.H0", "S2"),), "")
    middle = HeadClass("middle", "S-inhibition", (Pair("L4.H0", "END"),), "")
    writer = HeadClass("writer", "name mover", (Pair("L8.H0", "END"),), "")
    paths = (
        ClassPath("early", "writer", "k", "END", 0.21),  # the strongest single arrow in
        ClassPath("early", "middle", "v", "END", 0.12),
        ClassPath("middle", "writer", "q", "END", 0.20),
        ClassPath("writer", "logits", "logits", "END", 1.6),
    )
    first = describe_algorithm((early, middle, writer), paths)[0]
    assert first.index("+0.12") < first.index("+0.20") < first.index("+1.60")
    assert "+0.21" not in first


def test_no_arrow_no_invented_link():
    classes = synthetic_explanation().classes
    sentences = describe_algorithm(classes, ())
    assert len(sentences) == len(classes) + 1  # no chain without a measured writer
    assert all("no arrow above the threshold" in s for s in sentences[:-1])
    assert "move that to" not in " ".join(sentences)
    weak = (ClassPath("duplicate token", "S-inhibition", "k", "END", 0.049),)
    assert describe_algorithm(classes, weak) == sentences[:-1] + (
        "Arrows with |path effect| below 0.05 are left out (1 of 1 measured).",
    )


def test_descriptive_classes_get_a_generic_sentence():
    writer = HeadClass("writes the answer at END", None, (Pair("L5.H1", "END"),), "direct 0.4")
    reader = HeadClass("moves S2 to END q", None, (Pair("L3.H0", "S2"),), "attends S2")
    paths = (
        ClassPath(reader.name, writer.name, "q", "END", 0.2),
        ClassPath(writer.name, "logits", "logits", "END", 0.5),
    )
    first, *rest = describe_algorithm((writer, reader), paths)
    assert first == (
        "“moves S2 to END q” at S2; “writes the answer at END” at END read “moves S2 to END q” "
        "(path effect +0.20 into their queries); “writes the answer at END” write the answer "
        "(path effect +0.50 into the logits)."
    )
    assert rest[0].startswith("“moves S2 to END q” (L3.H0) at S2; they feed the queries of")


def test_report_puts_the_section_first(tmp_path):
    write_synthetic_run(tmp_path)
    page = build_report(tmp_path).read_text()
    assert page.index('id="explain"') < page.index('id="task"') < page.index('id="circuit"')
    assert page.index('href="#explain"') < page.index('href="#task"')
    assert "How the model does it" in page and 'id="class-diagram"' in page
    assert 'id="circuit-graph"' in page  # the edge graph stays, as the detail view


def test_report_without_explanation_has_no_section(tmp_path):
    write_synthetic_run(tmp_path, explanation=False)
    page = build_report(tmp_path).read_text()
    assert 'id="explain"' not in page and "How the model does it" not in page


def test_unreadable_explanation_says_so(tmp_path):
    write_synthetic_run(tmp_path)
    (tmp_path / "explanation.json").write_text('{"schema": "1", "classes": 3}')
    page = build_report(tmp_path).read_text()
    assert "Could not be read: explanation.json" in page and 'id="class-diagram"' not in page


def test_notebook_fragment_has_no_script_and_draws_the_diagram(explanation):
    fragment = explanation._repr_html_()
    assert fragment == explanation_html(explanation)
    assert "<script" not in fragment and 'id="class-diagram"' in fragment


def test_no_classes_draws_a_note(explanation):
    empty = replace(explanation, classes=(), paths=())
    assert "No functional classes" in class_diagram_svg(empty)
    assert describe_algorithm((), ()) == (
        "No functional classes were found, so there is no algorithm to state.",
    )
