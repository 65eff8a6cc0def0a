"""Random-scores baseline: i.i.d. standard-normal scores on every edge, from a seeded generator.

Any circuit builder applied to these scores gives a random circuit of the requested size (top-k
of i.i.d. scores is a uniformly random k-subset), the baseline every method must beat. The model
is only used for its graph shape; no forward pass runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wildcircuits.discovery.common import edge_scores
from wildcircuits.discovery.registry import register
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.graph.graph import Graph
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.problem import PatchingProblem


@dataclass(frozen=True)
class RandomScoresConfig:
    """seed: the generator seed (same seed, same scores)."""

    seed: int = 0


@register("random", RandomScoresConfig, "random scores (seeded baseline)")
def random_scores(
    model: InstrumentedModel, problem: PatchingProblem, config: RandomScoresConfig
) -> EdgeScores:
    """Standard-normal scores on the valid (receiver, sender) cells, zeros elsewhere."""
    graph = Graph.for_model(model)
    generator = torch.Generator().manual_seed(config.seed)
    scores = torch.randn(graph.n_receivers, graph.n_senders, generator=generator)
    extra = {"distribution": "standard normal, i.i.d. per edge"}
    return edge_scores(graph, scores, "random", config, problem, extra, ablation=None)
