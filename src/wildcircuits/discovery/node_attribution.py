"""Node-level attribution patching: one score per sender node (input, heads, MLPs).

score(u) = sum over batch, pos, d_model of (a_u - z_u(clean)) * dL/dz_u on the clean run: the
first-order estimate of replacing u's whole output (every outgoing edge) by its ablation value a_u
(counterfactual: its corrupted value; or a mean, or zero, as in EAP). Since z_u reaches the loss
only through its downstream receivers, dL/dz_u = sum over receivers v of dL/dx_v, so score(u)
is exactly the sum of u's outgoing EAP edge scores; this is how it is computed (same cost as
EAP). Sign convention of `discovery.common` (positive = ablating u hurts the metric).

As `EdgeScores` (registered as "node-attribution"), every edge u -> v gets its sender's score,
so the edge circuit builders (top-k, threshold, greedy) select whole nodes' fan-outs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from wildcircuits.discovery.common import (
    SIGN_CONVENTION,
    AblatingConfig,
    edge_scores,
    provenance_of,
    settings_of,
)
from wildcircuits.discovery.eap import eap_matrix
from wildcircuits.discovery.registry import register
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.graph.graph import Graph
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.names import Node
from wildcircuits.patching.ablation_spec import EDGE_ABLATIONS, AblationSpec
from wildcircuits.patching.edge_ablation import AblationCache
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem


@dataclass(frozen=True)
class NodeAttributionConfig(AblatingConfig):
    """batch_size: rows per chunk; progress: a progress bar on stderr; ablation: counterfactual
    (default), mean or zero."""

    METHOD = "node-attribution"
    ABLATIONS = EDGE_ABLATIONS

    batch_size: int = 16
    progress: bool = False


@dataclass(frozen=True)
class NodeScores:
    """scores: (sender,) one value per `graph.senders` node; settings / provenance as EdgeScores."""

    graph: Graph
    scores: Tensor
    method: str = "node-attribution"
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def of(self, node: Node | str) -> float:
        from wildcircuits.names import parse_node

        node = parse_node(node) if isinstance(node, str) else node
        return float(self.scores[self.graph.sender_index[node]])

    def top(self, k: int = 20, by_abs: bool = True) -> list[tuple[str, float]]:
        order = (self.scores.abs() if by_abs else self.scores).argsort(descending=True)[:k]
        return [(self.graph.senders[i].name, float(self.scores[i])) for i in order.tolist()]


def node_scores(
    model: InstrumentedModel, problem: PatchingProblem, config: NodeAttributionConfig
) -> NodeScores:
    """Attribution-patching score of every sender node: (sender,)."""
    engine = EdgeForward(model)
    cache = AblationCache(engine, problem, config.ablation, config.batch_size)
    matrix = eap_matrix(cache, problem, config.batch_size, config.progress)
    valid = engine.graph.valid.to(matrix.device)
    per_node = torch.where(valid, matrix, 0.0).sum(dim=0)  # (sender,)
    extra = {"gradient_at": "clean", "sign": SIGN_CONVENTION}
    settings = settings_of(config, extra)
    provenance = provenance_of(problem, "node-attribution", settings, cache.spec)
    scores = per_node.detach().float().cpu()
    return NodeScores(engine.graph, scores, "node-attribution", settings, provenance)


@register("node-attribution", NodeAttributionConfig, "attribution patching of whole nodes")
def node_attribution(
    model: InstrumentedModel, problem: PatchingProblem, config: NodeAttributionConfig
) -> EdgeScores:
    """Edge scores in which every edge u -> v carries node u's score."""
    nodes = node_scores(model, problem, config)
    graph = nodes.graph
    matrix = nodes.scores[None, :].expand(graph.n_receivers, -1).clone()  # (receiver, sender)
    extra = {"gradient_at": "clean", "sign": SIGN_CONVENTION, "edge_score": "sender node's score"}
    ablation = AblationSpec.parse(nodes.provenance["ablation"])  # what `node_scores` ran
    return edge_scores(graph, matrix, "node-attribution", config, problem, extra, ablation=ablation)
