"""Atomic result files with provenance, and figures written as PNG + offline HTML."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from wildcircuits.errors import WildcircuitsError
from wildcircuits.evaluation.curves import ALL_FRACTIONS
from wildcircuits.report.figures import provenance_caption, save_bars, save_heatmap, save_lines
from wildcircuits.report.svg import Series, line_chart_svg, x_ticks
from wildcircuits.results import load_json, save_json

PROVENANCE = {"model": "tiny", "quantization": "none", "metric": "logit_diff", "seed": 0}


def test_save_json_is_atomic_and_requires_provenance(tmp_path):
    path = save_json(tmp_path / "r.json", {"provenance": PROVENANCE, "values": np.arange(3)})
    assert json.loads(path.read_text())["values"] == [0, 1, 2]
    assert not list(tmp_path.glob(".*tmp"))
    with pytest.raises(WildcircuitsError, match="lacks provenance"):
        save_json(tmp_path / "bad.json", {"values": [1]})
    with pytest.raises(WildcircuitsError, match=r"\['quantization'\]"):
        save_json(tmp_path / "bad.json", {"provenance": {"model": "m", "metric": "x"}})


def test_nan_becomes_null_and_corrupt_files_are_clear_errors(tmp_path):
    path = save_json(tmp_path / "r.json", {"provenance": PROVENANCE, "x": float("nan")})
    assert load_json(path)["x"] is None
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(WildcircuitsError, match="not valid JSON"):
        load_json(tmp_path / "broken.json")
    with pytest.raises(WildcircuitsError, match="does not exist"):
        load_json(tmp_path / "missing.json")


def test_figures_write_png_and_html_with_offline_plotly(tmp_path):
    png, html = save_heatmap(
        np.eye(3),
        ["L0", "L1", "L2"],
        ["H0", "H1", "H2"],
        tmp_path / "h",
        "title",
        "layer",
        "head",
        PROVENANCE,
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "L1" in html.read_text() and (tmp_path / "plotly.min.js").exists()
    png, _ = save_bars([1.0, -2.0], ["a", "b"], tmp_path / "b", "bars", "value", PROVENANCE)
    assert png.stat().st_size > 1000
    png, _ = save_lines([1, 2], {"x": [0.1, 0.2]}, tmp_path / "l", "lines", "k", "f", log_x=True)
    assert png.stat().st_size > 1000
    assert (
        provenance_caption(PROVENANCE) == "model=tiny; quantization=none; metric=logit_diff; seed=0"
    )


def test_log_axis_ticks_are_powers_of_ten_with_short_labels():
    """The report's faithfulness chart labelled every few log-spaced sizes as long decimals
    (0.000143845, ...) that overlapped; ticks are now the decades."""
    ticks = x_ticks(ALL_FRACTIONS, log_x=True)
    assert [label for _, label in ticks] == ["0.0001", "0.001", "0.01", "0.1", "1"]
    assert x_ticks([0.2, 0.5], log_x=True) == [(0.2, "0.2"), (0.5, "0.5")]
    assert len(x_ticks(list(range(1, 40)), log_x=False)) <= 8
    series = Series("m", ALL_FRACTIONS, [0.5] * len(ALL_FRACTIONS), "#000", "")
    svg = line_chart_svg([series], "x", "y")
    labels = re.findall(r'text-anchor="middle">([^<]*)</text>', svg)
    assert labels[:5] == ["0.0001", "0.001", "0.01", "0.1", "1"]
    assert all(len(label) <= 6 for label in labels[:5])
