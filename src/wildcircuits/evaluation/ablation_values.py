"""What an ablated edge carries: the sender outputs the edge engine substitutes.

Three edge ablations (`EdgeAblation`):
- counterfactual: the sender's output on the corrupted prompt of the same example (patching, as
  in MIB / ACDC). The empty circuit then equals the corrupted run.
- mean: the sender's output averaged over a reference distribution (default: the problem's
  corrupted prompts, e.g. IOI's ABC prompts; or its clean prompts). Per position by default:
  position p gets the mean over the reference rows that have a real token at p (positions index
  the padded batch, so rows must be aligned, as they are for one-template tasks); with
  `per_position=False` one mean over every real token. Per-template means are not offered here:
  a `PatchingProblem` does not carry template labels.
- zero: the sender contributes nothing (embeddings included).

These are distinct from `wildcircuits.patching.ablation.AblationType` (zero | mean | resample),
which replaces activations at sites; here an ablated *edge* u -> v feeds v the value a_u instead
of u's output, while u's other out-edges are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch

from wildcircuits.errors import WildcircuitsError
from wildcircuits.models.tokens import Tokens
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem


class EdgeAblation(StrEnum):
    """The value an ablated edge carries."""

    COUNTERFACTUAL = "counterfactual"
    MEAN = "mean"
    ZERO = "zero"


class MeanReference(StrEnum):
    """Which prompts of the problem a mean ablation averages over."""

    CORRUPTED = "corrupted"
    CLEAN = "clean"


@dataclass(frozen=True)
class AblationSpec:
    """An edge ablation and, for means, the distribution and position convention."""

    ablation: EdgeAblation = EdgeAblation.COUNTERFACTUAL
    reference: MeanReference = MeanReference.CORRUPTED
    per_position: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "ablation", EdgeAblation(self.ablation))
        object.__setattr__(self, "reference", MeanReference(self.reference))

    def describe(self) -> dict[str, object]:
        """Provenance entries for results computed with this ablation."""
        info: dict[str, object] = {"ablation": self.ablation.value}
        if self.ablation is EdgeAblation.MEAN:
            info["mean_reference"] = self.reference.value
            info["mean_per_position"] = self.per_position
        return info


def mean_outputs(
    engine: EdgeForward, reference: Tokens, batch_size: int, per_position: bool = True
) -> torch.Tensor:
    """Mean sender outputs over the real tokens of `reference`, computed in chunks.

    Returns (1, pos, sender, d_model) per position (rows without a token at p do not count),
    or (1, 1, sender, d_model) with `per_position=False`.
    """
    total, count = None, None
    for start in range(0, reference.batch, batch_size):
        rows = reference.select(slice(start, start + batch_size))
        outputs = engine.outputs(rows)  # (batch, pos, sender, d_model)
        weight = rows.attention_mask.to(outputs)[:, :, None, None]  # (batch, pos, 1, 1)
        dims = (0, 1) if not per_position else (0,)
        part, n = (outputs * weight).sum(dims, keepdim=True), weight.sum(dims, keepdim=True)
        total = part if total is None else total + part
        count = n if count is None else count + n
    if total is None:
        raise WildcircuitsError("the mean-ablation reference batch is empty")
    return total / count.clamp(min=1)


class AblationCache:
    """Ablation values for the chunks of one problem (means computed once for all chunks)."""

    def __init__(
        self, engine: EdgeForward, problem: PatchingProblem, spec: AblationSpec, batch_size: int
    ):
        self.engine, self.spec = engine, spec
        self._fixed: torch.Tensor | None = None
        model = engine.model
        if spec.ablation is EdgeAblation.ZERO:
            shape = (1, 1, engine.graph.n_senders, model.d_model)
            self._fixed = torch.zeros(shape, dtype=model.dtype, device=model.device)
        elif spec.ablation is EdgeAblation.MEAN:
            corrupted = spec.reference is MeanReference.CORRUPTED
            tokens = problem.corrupted if corrupted else problem.clean
            self._fixed = mean_outputs(engine, tokens, batch_size, spec.per_position)

    def for_chunk(self, chunk: PatchingProblem) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ablation values (batch | 1, pos | 1, sender, d_model), corrupted logits or None).

        Counterfactual values cost one forward on the chunk's corrupted prompts, whose logits
        (batch, vocab) at the metric positions come back too.
        """
        if self._fixed is not None:
            return self._fixed, None
        run = self.engine.run(chunk.corrupted, chunk.positions, keep_outputs=True)
        return run.outputs, run.logits
