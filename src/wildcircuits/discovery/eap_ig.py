"""EAP with integrated gradients on the inputs (EAP-IG-inputs, MIB's main method).

s(u -> v) = sum over batch, pos, d_model of (z_u(corrupted) - z_u(clean)) * mean_k dL/dx_v(k),
where run k feeds the clean tokens' positions / masks with input embeddings
    e(k) = e_corrupted + alpha_k * (e_clean - e_corrupted).
Riemann sum (pinned, `Riemann`):
- LEFT (default, as the EAP-IG reference code): alpha_k = k / m for k = 0 .. m-1; it includes
  the corrupted endpoint and never evaluates the clean one.
- RIGHT: alpha_k = k / m for k = 1 .. m; m = 1 is plain EAP.
L and the sign convention are those of `discovery.common` (positive = important).

Cost per chunk: m forward + backward passes, plus one forward for the sender outputs of the
endpoint the sum does not visit (LEFT visits the corrupted run at k = 0 and keeps its outputs,
so it needs only the clean forward): 1 forward + m (forward + backward) in all, against the
2 forwards + m (forward + backward) of the textbook count. The m gradients are summed before
one score contraction per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

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
from wildcircuits.discovery.registry import DiscoveryError, register
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.edge_prefix import counterfactual_prefix
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem


class Riemann(StrEnum):
    """Which m points of [0, 1] the integrated gradient averages (0 = corrupted, 1 = clean)."""

    LEFT = "left"  # k / m, k = 0 .. m-1
    RIGHT = "right"  # k / m, k = 1 .. m


def alphas(steps: int, riemann: Riemann) -> list[float]:
    """Interpolation weights of the clean end, in run order."""
    if steps < 1:
        raise DiscoveryError(f"steps must be >= 1, got {steps}")
    start = 0 if Riemann(riemann) is Riemann.LEFT else 1
    return [k / steps for k in range(start, start + steps)]


@dataclass(frozen=True)
class EAPIGConfig(AblatingConfig):
    """steps: m gradient evaluations; riemann: left (k = 0..m-1) or right (k = 1..m);
    batch_size: rows per chunk; progress: a progress bar on stderr; ablation: counterfactual only
    (the path runs from the corrupted prompt's embeddings)."""

    METHOD = "eap-ig-inputs"

    steps: int = 5
    riemann: Riemann = Riemann.LEFT
    batch_size: int = 16
    progress: bool = False


@register("eap-ig-inputs", EAPIGConfig, "EAP with integrated gradients on the input embeddings")
def eap_ig_inputs(
    model: InstrumentedModel, problem: PatchingProblem, config: EAPIGConfig
) -> EdgeScores:
    """EAP-IG (inputs) scores of every edge: (receiver, sender); see the module docstring."""
    engine = EdgeForward(model)
    graph = engine.graph
    weights = alphas(config.steps, config.riemann)
    scores = torch.zeros(graph.n_receivers, graph.n_senders, device=model.device)
    for part in chunks(problem, config.batch_size, config.progress, "eap-ig-inputs"):
        scores += _chunk_scores(engine, part, problem.batch, weights)
    extra = {
        "interpolated": "input embeddings",
        "alphas": weights,
        "sign": SIGN_CONVENTION,
    }
    return edge_scores(
        graph, scores, "eap-ig-inputs", config, problem, extra, ablation=config.ablation
    )


def _chunk_scores(
    engine: EdgeForward, part: PatchingProblem, total_rows: int, weights: list[float]
) -> Tensor:
    """(receiver, sender) scores of one chunk of rows."""
    model = engine.model
    clean_embeds = model.embed(part.clean)  # (batch, pos, d_model)
    corrupted_embeds = model.embed(part.corrupted)
    objective = loss_objective(part, total_rows)
    outputs: dict[float, Tensor] = {}
    # the columns every clean and corrupted prompt share add nothing to a score (their
    # difference is zero): the runs cover the later columns only (`edge_prefix`)
    prefix = counterfactual_prefix(
        model, part.clean, part.corrupted, part.positions, part.position_mask
    )
    skip = 0 if prefix is None else prefix.length
    batch, pos = part.clean.input_ids.shape
    # (batch, pos, receiver, d_model), summed over steps in place
    grads = clean_embeds.new_zeros(batch, pos - skip, engine.graph.n_receivers, model.d_model)
    for alpha in weights:
        embeds = corrupted_embeds + alpha * (clean_embeds - corrupted_embeds)
        keep = alpha in (0.0, 1.0)  # an endpoint run: its sender outputs are needed anyway
        run = engine.receiver_gradients(
            part.clean, part.positions, objective, input_embeds=embeds, keep_outputs=keep,
            accumulate=grads, prefix=prefix,
        )  # fmt: skip
        if keep:
            outputs[alpha] = run.outputs
        del run
    clean = outputs.get(1.0)
    if clean is None:
        clean = engine.outputs(part.clean, input_embeds=clean_embeds, prefix=prefix)
    corrupted = outputs.get(0.0)
    if corrupted is None:
        corrupted = engine.outputs(part.clean, input_embeds=corrupted_embeds, prefix=prefix)
    diff = masked_diff(corrupted, clean, part.clean.attention_mask[:, skip:])
    del outputs, clean, corrupted
    return contract(diff, grads) / len(weights)
