"""EAP with integrated gradients on activations (EAP-IG-activations).

The senders are split into 2L + 1 layer groups: the input; each layer's attention heads; each
layer's MLP. For group g and step k the clean run is repeated with g's outputs replaced by
    z_g(k) = a_g + alpha_k * (z_g(clean) - a_g)
(`EdgeForward` override; every other node computes normally), and the gradient of the loss is
read at every receiver downstream of g. a_g is the ablation value (`config.ablation`): the
corrupted run's outputs (counterfactual, the default), their mean, or zero. For u in g:
    s(u -> v) = sum over batch, pos, d_model of (a_u - z_u(clean)) * mean_k dL/dx_v(k).
alpha_k follows the same pinned Riemann sum as EAP-IG-inputs (`eap_ig.Riemann`, LEFT default:
k = 0 .. m-1). The input group's scores equal EAP-IG-inputs' input column exactly; with
RIGHT and m = 1 every group is the clean run and the method is plain EAP.

Cost: 2 forwards + m (2L + 1) (forward + backward) per chunk of rows; 61 m forward-backwards
for SmolLM2-135M (L = 30), 37 m for Gemma3-270M (L = 18). Each group's passes resume at its own
layer from the clean run (everything before it is the clean run for every alpha), which halves
the work on average. Expensive all the same: use a small n and m.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from wildcircuits.discovery.common import (
    SIGN_CONVENTION,
    AblatingConfig,
    chunks,
    contract,
    edge_scores,
    loss_objective,
    masked_diff,
)
from wildcircuits.discovery.eap_ig import Riemann, alphas
from wildcircuits.discovery.registry import register
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.graph.graph import Graph
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.ablation_spec import EDGE_ABLATIONS
from wildcircuits.patching.edge_ablation import AblationCache
from wildcircuits.patching.edges import EdgeForward, Resume
from wildcircuits.patching.problem import PatchingProblem


@dataclass(frozen=True)
class EAPIGActivationsConfig(AblatingConfig):
    """steps: m per group; riemann: left (k = 0..m-1) or right (k = 1..m); batch_size: rows per
    chunk; progress: a progress bar on stderr; ablation: counterfactual (default), mean or zero."""

    METHOD = "eap-ig-activations"
    ABLATIONS = EDGE_ABLATIONS

    steps: int = 5
    riemann: Riemann = Riemann.LEFT
    batch_size: int = 16
    progress: bool = False


def sender_groups(graph: Graph) -> list[list[int]]:
    """The 2L + 1 groups of sender columns: [input], then per layer [heads], [mlp]."""
    groups = [[0]]
    for layer in range(graph.n_layers):
        heads = graph.head_senders(layer)
        groups.append(list(range(heads.start, heads.stop)))
        groups.append([graph.mlp_sender(layer)])
    return groups


@register(
    "eap-ig-activations",
    EAPIGActivationsConfig,
    "EAP with integrated gradients on each layer group's outputs (m (2L+1) backward passes)",
)
def eap_ig_activations(
    model: InstrumentedModel, problem: PatchingProblem, config: EAPIGActivationsConfig
) -> EdgeScores:
    """EAP-IG (activations) scores of every edge: (receiver, sender)."""
    engine = EdgeForward(model)
    graph = engine.graph
    weights = alphas(config.steps, config.riemann)
    scores = torch.zeros(graph.n_receivers, graph.n_senders, device=model.device)
    groups = sender_groups(graph)
    cache = AblationCache(engine, problem, config.ablation, config.batch_size)
    for part in chunks(problem, config.batch_size, config.progress, "eap-ig-activations"):
        clean = engine.outputs(part.clean)  # (batch, pos, sender, d_model)
        ablated = cache.values(part)  # (batch | 1, pos | 1, sender, d_model)
        start: Resume | None = None  # the clean run entering the current group's layer
        for group in _progress(groups, config.progress):
            layer = max(graph.senders[group[0]].layer, 0)  # the input node has layer -1
            if layer > 0 and (start is None or start.layer != layer):
                start = engine.state_at(part.clean, layer)  # groups go layer by layer
            columns = _group_scores(
                engine, part, problem.batch, weights, clean, ablated, group, start
            )
            scores[:, group] += columns
    extra = {
        "interpolated": "each layer group's outputs (input; heads of a layer; MLP of a layer)",
        "groups": len(groups),
        "alphas": weights,
        "sign": SIGN_CONVENTION,
    }
    return edge_scores(
        graph, scores, "eap-ig-activations", config, problem, extra, ablation=cache.spec
    )


def _group_scores(
    engine: EdgeForward,
    part: PatchingProblem,
    total_rows: int,
    weights: list[float],
    clean: Tensor,
    ablated: Tensor,
    group: list[int],
    start: Resume | None,
) -> Tensor:
    """(receiver, len(group)) scores of one group's senders on one chunk of rows; the
    forward-backwards resume at the group's layer from the clean run's `start` (everything
    before it is the clean run whatever alpha is)."""
    objective = loss_objective(part, total_rows)
    batch, pos, _, d_model = clean.shape
    grads = clean.new_zeros(batch, pos, engine.graph.n_receivers, d_model)  # summed over steps
    for alpha in weights:
        override = {
            s: ablated[:, :, s] + alpha * (clean[:, :, s] - ablated[:, :, s]) for s in group
        }
        engine.receiver_gradients(
            part.clean, part.positions, objective, override=override, start=start,
            accumulate=grads,
        )  # fmt: skip
    diff = masked_diff(ablated[:, :, group], clean[:, :, group], part.clean.attention_mask)
    return contract(diff, grads) / len(weights)


def _progress(groups: list[list[int]], progress: bool):
    if not progress:
        return groups
    import sys

    from tqdm import tqdm

    return tqdm(groups, desc="layer groups", unit="group", file=sys.stderr, leave=False)
