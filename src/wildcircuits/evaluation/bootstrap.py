"""Bootstrap intervals over prompts, paired (the same resampled rows for every statistic).

A verification number (a faithfulness, a completeness, a loss recovered) is a statistic of
per-row metrics: `rows` (k, batch) holds k per-prompt metrics (e.g. F(C) and F(M) row by row) and
`statistic` maps it to one number (e.g. |mean(rows[0]) - mean(rows[1])|). `bootstrap` resamples
the prompts (columns) with replacement, the same resampled columns for all k rows, so a
difference of two sets is resampled as a difference (paired); the interval is the percentile
interval of the statistic over `n_boot` resamples. `resample_rows` gives the indices (seeded,
the same for every call with the same arguments), so two calls with the same seed and batch are
paired too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from wildcircuits.errors import WildcircuitsError
from wildcircuits.results.verify import Estimate, Interval

#: Resamples per interval.
N_BOOT = 1000
#: Confidence level of every interval.
LEVEL = 0.95
METHOD = "percentile bootstrap over prompts, paired"


def resample_rows(n_rows: int, n_boot: int, seed: int) -> Tensor:
    """(n_boot, n_rows) long: row indices drawn with replacement, one resample per line, from a
    torch.Generator seeded with `seed` (the same arguments give the same indices)."""
    if n_rows < 1 or n_boot < 0:
        raise WildcircuitsError(
            f"bootstrap of {n_rows} rows, {n_boot} resamples: give at least one row and a "
            "non-negative number of resamples"
        )
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_rows, (n_boot, n_rows), generator=generator)


def bootstrap(
    rows: Tensor,
    statistic: Callable[[Tensor], float],
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> Estimate:
    """statistic(rows) and its percentile interval over prompts.

    rows: (k, batch) float64 per-row metrics; statistic: (k, b) -> float. Each resample picks
    the same columns in all k rows (paired). n_boot = 0: the value without an interval.
    Resamples where the statistic is not finite (e.g. a ratio whose denominator resamples to
    0) are left out of the interval and counted in its method."""
    if rows.dim() != 2:
        raise WildcircuitsError(
            f"bootstrap rows have shape {tuple(rows.shape)}; give (k, batch) per-row metrics"
        )
    if not 0 < level < 1:
        raise WildcircuitsError(f"bootstrap level {level}: give a level in (0, 1), e.g. 0.95")
    rows = rows.detach().double().cpu()
    value = float(statistic(rows))
    if n_boot == 0:
        return Estimate(value)
    index = resample_rows(rows.shape[1], n_boot, seed)  # (n_boot, batch)
    values = torch.tensor([float(statistic(rows[:, columns])) for columns in index])
    return Estimate(value, percentile_interval(values, level))


def percentile_interval(values: Tensor, level: float = LEVEL, method: str = METHOD) -> Interval:
    """The [(1 - level) / 2, (1 + level) / 2] quantiles of resampled statistics (n_boot,),
    finite ones only (the method says how many were not)."""
    finite = values[torch.isfinite(values)].double()
    dropped = len(values) - len(finite)
    if dropped:
        method = f"{method}; {dropped} of {len(values)} resamples not finite, left out"
    if len(finite) == 0:
        nan = float("nan")
        return Interval(nan, nan, level, len(values), method)
    tail = (1 - level) / 2
    low, high = torch.quantile(finite, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return Interval(float(low), float(high), level, len(values), method)
