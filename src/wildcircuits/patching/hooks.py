"""Interventions: explicit, per-call changes to a site's value during one forward pass.

An intervention never mutates the model: it is a value handed to `InstrumentedModel.run`, applied
inside that call only, so nothing can leak into later calls (even after an exception).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

import torch

from wildcircuits.errors import InterventionError, SiteError
from wildcircuits.patching.sites import (
    ATTENTION_MAP_COMPONENTS,
    KV_HEAD_COMPONENTS,
    Component,
    Site,
    head_axis,
    position_axis,
)


class Mode(StrEnum):
    """How an intervention changes the selected part of a site."""

    REPLACE = "replace"  # value (tensor) or value(current) -> new
    ADD = "add"  # current + value
    ZERO = "zero"  # 0
    SCALE = "scale"  # current * value (float or tensor)


Value = torch.Tensor | float | Callable[[torch.Tensor], torch.Tensor] | None


@dataclass(frozen=True)
class Intervention:
    """Change `site` (restricted to its head / position, if set) by `mode` with `value`.

    For REPLACE and ADD, `value` is a tensor broadcastable to the selected slice, or a function
    from the selected slice to its replacement (REPLACE) / addend (ADD). SCALE takes a number or
    tensor; ZERO takes no value.
    """

    site: Site
    mode: Mode = Mode.REPLACE
    value: Value = None

    def __post_init__(self) -> None:
        if not isinstance(self.mode, Mode):
            object.__setattr__(self, "mode", Mode(self.mode))
        if self.mode is Mode.ZERO and self.value is not None:
            raise InterventionError(f"{self.site}: mode 'zero' takes no value")
        if self.mode is not Mode.ZERO and self.value is None:
            raise InterventionError(f"{self.site}: mode {self.mode.value!r} needs a value")


def replace(site: Site, value: Value) -> Intervention:
    """Shorthand for a REPLACE intervention."""
    return Intervention(site, Mode.REPLACE, value)


def selection_index(site: Site, ndim: int) -> tuple[slice | int, ...]:
    """Index selecting the site's head / position from the component's full value."""
    index: list[slice | int] = [slice(None)] * ndim
    if site.head is not None:
        index[head_axis(site.component)] = site.head
    if site.position is not None:
        index[position_axis(site.component)] = site.position
    return tuple(index)


def apply_interventions(value: torch.Tensor, interventions: Iterable[Intervention]) -> torch.Tensor:
    """Return `value` with every intervention applied in order (out of place)."""
    for intervention in interventions:
        index = selection_index(intervention.site, value.ndim)
        current = value[index]
        new = _changed(intervention, current)
        value = value.clone()
        value[index] = new
    return value


def _changed(intervention: Intervention, current: torch.Tensor) -> torch.Tensor:
    mode, raw = intervention.mode, intervention.value
    if mode is Mode.ZERO:
        return torch.zeros_like(current)
    operand = raw(current) if callable(raw) else raw
    if not isinstance(operand, torch.Tensor):
        operand = torch.as_tensor(operand, dtype=current.dtype, device=current.device)
    _check_shape(intervention.site, operand, current)
    operand = operand.to(device=current.device, dtype=current.dtype)
    if mode is Mode.REPLACE:
        return operand.expand_as(current)
    if mode is Mode.ADD:
        return current + operand
    return current * operand


def _check_shape(site: Site, operand: torch.Tensor, current: torch.Tensor) -> None:
    try:
        broadcast = torch.broadcast_shapes(operand.shape, current.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != current.shape:
        raise InterventionError(
            f"value for {site} has shape {tuple(operand.shape)}; expected {tuple(current.shape)} "
            "(or a shape that broadcasts to it)"
        )


def check_site(site: Site, n_layers: int, n_heads: int, n_kv_heads: int, seq_len: int) -> None:
    """Raise `SiteError` when the site's layer, head or position is out of range."""
    if site.layer is not None and not 0 <= site.layer < n_layers:
        raise SiteError(f"{site}: layer {site.layer} out of range; valid layers 0..{n_layers - 1}")
    if site.head is not None:
        limit = n_kv_heads if site.component in KV_HEAD_COMPONENTS else n_heads
        kind = "KV heads" if site.component in KV_HEAD_COMPONENTS else "heads"
        if not 0 <= site.head < limit:
            raise SiteError(f"{site}: head {site.head} out of range; valid {kind} 0..{limit - 1}")
    if site.position is not None and not -seq_len <= site.position < seq_len:
        raise SiteError(
            f"{site}: position {site.position} past the sequence; valid positions "
            f"{-seq_len}..{seq_len - 1} for this batch of length {seq_len}"
        )


def is_attention_map(component: Component) -> bool:
    return component in ATTENTION_MAP_COMPONENTS
