"""Every discovery method x every ablation: the saved provenance says what ran; the registry
raises on a method module that does not import.

The provenance bug this guards against: every `EdgeScores` used to record "counterfactual
(corrupted run)" whatever ablated, so an ACDC run with mean ablation recorded the wrong one.
"""

from __future__ import annotations

import pytest
import torch

from tests.discovery_fixtures import tiny_problem
from tests.tiny_models import tiny_model
from wildcircuits.discovery import get_method, method_names
from wildcircuits.discovery.registry import DiscoveryError, load_builtin_methods
from wildcircuits.errors import WildcircuitsError
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.patching.ablation_spec import AblationKind, AblationSpec

#: Small settings so that every method runs in a second or two on the tiny model.
FAST = {
    "eap-ig-inputs": {"steps": 2},
    "eap-ig-activations": {"steps": 1},
    "acdc": {"threshold": 1e-3, "progress": False},
}
SPECS = ["counterfactual", "mean", "mean:clean:pooled", "zero", "resample:seed=1"]
CASES = [(method, text) for method in method_names() for text in SPECS]


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("llama")
    return model, tiny_problem(model), {}


def _run(setup, method: str, text: str) -> EdgeScores:
    model, problem, done = setup
    if (method, text) not in done:
        spec = get_method(method)
        done[method, text] = spec(model, problem, spec.config({**FAST.get(method, {}),
                                                              "ablation": text}))  # fmt: skip
    return done[method, text]


@pytest.mark.parametrize(("method", "text"), CASES)
def test_the_saved_provenance_names_the_ablation_that_ran(setup, method, text, tmp_path):
    spec, ablation = get_method(method), AblationSpec.parse(text)
    if ablation.kind not in spec.ablations:
        choices = ", ".join(k.value for k in spec.ablations) or "none"
        with pytest.raises(WildcircuitsError, match=f"{text}.*its ablations: {choices}"):
            spec.config({"ablation": text})
        return
    scores = _run(setup, method, text)
    loaded = EdgeScores.load(scores.save(tmp_path / "scores.pt"))
    described = ablation.describe()
    assert {k: loaded.provenance[k] for k in described} == described
    assert loaded.settings["ablation"] == ablation.format()
    if ablation.kind is not AblationKind.COUNTERFACTUAL:  # the setting reached the computation
        assert not torch.equal(scores.scores, _run(setup, method, "counterfactual").scores)


def test_every_method_either_ablates_or_says_it_does_not(setup):
    for method in method_names():
        spec = get_method(method)
        if spec.ablations:
            assert AblationKind.COUNTERFACTUAL in spec.ablations
            assert _run(setup, method, "counterfactual").provenance["ablation"] == "counterfactual"
        else:  # e.g. random scores: no forward pass, nothing ablated
            model, problem, _ = setup
            assert spec(model, problem).provenance["ablation"] == "none"


def test_a_config_built_directly_rejects_an_unsupported_ablation():
    from wildcircuits.discovery import EAPIGConfig
    from wildcircuits.discovery.acdc import AcdcConfig

    with pytest.raises(WildcircuitsError, match="'eap-ig-inputs'.*'mean'.*: counterfactual$"):
        EAPIGConfig(ablation="mean")
    with pytest.raises(WildcircuitsError, match="'acdc'.*'resample'.*counterfactual, mean, zero"):
        AcdcConfig(ablation="resample")
    assert AcdcConfig(ablation="mean:clean").ablation == AblationSpec.parse("mean:clean")


def test_a_method_module_that_fails_to_import_raises_naming_it(monkeypatch):
    import importlib

    from wildcircuits.discovery import registry

    real = importlib.import_module

    def broken(name, *args):
        if name == "wildcircuits.discovery.acdc":
            raise ImportError("No module named 'tqdm'")
        return real(name, *args)

    monkeypatch.setattr(registry.importlib, "import_module", broken)
    with pytest.raises(DiscoveryError, match=r"wildcircuits\.discovery\.acdc failed to import: "
                       "ImportError: No module named 'tqdm'"):  # fmt: skip
        load_builtin_methods()
    with pytest.raises(DiscoveryError, match="acdc failed to import"):
        get_method("eap")


def test_a_missing_builtin_module_raises_naming_it(monkeypatch):
    from wildcircuits.discovery import registry

    monkeypatch.setattr(registry, "BUILTIN_MODULES", (*registry.BUILTIN_MODULES, "nowhere"))
    with pytest.raises(DiscoveryError, match=r"wildcircuits\.discovery\.nowhere failed to import"):
        method_names()
