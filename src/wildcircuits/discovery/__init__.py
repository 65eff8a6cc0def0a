"""Automated circuit discovery: every method is `method(model, problem, config) -> EdgeScores`.

from wildcircuits.discovery import get_method
spec = get_method("eap-ig-inputs")
scores = spec(model, problem, spec.config({"steps": 5}))

Methods: "eap", "eap-ig-inputs", "eap-ig-activations", "random", "node-attribution" (and any
other module that registers itself, e.g. "acdc"). Sign convention: scores estimate
L(edge corrupted) - L(clean) with L = -metric for higher-is-better metrics (positive = important).
"""

from __future__ import annotations

from wildcircuits.discovery.eap import EAPConfig, eap
from wildcircuits.discovery.eap_ig import EAPIGConfig, Riemann, eap_ig_inputs
from wildcircuits.discovery.eap_ig_activations import EAPIGActivationsConfig, eap_ig_activations
from wildcircuits.discovery.node_attribution import (
    NodeAttributionConfig,
    NodeScores,
    node_attribution,
    node_scores,
)
from wildcircuits.discovery.random_scores import RandomScoresConfig, random_scores
from wildcircuits.discovery.registry import (
    METHODS,
    DiscoveryError,
    MethodSpec,
    get_method,
    method_names,
    register,
)

__all__ = [
    "METHODS",
    "DiscoveryError",
    "EAPConfig",
    "EAPIGActivationsConfig",
    "EAPIGConfig",
    "MethodSpec",
    "NodeAttributionConfig",
    "NodeScores",
    "RandomScoresConfig",
    "Riemann",
    "eap",
    "eap_ig_activations",
    "eap_ig_inputs",
    "get_method",
    "method_names",
    "node_attribution",
    "node_scores",
    "random_scores",
    "register",
]
