"""ROC curves and ROC AUC of edge scores against a known circuit (InterpBench's protocol).

Where the true circuit is known (a planted model, an InterpBench model), a discovery method is
scored by how well its per-edge scores separate the true edges from the rest, over every
threshold at once: the area under the ROC curve (true-positive rate against false-positive rate
as the threshold falls).

Conventions:
- AUC = P(score of a true edge > score of a false edge) + 0.5 P(tie), over all (true, false)
  pairs: the Mann-Whitney U statistic divided by n_true * n_false, computed from average ranks
  (tied scores share the mean of their ranks). `roc_curve` takes one step per distinct score, so
  a tie is one diagonal segment and the trapezoid area under the curve equals `roc_auc`.
- Which value is ranked (`score_against_planted`): InterpBench ranks edges by |score|, since a
  gradient score's sign says which way an edge moves the metric, not whether it matters; that is
  the default (`Ranking.ABSOLUTE`). ACDC is ranked by its signed score: its circuit is exactly
  {score >= tau} (`discovery.acdc`), so the signed score is its own per-edge score and
  inclusion at the run's threshold is a monotone function of it; |score| would rank an edge
  whose removal *lowered* the loss above edges ACDC kept. A `Circuit` (a binary method's output,
  e.g. a MIB JSON file) is scored by inclusion (1 in, 0 out): one ROC point, joined to the
  corners.
- Noise floor: a value whose magnitude is at most `noise` (default 1e-6) times the largest
  magnitude is set to 0 before ranking, so exact zeros and rounding-level values tie. Scores are
  float32 sums of terms of the largest score's size; below ~1e-6 of it their order is rounding,
  and ranking it would credit (or blame) a method for noise. `noise=0` ranks raw values.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from wildcircuits.errors import WildcircuitsError
from wildcircuits.graph.build import Ranking, as_ranking
from wildcircuits.graph.circuit import Circuit, EdgeScores
from wildcircuits.graph.graph import Graph
from wildcircuits.names import Edge

__all__ = [
    "DEFAULT_NOISE",
    "RocError",
    "Ranking",
    "method_ranking",
    "ranked_values",
    "roc_auc",
    "roc_curve",
    "score_against_planted",
    "truth_mask",
]

#: Magnitudes at most this fraction of the largest one are treated as 0 (module docstring).
DEFAULT_NOISE = 1e-6
#: Methods ranked by their signed score (module docstring); every other method by |score|.
SIGNED_METHODS = frozenset({"acdc"})


class RocError(WildcircuitsError):
    """Scores and truth that cannot be compared: no true or no false edge, mismatched shapes,
    non-finite scores."""


def _checked(scores: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """Flat float64 scores and bool truth of one length, at least one true and one false."""
    if scores.shape != truth.shape:
        raise RocError(
            f"scores {tuple(scores.shape)} and truth {tuple(truth.shape)} differ in shape; pass "
            "one score and one true/false flag per edge (e.g. EdgeScores.values() and "
            "truth_mask(graph, edges)[graph.valid])"
        )
    scores, truth = scores.detach().flatten().double().cpu(), truth.flatten().bool().cpu()
    if not bool(torch.isfinite(scores).all()):
        raise RocError(
            f"{int((~torch.isfinite(scores)).sum())} scores are NaN or infinite; fix the method "
            "run that made them (or drop those edges from both scores and truth)"
        )
    n_true = int(truth.sum())
    if n_true == 0 or n_true == truth.numel():
        kind = "true" if n_true == 0 else "false"
        raise RocError(
            f"ROC needs at least one true and one false edge; got {n_true} true of "
            f"{truth.numel()} (no {kind} edge): pass the planted circuit's edges, a proper "
            "non-empty subset of the graph's edges (e.g. tests.planted_models.planted_edges)"
        )
    return scores, truth


def roc_auc(scores: Float[Tensor, " edge"], truth: Bool[Tensor, " edge"]) -> float:
    """P(true edge scores above a false one) + 0.5 P(tie), from average ranks (Mann-Whitney)."""
    scores, truth = _checked(scores, truth)
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    # rank of each distinct value (ascending, 1-based): the mean of the ranks its copies span
    ends = counts.cumsum(0).double()  # (distinct,)
    average_rank = ends - (counts.double() - 1) / 2
    ranks = average_rank[inverse]  # (edge,)
    n_true = int(truth.sum())
    n_false = truth.numel() - n_true
    u = float(ranks[truth].sum()) - n_true * (n_true + 1) / 2
    return u / (n_true * n_false)


def roc_curve(
    scores: Float[Tensor, " edge"], truth: Bool[Tensor, " edge"]
) -> tuple[Float[Tensor, " point"], Float[Tensor, " point"]]:
    """(fpr, tpr) as the threshold falls through each distinct score, from (0, 0) to (1, 1).

    Edges with equal scores enter together (one point per distinct value), so the trapezoid
    area under the curve is `roc_auc` exactly.
    """
    scores, truth = _checked(scores, truth)
    values, inverse = torch.unique(scores, return_inverse=True)  # values ascending
    n = values.numel()
    true_at = torch.zeros(n, dtype=torch.float64).index_add_(0, inverse, truth.double())
    false_at = torch.zeros(n, dtype=torch.float64).index_add_(0, inverse, (~truth).double())
    # highest value first: cumulative counts of edges at or above each threshold
    tp = true_at.flip(0).cumsum(0)  # (distinct,)
    fp = false_at.flip(0).cumsum(0)
    zero = torch.zeros(1, dtype=torch.float64)
    tpr = torch.cat([zero, tp / tp[-1]])
    fpr = torch.cat([zero, fp / fp[-1]])
    return fpr, tpr


def method_ranking(method: str) -> Ranking:
    """The ranking `score_against_planted` uses for a method's scores (module docstring)."""
    return Ranking.SIGNED if method in SIGNED_METHODS else Ranking.ABSOLUTE


def ranked_values(
    scores: EdgeScores | Circuit,
    ranking: Ranking | str | None = None,
    noise: float = DEFAULT_NOISE,
) -> Float[Tensor, " edge"]:
    """The value each edge is ranked by, in `Graph.edges` order: |score| or the signed score
    (None: `method_ranking(scores.method)`), values within the noise floor set to 0; a
    `Circuit`: inclusion (1.0 in, 0.0 out)."""
    if isinstance(scores, Circuit):
        return scores.edges[scores.graph.valid].double()
    if noise < 0:
        raise RocError(f"noise must be >= 0 (a fraction of the largest |score|), got {noise}")
    ranking = method_ranking(scores.method) if ranking is None else as_ranking(ranking)
    values = scores.values().double()  # (edge,)
    if ranking is Ranking.ABSOLUTE:
        values = values.abs()
    floor = noise * float(values.abs().max()) if values.numel() else 0.0
    return torch.where(values.abs() <= floor, 0.0, values)


def truth_mask(graph: Graph, true_edges: Iterable[Edge | str] | Tensor) -> Bool[Tensor, "dst src"]:
    """A (receiver, sender) bool mask of the true edges: from edge names / `Edge`s (an edge not
    in the graph raises `GraphError`) or a mask of that shape (cells outside `valid` dropped)."""
    if isinstance(true_edges, str | Edge):
        raise RocError(
            f"true edges must be a collection of edges, got the single {true_edges!r}; "
            "wrap it in a set: {edge}"
        )
    if isinstance(true_edges, Tensor):
        shape = (graph.n_receivers, graph.n_senders)
        if tuple(true_edges.shape) != shape:
            raise RocError(
                f"truth mask shape {tuple(true_edges.shape)} != the graph's (receiver, sender) "
                f"shape {shape}; build it with truth_mask(graph, edge_names)"
            )
        return true_edges.bool().cpu() & graph.valid
    return Circuit.from_edges(graph, true_edges).edges


def score_against_planted(
    edge_scores: EdgeScores | Circuit,
    true_edges: Iterable[Edge | str] | Tensor,
    ranking: Ranking | str | None = None,
    noise: float = DEFAULT_NOISE,
) -> float:
    """ROC AUC of a method's edge scores (or a binary circuit) against the true edges.

    `ranking` None: |score|, or the signed score for ACDC (`method_ranking`); see the module
    docstring for both conventions and the noise floor.
    """
    graph = edge_scores.graph
    truth = truth_mask(graph, true_edges)[graph.valid]  # (edge,)
    return roc_auc(ranked_values(edge_scores, ranking, noise), truth)
