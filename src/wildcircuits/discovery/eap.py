"""Edge attribution patching (EAP): a first-order estimate of every edge's patching effect.

s(u -> v) = sum over batch, pos, d_model of (z_u(corrupted) - z_u(clean)) * dL/dx_v, with the
gradient taken on the clean run and L the batch-mean loss (sign convention in
`discovery.common`: s ~ L(edge corrupted) - L(clean), positive = important).

Cost per chunk of rows: one forward of the corrupted run (its sender outputs) and one
forward + backward of the clean run, which returns the clean sender outputs and every receiver's
gradient at once (`EdgeForward.receiver_gradients`). The score contraction is one matmul per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from wildcircuits.discovery.common import (
    SIGN_CONVENTION,
    chunks,
    contract,
    edge_scores,
    loss_objective,
    masked_diff,
)
from wildcircuits.discovery.registry import register
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem


@dataclass(frozen=True)
class EAPConfig:
    """batch_size: rows per chunk (bounds memory); progress: a progress bar on stderr."""

    batch_size: int = 16
    progress: bool = False


@register("eap", EAPConfig, "edge attribution patching (gradient at the clean run)")
def eap(model: InstrumentedModel, problem: PatchingProblem, config: EAPConfig) -> EdgeScores:
    """EAP scores of every edge: (receiver, sender), see the module docstring."""
    engine = EdgeForward(model)
    scores = eap_matrix(engine, problem, config.batch_size, config.progress)
    extra = {"gradient_at": "clean", "sign": SIGN_CONVENTION}
    return edge_scores(engine.graph, scores, "eap", config, problem, extra)


def eap_matrix(
    engine: EdgeForward, problem: PatchingProblem, batch_size: int, progress: bool = False
) -> Tensor:
    """The raw (receiver, sender) EAP matrix, summed over chunks of `batch_size` rows."""
    graph = engine.graph
    total = torch.zeros(graph.n_receivers, graph.n_senders, device=engine.model.device)
    for part in chunks(problem, batch_size, progress, "eap"):
        corrupted = engine.outputs(part.corrupted)  # (batch, pos, sender, d_model)
        run = engine.receiver_gradients(
            part.clean, part.positions, loss_objective(part, problem.batch), keep_outputs=True
        )
        diff = masked_diff(corrupted, run.outputs, part.clean.attention_mask)
        del corrupted
        total += contract(diff, run.receiver_grads)
    return total
