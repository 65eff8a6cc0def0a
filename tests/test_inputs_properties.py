"""Property: any generated input gives success or a `WildcircuitsError`, never another error."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.tiny_models import tiny_model
from wildcircuits import inputs
from wildcircuits.discovery.registry import get_method
from wildcircuits.errors import WildcircuitsError

FAST = settings(derandomize=True, max_examples=60, deadline=None)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
KEYS = st.sampled_from(["steps", "riemann", "batch_size", "progress", "ablation", "x"])


def _ok_or_ours(call, *args):
    try:
        call(*args)
    except WildcircuitsError as error:
        assert "\n" not in str(error)


@FAST
@given(st.dictionaries(KEYS, JSON, max_size=3) | JSON)
def test_settings(settings_value):
    _ok_or_ours(get_method("eap-ig-inputs").config, settings_value)
    _ok_or_ours(get_method("acdc").config, settings_value)


@FAST
@given(st.text(max_size=12) | st.from_regex(r"L-?\d{1,3}\.H-?\d{1,3}", fullmatch=True))
def test_head_names(text):
    _ok_or_ours(inputs.check_heads, "--heads", text, tiny_model("llama"))


@FAST
@given(st.integers(-(2**70), 2**70) | st.booleans() | st.floats() | st.none(), st.integers(1, 50))
def test_sizes_seeds_positions(value, length):
    for check in (inputs.check_size, inputs.check_n, inputs.check_seed):
        _ok_or_ours(check, "--x", value)
    _ok_or_ours(inputs.check_position, "--position", value, length)


@FAST
@given(st.text(max_size=10) | st.sampled_from(["cpu", "cuda", "cuda:7", "mps", "meta", "cpu:0"]))
def test_devices(text):
    _ok_or_ours(inputs.check_device, text)


@FAST
@given(st.text(max_size=12) | st.from_regex(r"(z|q|mlp_out|resid_pre)\.\d{1,2}", fullmatch=True))
def test_sites(text):
    model = tiny_model("llama")
    _ok_or_ours(inputs.check_sites, model, [text], 6)


@FAST
@given(JSON)
def test_discover_settings_through_the_cli(value):
    from wildcircuits.cli.main import main

    status = main(
        ["discover", "ioi", "--out", "/dev/null/x", "--method-settings", json.dumps(value)]
    )
    assert status == 2
