"""Named positions of a problem, as one index per token (the position axis of a pair).

A (component, position) pair acts at one of the problem's named positions (`IO`, `S1`, `S2`,
`END`, ...), at `S1+1` (the token after S1, as the IOI paper uses) where `S1` exists, or at
`other` (every unnamed real token, pooled). `position_index` maps every token to one of them.
"""

from __future__ import annotations

import torch

from wildcircuits.patching.problem import PatchingProblem

OTHER = "other"
AFTER_S1 = "S1+1"


def position_names(problem: PatchingProblem) -> tuple[str, ...]:
    """Named positions in prompt order (mean token index over rows, then name), then `S1+1`
    where `S1` exists, then `other`."""
    named = problem.named_positions
    order = sorted(named, key=lambda name: (float(named[name].float().mean()), name))
    after = (AFTER_S1,) if "S1" in named and AFTER_S1 not in named else ()
    return (*order, *after, OTHER)


def position_index(problem: PatchingProblem) -> tuple[tuple[str, ...], torch.Tensor]:
    """names (see `position_names`) and a (batch, pos) long tensor giving each token's index
    into names: padding -1, unnamed real tokens `other`. A token two names share goes to the
    one that comes first in names; `S1+1` yields to any named position."""
    names = position_names(problem)
    real = problem.clean.attention_mask.bool()  # (batch, pos)
    index = torch.where(real, len(names) - 1, -1).long()  # (batch, pos)
    rows = torch.arange(problem.batch, device=index.device)
    width = index.shape[1]
    if AFTER_S1 in names:
        after = problem.named_positions["S1"].to(index.device) + 1  # (batch,)
        ok = after < width
        index[rows[ok], after[ok]] = names.index(AFTER_S1)
    for slot in reversed(range(len(names) - 1)):
        name = names[slot]
        if name in problem.named_positions:
            index[rows, problem.named_positions[name].to(index.device)] = slot
    return names, torch.where(real, index, -1)
