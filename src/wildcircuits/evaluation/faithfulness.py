"""Normalized faithfulness of circuits, evaluated with the exact edge patching engine.

f(C) = (m(C) - m(empty)) / (m(full) - m(empty)), where m is the problem's metric averaged over the
batch (batch means are normalised, as MIB does; not a mean of per-example ratios), m(full) is the
unpatched clean run and m(empty) the run with every edge ablated (for counterfactual ablation this
is the corrupted run, up to float rounding; `m_corrupted` reports the corrupted run itself).

Cost: per chunk of the batch, the ablation values once (one forward on the corrupted prompts for
counterfactual ablation; means are computed once for the whole problem), then one patched forward
per distinct circuit. The full and empty circuits are evaluated with the same patched forward as
any other circuit, so f(full) = 1 and f(empty) = 0 exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from wildcircuits.errors import WildcircuitsError
from wildcircuits.graph.circuit import Circuit
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.ablation_spec import AblationSpec
from wildcircuits.patching.edge_ablation import AblationCache
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem


@dataclass(frozen=True)
class CircuitMetrics:
    """Batch-mean metric of several circuits and of the two reference circuits.

    metric: (circuit,) m(C) of each circuit given, in order; m_full / m_empty: the full and empty
    circuits; m_corrupted: the corrupted run (counterfactual ablation only); forwards: patched
    forwards run (ablation-value passes excluded).
    """

    metric: tuple[float, ...]
    m_full: float
    m_empty: float
    m_corrupted: float | None
    n_examples: int
    forwards: int
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def faithfulness(self) -> tuple[float, ...]:
        return tuple(normalized_faithfulness(m, self.m_full, self.m_empty) for m in self.metric)


def normalized_faithfulness(metric: float, m_full: float, m_empty: float) -> float:
    """(m - m_empty) / (m_full - m_empty); undefined (error) when the ablation has no effect
    (a gap within float noise: 1e-6 relative to the metric's scale)."""
    gap = m_full - m_empty
    if abs(gap) <= 1e-6 * max(1.0, abs(m_full), abs(m_empty)):
        raise WildcircuitsError(
            f"m(full) = {m_full:.6g} equals m(empty) = {m_empty:.6g}: the ablation changes "
            "nothing on this batch, so normalized faithfulness is undefined; check the task, "
            "corruption or ablation"
        )
    return (metric - m_empty) / gap


def evaluate_circuits(
    model: InstrumentedModel,
    problem: PatchingProblem,
    circuits: Sequence[Circuit],
    spec: AblationSpec | str | None = None,
    batch_size: int = 16,
    engine: EdgeForward | None = None,
    progress: bool = False,
    share_prefix: bool = True,
) -> CircuitMetrics:
    """Batch-mean metric of every circuit (identical circuits share one forward); `spec`: the
    ablation (default counterfactual). share_prefix: under counterfactual ablation, compute
    the columns every clean and corrupted prompt of a chunk share once (`edge_prefix`; the
    same numbers to float rounding); False runs every column of every forward."""
    engine = engine or EdgeForward(model)
    graph = engine.graph
    full, empty = Circuit.full(graph), Circuit.empty(graph)
    masks, index = _distinct_masks([full, empty, *circuits], graph.valid)
    cache = AblationCache(engine, problem, spec, batch_size)
    spec = cache.spec
    sums = torch.zeros(len(masks), dtype=torch.float64)
    corrupted_sum, forwards = 0.0, 0
    chunks = problem.chunks(batch_size)
    bar = tqdm(total=len(chunks) * len(masks), disable=not progress, desc="circuits", leave=False)
    masks = [m.to(model.device) for m in masks]
    corrupted_logits = None
    for rows, chunk in chunks:
        values, corrupted_logits = cache.for_chunk(chunk)
        if corrupted_logits is not None:
            corrupted_sum += float(problem.score(corrupted_logits, rows).sum())
        prefix = cache.prefix(chunk) if share_prefix else None
        for i, ablated in enumerate(masks):
            run = engine.run(
                chunk.clean, chunk.positions, ablated=ablated, ablation=values, prefix=prefix
            )
            sums[i] += problem.score(run.logits, rows).double().sum().cpu()
            forwards += 1
            bar.update()
    bar.close()
    means = (sums / problem.batch).tolist()
    return CircuitMetrics(
        metric=tuple(means[i] for i in index[2:]),
        m_full=means[index[0]],
        m_empty=means[index[1]],
        m_corrupted=None if corrupted_logits is None else corrupted_sum / problem.batch,
        n_examples=problem.batch,
        forwards=forwards,
        provenance={**problem.provenance, **spec.describe()},
    )


def _distinct_masks(
    circuits: Sequence[Circuit], valid: torch.Tensor
) -> tuple[list[torch.Tensor], list[int]]:
    """The distinct ablation masks, and each circuit's index into them."""
    masks: list[torch.Tensor] = []
    seen: dict[bytes, int] = {}
    index = []
    for circuit in circuits:
        ablated = valid & ~circuit.edges
        key = ablated.numpy().tobytes()
        if key not in seen:
            seen[key] = len(masks)
            masks.append(ablated)
        index.append(seen[key])
    return masks, index


@dataclass(frozen=True)
class Faithfulness:
    """One circuit's normalized faithfulness, its metric and the references."""

    faithfulness: float
    metric: float
    m_full: float
    m_empty: float
    m_corrupted: float | None
    n_edges: int
    fraction: float
    provenance: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "faithfulness": self.faithfulness,
            "metric": self.metric,
            "m_full": self.m_full,
            "m_empty": self.m_empty,
            "m_corrupted": self.m_corrupted,
            "n_edges": self.n_edges,
            "fraction": self.fraction,
            "provenance": dict(self.provenance),
        }


def circuit_faithfulness(
    model: InstrumentedModel,
    problem: PatchingProblem,
    circuit: Circuit,
    spec: AblationSpec | str | None = None,
    batch_size: int = 16,
    engine: EdgeForward | None = None,
) -> Faithfulness:
    """Normalized faithfulness of one circuit on `problem`."""
    result = evaluate_circuits(model, problem, [circuit], spec, batch_size, engine)
    return Faithfulness(
        faithfulness=result.faithfulness[0],
        metric=result.metric[0],
        m_full=result.m_full,
        m_empty=result.m_empty,
        m_corrupted=result.m_corrupted,
        n_edges=circuit.n_edges,
        fraction=circuit.fraction,
        provenance={**result.provenance, "circuit": circuit.description or "unnamed"},
    )
