"""Count the forward passes a piece of work runs, as a measure of its cost that does not depend on
the machine or its load.

Every engine (plain runs, activation, path and edge patching, attribution) runs the model's own
MLP modules, so a forward hook on each layer's MLP sees every row and every token position that
goes through that layer. A *prompt-forward* is one prompt through every layer and a
*token-forward* one token position through every layer: a partial forward (one that starts at a
later layer, or runs only the columns after a shared prefix) counts by the layers and positions
it runs. Backward passes are not counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from wildcircuits.models.instrumented import InstrumentedModel


@dataclass
class ForwardCount:
    """Rows and token positions through the MLP modules, summed over layers (it grows while
    attached: inside a `count_forwards` block, or for good after `attach_counter`)."""

    n_layers: int
    rows: int = 0
    tokens: int = 0

    @property
    def prompt_forwards(self) -> float:
        return self.rows / self.n_layers

    @property
    def token_forwards(self) -> float:
        return self.tokens / self.n_layers

    def hook(self, module, inputs, output) -> None:
        """A forward hook for an MLP module (`attach_counter`)."""
        x = inputs[0]  # (batch, pos, d_model), or (rows, d_model) where an engine flattens
        self.rows += int(x.shape[0])
        self.tokens += int(x.shape[:-1].numel())


def attach_counter(model: InstrumentedModel, count: ForwardCount) -> list:
    """Hook `count` onto every layer's MLP module for good (benchmarks count a whole run this
    way); returns the handles. `count_forwards` is the scoped form."""
    from wildcircuits.models.adapters import get_module

    handles = []
    try:
        for layer in range(model.n_layers):
            module = get_module(model.layer_module(layer), model.adapter.mlp)
            handles.append(module.register_forward_hook(count.hook))
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    return handles


@contextmanager
def count_forwards(model: InstrumentedModel) -> Iterator[ForwardCount]:
    """Count what runs through `model` inside the block; the hooks are removed on the way out,
    an exception included."""
    count = ForwardCount(n_layers=model.n_layers)
    handles = attach_counter(model, count)
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()
