"""Pieces shared by the discovery methods.

Sign convention (MIB's): every method scores with the *loss* L = -metric for metrics where higher
is better (logit diff, probability diff, ...) and L = metric where lower is better (KL to clean),
averaged over the batch. An edge score estimates L(edge ablated) - L(clean): how much worse the
metric gets when that edge reads its ablation value (by default the corrupted run) instead of the
clean one. Positive = the edge carries the behaviour; top-k by signed score keeps the edges whose
loss hurts most.

Edge scores are sums over batch rows (divided by the batch size), positions and d_model of
(a_u - z_u(clean)) * dL/dx_v, i.e. `contract`, with a_u the ablation value (`AblationCache`).

Ablation: a method that ablates has a config derived from `AblatingConfig`, whose `ablation`
field (an `AblationSpec` or its string) must be one of the config's `ABLATIONS`; the provenance
of its scores is the `describe()` of the spec its values came from.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from wildcircuits.discovery.registry import DiscoveryError
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.graph.graph import Graph
from wildcircuits.patching.ablation_spec import AblationKind, AblationSpec
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.tasks.spec import MetricKind

SIGN_CONVENTION = "score ~ L(edge ablated) - L(clean), L = -metric if higher is better"
NOT_SETTINGS = ("progress",)
#: The provenance of scores made without any ablation (random scores).
NO_ABLATION = {"ablation": "none"}


@dataclass(frozen=True)
class AblatingConfig:
    """Base of the configs of methods that ablate: `ablation` (an `AblationSpec` or its string,
    keyword only) must be one of `ABLATIONS`; `METHOD` names the method in errors."""

    METHOD: ClassVar[str] = "this method"
    ABLATIONS: ClassVar[tuple[AblationKind, ...]] = (AblationKind.COUNTERFACTUAL,)

    ablation: AblationSpec = field(default_factory=AblationSpec, kw_only=True)

    def __post_init__(self) -> None:
        spec = AblationSpec.coerce(self.ablation).require(self.ABLATIONS, f"{self.METHOD!r}")
        object.__setattr__(self, "ablation", spec)


def loss_objective(problem: PatchingProblem, total_rows: int) -> Callable[[Tensor], Tensor]:
    """logits (batch, vocab) of `problem`'s rows -> their summed loss / `total_rows`.

    Summing this over the chunks of a batch gives the batch-mean loss, so gradients taken chunk
    by chunk add up to the gradient of the mean.
    """
    check_differentiable(problem)
    sign = -1.0 if problem.higher_is_better else 1.0

    def objective(logits: Tensor) -> Tensor:
        return sign * problem.score(logits).sum() / total_rows

    return objective


def check_differentiable(problem: PatchingProblem) -> None:
    if problem.metric is MetricKind.ACCURACY:
        raise DiscoveryError(
            "gradient-based discovery needs a differentiable metric; accuracy is not "
            "(use logit_diff, prob_diff, answer_prob or kl_to_clean)"
        )


def loss_value(problem: PatchingProblem, logits: Tensor) -> Tensor:
    """The batch-mean loss (see the module docstring) from logits (batch, vocab)."""
    sign = -1.0 if problem.higher_is_better else 1.0
    return sign * problem.score(logits).mean()


def contract(
    diff: Float[Tensor, "batch pos src d_model"], grads: Float[Tensor, "batch pos dst d_model"]
) -> Float[Tensor, "dst src"]:
    """sum over batch, pos, d_model of diff * grads: one (dst, b*p*d) @ (b*p*d, src) matmul."""
    batch, pos, src, d_model = diff.shape
    dst = grads.shape[2]
    left = grads.permute(2, 0, 1, 3).reshape(dst, batch * pos * d_model)  # (dst, b*p*d)
    right = diff.permute(0, 1, 3, 2).reshape(batch * pos * d_model, src)  # (b*p*d, src)
    return left @ right


def masked_diff(ablated: Tensor, clean: Tensor, attention_mask: Tensor) -> Tensor:
    """(ablated - clean) sender outputs (batch, pos, sender, d_model), zero at padding; the
    ablation values may be (1, pos | 1, sender, d_model) (means, zeros)."""
    mask = attention_mask.bool()[:, :, None, None]  # (batch, pos, 1, 1)
    return torch.where(mask, ablated - clean, 0.0)


def chunks(
    problem: PatchingProblem, batch_size: int, progress: bool, desc: str
) -> Iterator[PatchingProblem]:
    """Sub-problems of at most `batch_size` rows, with a progress bar on stderr."""
    if batch_size < 1:
        raise DiscoveryError(f"batch_size must be >= 1, got {batch_size}")
    parts = [part for _, part in problem.chunks(batch_size)]
    if progress and len(parts) > 0:
        from tqdm import tqdm

        yield from tqdm(parts, desc=desc, unit="chunk", file=sys.stderr, leave=False)
    else:
        yield from parts


def _setting(value: Any) -> Any:
    if isinstance(value, AblationSpec):
        return value.format()
    return value.value if hasattr(value, "value") else value


def settings_of(config: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config's fields (minus display-only ones; an ablation as its string) plus
    method-specific facts."""
    settings = {
        f.name: _setting(getattr(config, f.name))
        for f in dataclasses.fields(config)
        if f.name not in NOT_SETTINGS
    }
    return {**settings, **(extra or {})}


def provenance_of(
    problem: PatchingProblem,
    method: str,
    settings: Mapping[str, Any],
    ablation: AblationSpec | None,
) -> dict[str, Any]:
    """The provenance of scores: the problem's, the method and settings, and the ablation that
    ran (`ablation.describe()`; None: nothing was ablated)."""
    return {
        **dict(problem.provenance),
        "method": method,
        "settings": dict(settings),
        **(NO_ABLATION if ablation is None else ablation.describe()),
        "n_examples": problem.batch,
    }


def edge_scores(
    graph: Graph,
    scores: Tensor,
    method: str,
    config: Any,
    problem: PatchingProblem,
    extra: Mapping[str, Any] | None = None,
    *,
    ablation: AblationSpec | None,
) -> EdgeScores:
    """Wrap a (receiver, sender) score matrix with the method's settings and provenance;
    `ablation`: the spec the method's ablation values came from (None: no ablation ran)."""
    settings = settings_of(config, extra)
    provenance = provenance_of(problem, method, settings, ablation)
    return EdgeScores(graph, scores.detach(), method, settings, provenance)
