"""Norms with their scale frozen from a run: the linearisation that direct attribution needs.

A norm is linear in its input once its scale is fixed:

- RMSNorm (Llama, Qwen2):  norm(x) = x * s(x) * w,            s(x) = 1 / sqrt(mean(x^2) + eps)
- Gemma3 RMSNorm:          norm(x) = x * s(x) * (1 + w)
- LayerNorm (GPT-2, NeoX): norm(x) = (x - mean(x)) * s(x) * w + b,  s(x) = 1 / sqrt(var(x) + eps)

Freezing s at its value on the run's own input x gives a linear map L with L(x) + b = norm(x)
exactly, so for x = sum of parts, norm(x) = sum of L(part) + b: the parts of a residual stream can
each be pushed through the norm. `freeze_norm` checks this identity against the real module on
every call, so an unknown norm raises instead of giving silently wrong attributions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from wildcircuits.errors import UnsupportedArchitectureError

#: Tolerance of the check that the frozen norm reproduces the module (fp32 rounding).
CHECK_ATOL = 1e-4
CHECK_RTOL = 1e-4


@dataclass(frozen=True)
class FrozenNorm:
    """A norm with its per-row scale fixed: `linear(part)` for each part, plus `bias` once.

    scale: (rows,) one scale per input row; weight: (d_model,) the effective weight (Gemma: 1 + w);
    bias: (d_model,) or None; centre: subtract the mean first (LayerNorm).
    """

    scale: Float[Tensor, " rows"]
    weight: Float[Tensor, " d_model"]
    bias: Float[Tensor, " d_model"] | None
    centre: bool

    def linear(
        self, part: Float[Tensor, "rows *any d_model"]
    ) -> Float[Tensor, "rows *any d_model"]:
        """The frozen norm's linear part applied to one additive part of the input."""
        if self.centre:
            part = part - part.mean(-1, keepdim=True)
        scale = self.scale.view(-1, *([1] * (part.ndim - 1)))  # (rows, 1, ..., 1)
        return part * scale * self.weight

    def constant(self) -> Float[Tensor, " d_model"]:
        """The norm's output bias (zeros if it has none)."""
        return self.bias if self.bias is not None else torch.zeros_like(self.weight)

    def __call__(self, x: Float[Tensor, "rows d_model"]) -> Float[Tensor, "rows d_model"]:
        return self.linear(x) + self.constant()


def _eps(module: nn.Module) -> float:
    for name in ("variance_epsilon", "eps"):
        if hasattr(module, name):
            return float(getattr(module, name))
    raise UnsupportedArchitectureError(
        f"{type(module).__name__}: cannot find the norm's epsilon (variance_epsilon or eps); "
        "supported norms: nn.LayerNorm, Llama/Qwen2 RMSNorm, Gemma3 RMSNorm"
    )


def freeze_norm(module: nn.Module, x: Float[Tensor, "rows d_model"]) -> FrozenNorm:
    """The norm `module` with its scale frozen at its value on input rows `x`.

    Raises if the frozen form does not reproduce `module(x)` (an unsupported norm).
    """
    x32 = x.float()
    eps = _eps(module)
    if isinstance(module, nn.LayerNorm):
        scale = torch.rsqrt(x32.var(-1, unbiased=False) + eps)
        weight = module.weight if module.weight is not None else torch.ones_like(x32[0])
        frozen = FrozenNorm(scale, weight.float(), _float(module.bias), centre=True)
    else:
        scale = torch.rsqrt(x32.pow(2).mean(-1) + eps)
        offset = 1.0 if type(module).__name__.startswith("Gemma") else 0.0
        frozen = FrozenNorm(scale, module.weight.float() + offset, None, centre=False)
    _check(module, x, frozen)
    return frozen


def _float(bias: Tensor | None) -> Tensor | None:
    return None if bias is None else bias.float()


def _check(module: nn.Module, x: Tensor, frozen: FrozenNorm) -> None:
    expected = module(x).float()
    got = frozen(x.float())
    if not torch.allclose(got, expected, atol=CHECK_ATOL, rtol=CHECK_RTOL):
        error = float((got - expected).abs().max())
        raise UnsupportedArchitectureError(
            f"{type(module).__name__}: the frozen-scale linearisation does not reproduce the "
            f"module (max error {error:.2e}); supported norms: nn.LayerNorm, Llama/Qwen2 "
            "RMSNorm, Gemma3 RMSNorm"
        )
