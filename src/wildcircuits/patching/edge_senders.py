"""Sender outputs of one edge forward, and the ablation deltas its receivers read from them.

A receiver r reads the residual stream plus delta_r = sum over its ablated in-edges (u -> r) of
(a_u - z_u): a_u the ablation value, z_u sender u's output in this run. `SenderOutputs` keeps
the z_u and computes these sums.

Resumed runs (`EdgeForward.run_from`) may stack `copies` of one batch (ACDC's candidates), which
differ only from the resume layer on. Senders before it (`shared` of them) then come from the
resumed state, once for all copies: their part of every delta, and every ablation value's part,
is computed on `batch` rows and broadcast over the copies; only the senders this run computes
are stored and summed per copy. Nothing is copied from the resumed state.
"""

from __future__ import annotations

import torch


class SenderOutputs:
    """own: (copies * batch, pos, n_senders - shared, d_model), the senders this run computes;
    base: (batch, pos, >= shared, d_model) or None, the senders before `shared` (the same in
    every copy); ablated: (receiver, sender) 0/1 float mask or None; ablation: (batch or 1,
    pos, sender, d_model) values."""

    def __init__(
        self,
        own: torch.Tensor,
        base: torch.Tensor | None = None,
        shared: int = 0,
        copies: int = 1,
        ablated: torch.Tensor | None = None,
        ablation: torch.Tensor | None = None,
    ):
        self.own, self.base, self.shared, self.copies = own, base, shared, copies
        self.ablated, self.ablation = ablated, ablation
        self._prefix_base: torch.Tensor | None = None  # sum_u a_u (- base z_u): batch rows
        self._prefix_own: torch.Tensor | None = None  # sum_u z_u over own senders: all rows
        self._prefix_done = 0

    @classmethod
    def fresh(cls, like: torch.Tensor, n_senders: int, ablated=None, ablation=None, copies=1):
        """Empty outputs for a run from the start: like (copies * batch, pos, d_model)."""
        rows, pos, d_model = like.shape
        own = like.new_zeros(rows, pos, n_senders, d_model)
        return cls(own, copies=copies, ablated=ablated, ablation=ablation)

    @classmethod
    def resumed(cls, base: torch.Tensor, shared: int, copies: int, ablated=None, ablation=None):
        """Outputs of a run resumed after `shared` senders, for `copies` stacked batches."""
        batch, pos, n_senders, d_model = base.shape
        own = base.new_zeros(copies * batch, pos, n_senders - shared, d_model)
        return cls(own, base, shared, copies, ablated, ablation)

    # outputs --------------------------------------------------------------------------------------
    def store(self, senders: slice | int, value: torch.Tensor) -> None:
        if isinstance(senders, int):
            self.own[:, :, senders - self.shared] = value
        else:
            self.own[:, :, senders.start - self.shared : senders.stop - self.shared] = value

    def full(self) -> torch.Tensor:
        """(copies * batch, pos, sender, d_model): every sender's output in this run."""
        if not self.shared:
            return self.own
        base = self.base[:, :, : self.shared]
        if self.copies > 1:
            base = base.repeat(self.copies, 1, 1, 1)
        return torch.cat([base, self.own], dim=2)

    # deltas ---------------------------------------------------------------------------------------
    def delta(self, rows: slice | int, n_up: int) -> torch.Tensor | None:
        """sum over the ablated in-edges (u -> r) of (a_u - z_u), for each receiver r in `rows`:
        (copies * batch, pos, [receiver,] d_model), or None when nothing is ablated.

        Every sender before `n_up` feeds these receivers, so the same sum is also "all senders
        minus the kept ones": whichever side touches fewer senders is summed explicitly, and the
        all-senders total comes from running prefix sums. A small circuit (almost everything
        ablated) and a large one (almost nothing) both cost little beyond a plain forward."""
        mask = self.ablated[rows, :n_up]
        single = mask.dim() == 1
        if single:
            mask = mask[None]  # (receivers, senders)
        ablated_cols = mask.bool().any(dim=0)
        n_ablated = int(ablated_cols.sum())
        if n_ablated == 0:
            return None
        kept = 1.0 - mask
        kept_cols = kept.bool().any(dim=0)
        n_kept = int(kept_cols.sum())
        if n_kept < n_ablated:
            delta = self._prefix(n_up)[:, :, None, :]  # every sender ablated
            if n_kept:
                delta = delta - self._weighted(kept, kept_cols)
        else:
            delta = self._weighted(mask, ablated_cols)
        return delta[:, :, 0] if single else delta

    def _per_copy(self, shared: torch.Tensor | None, own: torch.Tensor | None) -> torch.Tensor:
        """shared (batch or 1, ...) broadcast over the copies, minus own (copies * batch, ...)."""
        if own is None:
            return shared.repeat(self.copies, *([1] * (shared.dim() - 1)))
        if shared is None:
            return -own
        stacked = own.unflatten(0, (self.copies, -1))
        return (shared - stacked).flatten(0, 1)

    def _weighted(self, weights: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """sum_u weights[r, u] (a_u - z_u) over the senders in `cols`: (rows, pos, r, d_model)."""
        index = cols.nonzero().squeeze(1)
        base_index, own_index = index[index < self.shared], index[index >= self.shared]
        shared = _weighted_sum(weights, self.ablation, index, weights.shape[1])
        if len(base_index):
            shared = shared - _weighted_sum(weights, self.base, base_index, self.shared)
        own = None
        if len(own_index):
            own_weights = weights[:, self.shared :]
            own_index = own_index - self.shared
            own = _weighted_sum(own_weights, self.own, own_index, own_weights.shape[1])
        return self._per_copy(shared, own)

    def _prefix(self, n_up: int) -> torch.Tensor:
        """sum over senders u < n_up of (a_u - z_u): (rows, pos, d_model), kept as running sums
        (receivers are visited in topological order, so `n_up` never decreases; a resumed run
        starts at the first receiver after its shared senders)."""
        done = self._prefix_done
        if n_up > done:
            added = self.ablation[:, :, done:n_up].sum(dim=2)
            if done < self.shared:
                added = added - self.base[:, :, done : min(n_up, self.shared)].sum(dim=2)
            self._prefix_base = added if self._prefix_base is None else self._prefix_base + added
            first = max(done, self.shared)
            if n_up > first:
                own = self.own[:, :, first - self.shared : n_up - self.shared].sum(dim=2)
                self._prefix_own = own if self._prefix_own is None else self._prefix_own + own
            self._prefix_done = n_up
        return self._per_copy(self._prefix_base, self._prefix_own)


def _weighted_sum(weights, values, index, n) -> torch.Tensor:
    """sum_u weights[:, u] values[:, :, u] over u in `index` (all n of them: views, no copy)."""
    if len(index) == n:
        return torch.matmul(weights[:, :n], values[:, :, :n])
    return torch.matmul(weights[:, index], values.index_select(2, index))


class NodeAblation:
    """Sender outputs replaced at masked (row, position) pairs.

    mask: (copies * batch, pos, sender) bool; ablation: (batch or 1, pos or 1, sender, d_model)
    values, the same for every copy (rows of `mask` are copy-major over the ablation's rows)."""

    def __init__(self, mask: torch.Tensor, ablation: torch.Tensor):
        self.mask, self.ablation = mask, ablation
        self.hit = mask.any(dim=1).any(dim=0).tolist()  # (sender,) any masked token

    def touches(self, senders: slice | int) -> bool:
        """Whether any sender in `senders` is masked anywhere."""
        if isinstance(senders, int):
            return bool(self.hit[senders])
        return any(self.hit[senders])

    def apply(self, senders: slice | int, value: torch.Tensor) -> torch.Tensor:
        """value: (rows, pos, d_model) for one sender, or (rows, pos, k, d_model) for the
        senders of a slice -> the same with the masked tokens replaced by their ablation."""
        if not self.touches(senders):
            return value
        columns = senders if isinstance(senders, slice) else slice(senders, senders + 1)
        mask = self.mask[:, :, columns, None]  # (rows, pos, k, 1)
        ablation = self.ablation[:, :, columns]  # (batch | 1, pos | 1, k, d_model)
        single = value.dim() == 3
        value = value[:, :, None] if single else value
        rows, batch = value.shape[0], ablation.shape[0]
        if batch in (1, rows):
            out = torch.where(mask, ablation.to(value.dtype), value)
        else:  # copies of the batch: (copies, batch, pos, k, d_model)
            shape = (rows // batch, batch)
            out = torch.where(
                mask.unflatten(0, shape), ablation.to(value.dtype), value.unflatten(0, shape)
            ).flatten(0, 1)
        return out[:, :, 0] if single else out
