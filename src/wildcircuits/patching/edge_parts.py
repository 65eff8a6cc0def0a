"""Pieces of the edge engine (`patching.edges`): run results, resume states, shared-input runs.

`EdgeRun` and `Resume` are what the engine returns. The rest serves layers whose q / k / v
receivers all read the same residual stream (gradient runs, and layers that no ablated edge
touches): the engine normalises that stream once and projects it once (`shared_projection`,
`shared_qkv`). Per-receiver gradients stay exact: a zero leaf on each receiver's projection
output gives dL/d(projection), and the receiver's input gradient is the projection's transpose
followed by the norm's vector-Jacobian product (`GradLeaf`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EdgeRun:
    """logits: (batch, vocab) at the requested positions; outputs: (batch, pos, sender, d_model)
    sender outputs of this run (None unless asked); receiver_grads: (batch, pos, receiver,
    d_model) gradient of the objective w.r.t. each receiver's input (gradient runs only);
    states: layer -> the residual stream (copies * batch, pos, d_model) entering each layer
    this run computed (runs with `record` only; `Resume` them where only later layers differ)."""

    logits: torch.Tensor
    outputs: torch.Tensor | None = None
    receiver_grads: torch.Tensor | None = None
    states: dict[int, torch.Tensor] | None = None


@dataclass(frozen=True)
class Resume:
    """A run's state at the start of `layer`: resid (batch, pos, d_model) entering the layer and
    outputs (batch, pos, sender, d_model) with every sender before the layer filled in (None
    for runs that keep no sender outputs: node-position masks without ablated edges).

    Edges into receivers at `layer` or later do not change anything before it, so candidate
    circuits that differ only there can all start from one `Resume` (ACDC)."""

    layer: int
    resid: torch.Tensor
    outputs: torch.Tensor | None


def shared_projection(w, group: int):
    """(weight (out, d_model), bias (out,) or None, group) projecting one shared input to q of
    every head, then k and v of every KV head: the model's own projections, concatenated."""
    d_model = w.w_q.shape[-1]
    k, v = w.w_k[::group], w.w_v[::group]  # one row per KV head
    weight = torch.cat([w.w_q, k, v]).reshape(-1, d_model)
    if w.b_q is None and w.b_k is None and w.b_v is None:
        return weight, None, group
    biases = [
        torch.zeros(t.shape[:2], dtype=t.dtype, device=t.device) if b is None else b
        for t, b in ((w.w_q, w.b_q), (k, None if w.b_k is None else w.b_k[::group]),
                     (v, None if w.b_v is None else w.b_v[::group]))
    ]  # fmt: skip
    return weight, torch.cat(biases).reshape(-1), group


def shared_qkv(normed: torch.Tensor, projection, n_heads: int, d_head: int) -> torch.Tensor:
    """q, k, v of every head from one shared normed input (batch, pos, d_model) ->
    (batch, pos, 3 * head, d_head); k / v are computed per KV head, then given to each query
    head that shares them, so each query head's k / v receiver gets its own gradient."""
    flat, flat_bias, group = projection
    out = normed @ flat.T  # (batch, pos, (head + 2 * kv_head) * d_head)
    out = out if flat_bias is None else out + flat_bias
    kv_width = (n_heads // group) * d_head
    q, k, v = out.split([n_heads * d_head, kv_width, kv_width], dim=-1)
    k, v = (t.unflatten(-1, (-1, d_head)).repeat_interleave(group, dim=2) for t in (k, v))
    return torch.cat([q.unflatten(-1, (n_heads, d_head)), k, v], dim=2)


@dataclass(frozen=True)
class GradLeaf:
    """A zero tensor added in a gradient run, whose gradient gives some receivers' gradients.

    Either added to the receivers' inputs (MLP, logits: its gradient is theirs), or, for a
    layer's q / k / v receivers, which all read the same residual `norm_input` in a gradient run,
    added to their projections (batch, pos, 3 * head, d_head). Receiver r's input then has the
    gradient J_norm(norm_input)^T W_r^T g_r: the projection's transpose, then the attention
    norm's vector-Jacobian product, batched over the receivers (`torch.func.vjp` + `vmap`, so
    any norm module works). Exact, and much cheaper than running the norm and the projection on
    3 * head copies of the residual stream and back."""

    tensor: torch.Tensor
    weight: torch.Tensor | None = None  # (3 * head, d_head, d_model)
    norm: torch.nn.Module | None = None
    norm_input: torch.Tensor | None = None  # (batch, pos, d_model)

    def receiver_grads(self, grad: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return grad
        through_proj = torch.einsum("bphd,hdm->bphm", grad, self.weight)  # (b, pos, 3*head, d)
        _, vjp = torch.func.vjp(self.norm, self.norm_input.detach())
        (per_receiver,) = torch.vmap(vjp, in_dims=2, out_dims=2)(through_proj)
        return per_receiver
