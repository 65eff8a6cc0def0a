"""report.html from a synthetic run folder: self-contained, escaped, complete, robust to gaps."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser

import pytest

from tests.report_fixtures import (
    HOSTILE_EVIDENCE,
    HOSTILE_PROMPT,
    HOSTILE_TOKEN,
    SELECTED,
    write_synthetic_run,
)
from wildcircuits.cli.main import main
from wildcircuits.report import graph_view
from wildcircuits.report.html import SECTIONS, build_report, script_json
from wildcircuits.report.run_folder import OPTIONAL, RunFolderError


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside each <script>."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data

    def with_class(self, tag: str, name: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and name in a.get("class", "").split()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    facts = write_synthetic_run(root)
    page = build_report(root).read_text(encoding="utf-8")
    return root, facts, page, Elements(page)


def test_self_contained(built):
    _, _, page, elements = built
    for tag, attrs in elements.tags:
        for key in ("src", "href"):
            if key in attrs:
                assert attrs[key].startswith(("data:", "#")), (tag, attrs[key][:60])
    assert not re.search(r"https?://", page)
    assert "<link" not in page and "@import" not in page
    assert sum(t == "img" for t, _ in elements.tags) >= 2  # behaviour + pattern figure inlined


def test_every_section_present(built):
    _, _, page, elements = built
    ids = {a.get("id") for t, a in elements.tags if t == "section"}
    assert ids == {key for key, _ in SECTIONS}
    for heading in (
        "Direct logit attribution by head",
        "Activation patching: layer x position",
        "Attention patterns of key heads",
        "Smallest 80%-faithful circuit",
        "Held-out split",
        "Ablation-type sensitivity",
    ):
        assert heading in page
    assert "not computed" not in page.lower()
    assert "tiny-test-model" in page and "none (synthetic)" in page  # model + quantization


def test_hostile_strings_are_escaped_text(built):
    _, _, page, elements = built
    assert html.escape(HOSTILE_PROMPT) in page
    assert html.escape(HOSTILE_EVIDENCE) in page
    assert html.escape(HOSTILE_TOKEN)[:40] in page  # token label (shortened in the heatmap)
    for raw in (HOSTILE_PROMPT, HOSTILE_EVIDENCE, "alert('token')</script>", "<b>not bold</b>"):
        assert raw not in page
    assert len(elements.scripts) == 2  # the data block and the page script, nothing injected
    assert not any(t == "img" and a.get("src") == "x" for t, a in elements.tags)


def test_script_json_cannot_close_the_script():
    value = {"a": "</script><!-- & \u2028", "b": [1.5, None]}
    text = script_json(value)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == value


def test_graph_nodes_and_edges_match_the_circuit(built):
    _, facts, page, elements = built
    nodes = elements.with_class("g", "node")
    assert len(nodes) == facts["graph_nodes"]
    assert sum("dim" not in n["class"] for n in nodes) == facts["circuit_nodes"]
    edges = elements.with_class("path", "edge")
    for index, size in enumerate(facts["sizes"]):
        members = [e for e in edges if str(index) in e["data-sizes"].split()]
        names = {f"{e['data-src']}|{e['data-dst']}" for e in members}
        assert len(members) == size["n_edges"], index
        assert names <= {
            f"{n.split('->')[0]}|{n.split('->')[1].split('<')[0]}" for n in size["edges"]
        }
    shown = [e for e in edges if "off" not in e["class"]]
    assert len(shown) == facts["sizes"][SELECTED]["n_edges"]
    data = json.loads(elements.scripts[0])
    assert data["graph"]["selected"] == SELECTED
    assert [s["n_edges"] for s in data["graph"]["sizes"]] == [s["n_edges"] for s in facts["sizes"]]
    slider = [a for t, a in elements.tags if a.get("id") == "size-slider"]
    assert slider and slider[0]["max"] == str(len(facts["sizes"]) - 1)


def test_missing_optional_files_say_not_computed(tmp_path):
    write_synthetic_run(tmp_path)
    for name in OPTIONAL:
        (tmp_path / name).unlink()
    (tmp_path / "behaviour.png").unlink()
    page = build_report(tmp_path).read_text()
    for name in (
        "behaviour.json",
        "localise.json",
        "circuit.json",
        "metrics.json",
        "redteam.json",
        "roles.json",
    ):
        assert f"Not computed ({name} is not in the run folder)" in page
    assert 'id="circuit-graph"' not in page


def test_unreadable_optional_file_is_reported(tmp_path):
    write_synthetic_run(tmp_path)
    (tmp_path / "metrics.json").write_text("{ not json")
    page = build_report(tmp_path).read_text()
    assert "Could not be read: metrics.json" in page
    assert "Does a random circuit" in page  # the other sections still render


@pytest.mark.parametrize("name", ["config.json", "manifest.json"])
def test_missing_required_file_is_named(tmp_path, name):
    write_synthetic_run(tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(RunFolderError, match=re.escape(name)):
        build_report(tmp_path)
    (tmp_path / name).write_text("[1, 2")
    with pytest.raises(RunFolderError, match="not valid JSON"):
        build_report(tmp_path)


def test_scores_fall_back_to_scores_pt(tmp_path):
    facts = write_synthetic_run(tmp_path)
    circuit = json.loads((tmp_path / "circuit.json").read_text())
    edge = facts["sizes"][0]["edges"][0]
    expected = circuit["edges"][edge]["score"]
    for entry in circuit["edges"].values():
        del entry["score"]
    (tmp_path / "circuit.json").write_text(json.dumps(circuit))
    page = build_report(tmp_path).read_text()
    assert f"edge {html.escape(edge)}&#10;score {expected:.4f}" in page.replace("\n", "&#10;")


def test_size_cap_is_stated(tmp_path, monkeypatch):
    facts = write_synthetic_run(tmp_path)
    monkeypatch.setattr(graph_view, "MAX_DRAWN_EDGES", 3)
    page = build_report(tmp_path).read_text()
    edges = Elements(page).with_class("path", "edge")
    assert all(
        sum(str(i) in e["data-sizes"].split() for e in edges) <= 3
        for i in range(len(facts["sizes"]))
    )
    assert "the top 3 by |score| drawn" in page


def test_stop_reason_and_role_fallback(tmp_path):
    write_synthetic_run(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["stopped"] = {"step": "behaviour", "reason": "accuracy 0.2 < 0.6 <threshold>"}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "roles.json").unlink()
    page = build_report(tmp_path).read_text()
    assert "The run stopped at step behaviour: accuracy 0.2 &lt; 0.6 &lt;threshold&gt;" in page
    assert "name mover" in page  # legend from localise.json's head-role labels


def test_cli_report(tmp_path, capsys):
    write_synthetic_run(tmp_path)
    out = tmp_path / "elsewhere.html"
    assert main(["report", str(tmp_path), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000 and str(out) in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
