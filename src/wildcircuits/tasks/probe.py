"""The black-box behaviour probe: baseline, corruptions, variations, verdicts.

Verdicts compare a variation's mean metric with the baseline, normalized so the clean baseline
is 1 and the default corruption is 0: score >= HOLDS (0.75) holds, score < BREAKS (0.25) breaks,
in between degrades; `undefined` when clean and corrupted baselines agree (nothing to compare).
The result types live in `wildcircuits.results.behaviour` (behaviour.json).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from wildcircuits.errors import TaskError
from wildcircuits.results.behaviour import (
    BREAKS,
    HOLDS,
    Example,
    ProbeResult,
    Stats,
    VariationResult,
    Verdict,
)
from wildcircuits.tasks.base import Task, Variation
from wildcircuits.tasks.dataset import Dataset
from wildcircuits.tasks.evaluate import Scores, kl_from_clean, score
from wildcircuits.tasks.metrics import HIGHER_IS_BETTER
from wildcircuits.tasks.spec import Split

__all__ = ["run_probe", "verdict"]


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else float("nan")


def summarize(scores: Scores, kl: torch.Tensor | None = None) -> Stats:
    values = scores.metric.double()
    return Stats(
        n=len(values),
        mean=_finite(values.mean().item()),
        std=_finite(values.std().item()) if len(values) > 1 else 0.0,
        median=_finite(values.median().item()),
        accuracy=scores.correct.mean().item(),
        top1=scores.top1.mean().item(),
        answer_prob=None if scores.answer_prob is None else scores.answer_prob.mean().item(),
        kl_to_clean=None if kl is None else kl.mean().item(),
    )


def normalized(mean: float, clean: Stats, corrupted: Stats) -> float | None:
    gap = clean.mean - corrupted.mean
    if not math.isfinite(gap) or abs(gap) < 1e-6:
        return None
    return (mean - corrupted.mean) / gap


def verdict(score: float | None) -> Verdict:
    if score is None:
        return Verdict.UNDEFINED
    if score >= HOLDS:
        return Verdict.HOLDS
    return Verdict.BREAKS if score < BREAKS else Verdict.DEGRADES


def run_probe(
    model: Any,
    task: Task,
    n: int = 32,
    seed: int = 0,
    split: Split = Split.ALL,
    batch_size: int = 8,
    progress: bool = True,
) -> ProbeResult:
    """Probe `task` on `model`: baseline, every corruption, every variation, with verdicts."""
    dataset = task.build(model.tokenizer, n, seed=seed, split=split)
    variations = task.variations()
    derived = _build_derived(model, variations, n, seed, split)
    batches = math.ceil(n / batch_size)
    total = batches * (1 + len(dataset.corruptions)) + sum(
        math.ceil(len(d) / batch_size) for d in derived.values() if isinstance(d, Dataset)
    )
    with _progress(total, f"probe {task.name}", progress) as tick:
        clean_scores = score(model, dataset, None, batch_size, tick)
        clean = summarize(clean_scores)
        corrupted = {}
        for name in dataset.corruptions:
            scores = score(model, dataset, name, batch_size, tick)
            corrupted[name] = summarize(scores, kl_from_clean(clean_scores, scores))
        base = corrupted[dataset.default_corruption]
        clean = _with_norm(clean, clean, base)
        corrupted = {k: _with_norm(v, clean, base) for k, v in corrupted.items()}
        results = []
        for variation in variations:
            if variation.group_by is not None:
                results += _grouped(variation, dataset, clean_scores, clean, base)
            else:
                results.append(_derived(variation, derived[variation.name], model, batch_size,
                                        clean, base, tick))  # fmt: skip
    return _result(model, task, dataset, clean, corrupted, results)


def _with_norm(stats: Stats, clean: Stats, base: Stats) -> Stats:
    from dataclasses import replace

    return replace(stats, normalized=normalized(stats.mean, clean, base))


def _build_derived(
    model: Any, variations: tuple[Variation, ...], n: int, seed: int, split: Split
) -> dict[str, Dataset | str]:
    out: dict[str, Dataset | str] = {}
    for v in variations:
        if v.task is None:
            continue
        try:
            out[v.name] = v.task.build(model.tokenizer, n, seed=seed, split=split, min_n=1)
        except TaskError as error:
            out[v.name] = str(error).splitlines()[0]
    return out


def _from_scores(
    name: str, description: str, scores: Scores, clean: Stats, base: Stats
) -> VariationResult:
    stats = summarize(scores)
    norm = normalized(stats.mean, clean, base)
    return VariationResult(
        name, description, stats.n, stats.mean, stats.std, stats.accuracy, stats.top1,
        stats.answer_prob, norm, verdict(norm),
    )  # fmt: skip


def _grouped(
    variation: Variation, dataset: Dataset, scores: Scores, clean: Stats, base: Stats
) -> list[VariationResult]:
    key = variation.group_by
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(dataset.examples):
        value = e.template if key == "template" else e.metadata.get(key or "", "?")
        groups.setdefault(value, []).append(i)
    out = []
    for value, rows in sorted(groups.items()):
        index = torch.tensor(rows)
        sub = Scores(
            scores.metric[index],
            scores.correct[index],
            None if scores.answer_prob is None else scores.answer_prob[index],
            scores.top1[index],
            None,
        )
        out.append(
            _from_scores(f"{variation.name}={value}", variation.description, sub, clean, base)
        )
    return out


def _derived(
    variation: Variation,
    built: Dataset | str,
    model: Any,
    batch_size: int,
    clean: Stats,
    base: Stats,
    tick: Callable[[], None],
) -> VariationResult:
    if isinstance(built, str):
        nan = float("nan")
        return VariationResult(
            variation.name, variation.description, 0, nan, nan, nan, nan, None, None,
            Verdict.UNDEFINED, error=built,
        )  # fmt: skip
    scores = score(model, built, None, batch_size, tick)
    return _from_scores(variation.name, variation.description, scores, clean, base)


def _result(
    model: Any,
    task: Task,
    dataset: Dataset,
    clean: Stats,
    corrupted: dict[str, Stats],
    variations: list[VariationResult],
) -> ProbeResult:
    info = model.info.to_dict()
    provenance = {
        **dataset.provenance(),
        "model_id": info.get("model_id"),
        "quantization": info.get("quantization"),
        "device": str(model.device),
        "default_corruption": dataset.default_corruption,
    }
    first = dataset.examples[0]
    example = Example(
        clean=first.clean.text,
        corrupted={k: p.text for k, p in first.corrupted.items()},
        answers=tuple(first.answer_texts),
        distractors=tuple(first.distractor_texts),
    )
    return ProbeResult(
        task=task.name,
        description=task.description,
        model=info,
        provenance=provenance,
        n=len(dataset),
        metric=dataset.metric.value,
        higher_is_better=HIGHER_IS_BETTER[dataset.metric],
        default_corruption=dataset.default_corruption,
        clean=clean,
        corrupted=corrupted,
        variations=variations,
        example=example,
        build=dataset.report.to_dict(),
    )


class _progress:
    """A tqdm bar on stderr (or nothing); the context value is a tick function."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total, self.label, self.enabled, self.bar = total, label, enabled, None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        import sys

        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc=self.label, unit="batch", file=sys.stderr)
        return lambda: self.bar.update(1)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
