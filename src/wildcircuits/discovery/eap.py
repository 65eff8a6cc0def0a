"""Edge attribution patching (EAP): a first-order estimate of every edge's patching effect.

s(u -> v) = sum over batch, pos, d_model of (a_u - z_u(clean)) * dL/dx_v, with the gradient
taken on the clean run, L the batch-mean loss (sign convention in `discovery.common`:
s ~ L(edge ablated) - L(clean), positive = important) and a_u the ablation value: u's output on
the corrupted run (counterfactual, the default), its mean over the corrupted or clean prompts, or
zero (`config.ablation`).

Cost per chunk of rows: one forward of the corrupted run (its sender outputs; means are computed
once for the problem) and one forward + backward of the clean run, which returns the clean sender
outputs and every receiver's gradient at once (`EdgeForward.receiver_gradients`). The score
contraction is one matmul per chunk.
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
from wildcircuits.discovery.registry import register
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.ablation_spec import EDGE_ABLATIONS
from wildcircuits.patching.edge_ablation import AblationCache
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem


@dataclass(frozen=True)
class EAPConfig(AblatingConfig):
    """batch_size: rows per chunk (bounds memory); progress: a progress bar on stderr;
    ablation: counterfactual (default), mean or zero."""

    METHOD = "eap"
    ABLATIONS = EDGE_ABLATIONS

    batch_size: int = 16
    progress: bool = False


@register("eap", EAPConfig, "edge attribution patching (gradient at the clean run)")
def eap(model: InstrumentedModel, problem: PatchingProblem, config: EAPConfig) -> EdgeScores:
    """EAP scores of every edge: (receiver, sender), see the module docstring."""
    engine = EdgeForward(model)
    cache = AblationCache(engine, problem, config.ablation, config.batch_size)
    scores = eap_matrix(cache, problem, config.batch_size, config.progress)
    extra = {"gradient_at": "clean", "sign": SIGN_CONVENTION}
    return edge_scores(engine.graph, scores, "eap", config, problem, extra, ablation=cache.spec)


def eap_matrix(
    cache: AblationCache, problem: PatchingProblem, batch_size: int, progress: bool = False
) -> Tensor:
    """The raw (receiver, sender) EAP matrix, summed over chunks of `batch_size` rows, with the
    ablation values of `cache` (built on `problem`)."""
    engine = cache.engine
    graph = engine.graph
    total = torch.zeros(graph.n_receivers, graph.n_senders, device=engine.model.device)
    for part in chunks(problem, batch_size, progress, "eap"):
        ablated = cache.values(part)  # (batch | 1, pos | 1, sender, d_model)
        run = engine.receiver_gradients(
            part.clean, part.positions, loss_objective(part, problem.batch), keep_outputs=True
        )
        diff = masked_diff(ablated, run.outputs, part.clean.attention_mask)
        del ablated
        total += contract(diff, run.receiver_grads)
    return total
