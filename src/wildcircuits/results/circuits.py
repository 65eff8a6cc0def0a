"""circuit.json (MIB format, as read by the report) and circuit_sizes.json (the size slider)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from wildcircuits.results.base import Result, register


@dataclass(frozen=True)
class Member:
    """One node or edge of a MIB circuit file: in the circuit or not, and its score if any."""

    in_graph: bool = False
    score: float | None = None


@register
@dataclass(frozen=True)
class CircuitFile(Result):
    """circuit.json: the selected circuit in MIB's format (`wildcircuits.graph.mib` writes it).

    An outside format: no schema version; `cfg` holds `n_layers n_heads parallel_attn_mlp
    d_model`; `edges` may list every edge of the graph or only some."""

    FILE: ClassVar[str] = "circuit.json"
    STEP: ClassVar[str] = "evaluate"
    SCHEMA: ClassVar[int | None] = None
    PROVENANCE: ClassVar[tuple[str, ...]] = ()

    cfg: dict[str, Any]
    nodes: dict[str, Member] = field(default_factory=dict)
    edges: dict[str, Member] = field(default_factory=dict)
    provenance: dict[str, Any] | None = None
    description: str | None = None

    def in_graph(self, which: str) -> list[str]:
        """Names of the nodes (`which="nodes"`) or edges in the circuit."""
        members = self.nodes if which == "nodes" else self.edges
        return [name for name, member in members.items() if member.in_graph]

    @property
    def n_heads(self) -> int:
        return int(self.cfg.get("n_heads", 1))


@dataclass(frozen=True)
class SizeEntry:
    """One slider size: the pruned circuit the method gives at `fraction` of the edges."""

    fraction: float | None
    n_edges: int
    edges: tuple[str, ...]
    faithfulness: float | None = None


@register
@dataclass(frozen=True)
class CircuitSizes(Result):
    """circuit_sizes.json: the slider's sizes (smallest first); `selected` indexes the one
    equal to circuit.json."""

    FILE: ClassVar[str] = "circuit_sizes.json"
    STEP: ClassVar[str] = "evaluate"

    provenance: dict[str, Any]
    sizes: tuple[SizeEntry, ...]
    selected: int | None = None
    ranking: str = "signed top-k, pruned"
