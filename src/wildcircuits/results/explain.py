"""explanation.json (the explain step): a compact circuit of components at positions, the
functional classes of its heads, the measured class-to-class paths and the backup heads.

Names: a component is written in the display form (`L3.H2`, `L3.mlp`); a position is one of the
task's named positions (`IO`, `S1`, `S2`, `END`, ...) or `other` (every unnamed position, pooled).
A (component, position) pair is written `L3.H2@END` (`wildcircuits.names.format_pair`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from wildcircuits.results.base import Result, register


@dataclass(frozen=True)
class Pair:
    """One component at one named position (or `other`)."""

    node: str
    position: str

    @property
    def name(self) -> str:
        return f"{self.node}@{self.position}"


@dataclass(frozen=True)
class PairScore:
    """A candidate pair: its attribution estimate and, where it was evaluated exactly, the
    normalized faithfulness lost when only it is removed from the full model."""

    pair: Pair
    attribution: float
    exact: float | None = None


@dataclass(frozen=True)
class AblationFaithfulness:
    """The compact circuit's normalized faithfulness under one ablation (`AblationSpec.format`),
    on the split it was measured on, with the three batch-mean metrics behind it; `interval`: a
    (low, high) bootstrap interval over prompts where one was computed."""

    ablation: str
    faithfulness: float
    m_circuit: float
    m_full: float
    m_empty: float
    split: str
    n_prompts: int
    interval: tuple[float, ...] | None = None


@dataclass(frozen=True)
class SearchStep:
    """One point of the search: how many pairs, and the faithfulness then (search split, search
    ablation); extra: the values under the extra ablations, in order, up to the first that
    missed the search target (empty where the search ablation missed it); evaluated: False
    where the same set of pairs was evaluated at an earlier step (its values are that step's,
    and no forward was run)."""

    n_pairs: int
    faithfulness: float
    action: str  # "add L3.H2@END" / "drop L3.H2@END"
    evaluated: bool = True
    extra: tuple[float, ...] = ()


@dataclass(frozen=True)
class PositionCircuit:
    """The smallest set of pairs found whose circuit reaches `target` faithfulness.

    reached: whether every held-out faithfulness is within 1 - target of 1; search_target:
    what the search required on its own split under every ablation
    (`position_search.search_target`; None in files written before it had a margin: the search
    then required `target` under the first ablation alone); searched_under: the ablations the
    circuit reached the search target under on the search split (every one, or the first
    alone where no prefix reached it under all; empty: not even the first, the circuit is every
    candidate; None: not recorded); faithfulness: one entry per
    ablation (counterfactual first); candidates: the ranked pairs the search drew from;
    forwards: patched forwards run (search + evaluation); naive_forwards: what one forward per
    candidate pair at each search step would have cost; seconds: wall time of the search."""

    pairs: tuple[Pair, ...]
    target: float
    reached: bool
    faithfulness: tuple[AblationFaithfulness, ...]
    n_heads: int
    n_mlps: int
    search: tuple[SearchStep, ...] = ()
    candidates: tuple[PairScore, ...] = ()
    forwards: int = 0
    naive_forwards: int = 0
    seconds: float = 0.0
    search_target: float | None = None
    searched_under: tuple[str, ...] | None = None


@dataclass(frozen=True)
class HeadClass:
    """A functional class of heads: a name, the IOI paper's class it matches (or None), its
    members at positions, one sentence stating the evidence, and the numbers behind it (e.g.
    `attention_to_S2`, `direct_effect`, `copying`, `path_to_name_mover_q`)."""

    name: str
    paper_class: str | None
    members: tuple[Pair, ...]
    sentence: str
    evidence: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClassPath:
    """A measured arrow: path patching from every member of `sender` (a class name) into
    `receiver` (a class name, or `logits`) through `slot` (q / k / v / in / logits) at the
    receiver's position; `effect` is the normalized path effect (1 = the whole clean-vs-
    corrupted difference)."""

    sender: str
    receiver: str
    slot: str
    position: str
    effect: float
    interval: tuple[float, ...] | None = None


@dataclass(frozen=True)
class BackupHead:
    """A head whose direct effect rises when `knocked_out` is removed."""

    node: str
    direct_before: float
    direct_after: float


@dataclass(frozen=True)
class Backup:
    """Knock out one class (the main writer) and measure which heads take over: `restored` is
    the fraction of the knocked-out class's direct effect that the rise of `heads` restores."""

    knocked_out: str
    heads: tuple[BackupHead, ...]
    restored: float
    knocked_out_effect: float


@register
@dataclass(frozen=True)
class Explanation(Result):
    """explanation.json (the explain step): the compact circuit of components at positions,
    its functional classes and unexplained pairs, the measured class paths, the backup heads
    and the algorithm in words."""

    FILE: ClassVar[str] = "explanation.json"
    STEP: ClassVar[str] = "explain"

    provenance: dict[str, Any]
    circuit: PositionCircuit
    classes: tuple[HeadClass, ...]
    unexplained: tuple[Pair, ...]
    paths: tuple[ClassPath, ...]
    backup: Backup | None
    algorithm: tuple[str, ...]

    def _repr_html_(self) -> str:
        """In a notebook: the class diagram, the class sentences and the algorithm."""
        from wildcircuits.report.explain_view import explanation_html

        return explanation_html(self)
