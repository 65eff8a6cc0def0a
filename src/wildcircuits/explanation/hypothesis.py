"""The drafted hypothesis (RUN_DIR/hypothesis.yaml): the file a person edits and `verify` tests.

A hypothesis names the circuit's functional classes (each with its members at positions and
what its output is claimed to depend on: the tokens at named positions and the outputs of other
classes), the claimed class-to-class paths (sender class -> receiver class or the logits, through
a slot, at the receiver's position) and the circuit members no class explains. The schema, an
example and every error are in docs/hypothesis.md.

- `hypothesis_from_explanation(explanation, task, model)`: the draft from an explain result
  (rules in `DRAFT_RULES`);
- `write_hypothesis(path, hypothesis)`: atomic, commented YAML (a header says what each key is);
- `load_hypothesis(path, shape=None, positions=None)` (in `hypothesis_check`, re-exported
  here): the safe loader; a malformed or inconsistent file is a `HypothesisFileError` naming the
  file, the line and the problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from wildcircuits.errors import WildcircuitsError
from wildcircuits.results.explain import Explanation, HeadClass, Pair
from wildcircuits.results.io import atomic_write_bytes

#: The schema version this code writes and reads.
VERSION = 1
#: The receiver name of a path into the model's output.
LOGITS = "logits"
#: The IOI paper's seven classes (Wang et al. 2022); `paper_class` is one of these or null.
PAPER_CLASSES = (
    "name mover",
    "negative name mover",
    "backup name mover",
    "S-inhibition",
    "induction",
    "duplicate token",
    "previous token",
)


class HypothesisFileError(WildcircuitsError):
    """A hypothesis file that cannot be read, is malformed or is inconsistent (names the line)."""


class PathSlot(StrEnum):
    """Where a claimed path enters its receiver: a head class's query, key or value input, an
    MLP class's input, or the logits."""

    Q = "q"
    K = "k"
    V = "v"
    IN = "in"
    LOGITS = "logits"


@dataclass(frozen=True)
class Dependence:
    """What a class's output is claimed to depend on: the tokens at these named positions and
    the outputs of these classes (everything else may be resampled freely)."""

    positions: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClaimedClass:
    """One functional class: a unique name, the IOI paper's class (or None), its members at
    positions, its dependence and a note (the evidence in words; not tested)."""

    name: str
    paper_class: str | None
    members: tuple[Pair, ...]
    depends_on: Dependence = field(default_factory=Dependence)
    note: str = ""


@dataclass(frozen=True)
class ClaimedPath:
    """A claimed arrow: every member of class `sender` -> `receiver` (a class or `logits`)
    through `slot`, at the receiver's `positions` (one, or every position where the receiver
    has members, as the path was measured); `effect` is what was measured (not tested)."""

    sender: str
    receiver: str
    slot: PathSlot
    positions: tuple[str, ...]
    effect: float | None = None


@dataclass(frozen=True)
class Hypothesis:
    """The whole hypothesis; the circuit it claims is every class member plus `unexplained`."""

    task: str
    model: str
    classes: tuple[ClaimedClass, ...]
    paths: tuple[ClaimedPath, ...] = ()
    unexplained: tuple[Pair, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION

    def pairs(self) -> tuple[Pair, ...]:
        """Every (component, position) pair of the claimed circuit, classes first."""
        return tuple(p for c in self.classes for p in c.members) + self.unexplained

    def class_named(self, name: str) -> ClaimedClass:
        for claimed in self.classes:
            if claimed.name == name:
                return claimed
        raise HypothesisFileError(
            f"the hypothesis has no class {name!r}; its classes are "
            f"{', '.join(c.name for c in self.classes) or 'none'}"
        )

    def paths_into(self, receiver: str) -> tuple[ClaimedPath, ...]:
        """The claimed paths whose receiver is `receiver` (a class name or `logits`)."""
        return tuple(p for p in self.paths if p.receiver == receiver)


# drafting from an explanation ------------------------------------------------------------------
@dataclass(frozen=True)
class DraftRules:
    """How `hypothesis_from_explanation` turns measurements into claims.

    min_path_effect: a measured class path becomes a claimed path when |effect| is at least
    this (normalized: 1 = the whole clean-vs-corrupted difference); min_attention: a class
    depends on the token at a named position when its members' mean attention from their
    position to it (evidence `attention_to_<NAME>`) is at least this. A class whose query (or,
    for MLPs, input) no claimed path feeds also depends on the tokens at its members' own
    positions; it depends on the classes of every claimed path into it, and so on the tokens
    those classes depend on (closed over the class graph: a class that reads "MLPs at O"
    depends on the token at O; causal scrubbing resamples a class's senders relative to the
    class's own resample, so a position left out there would be resampled for them too)."""

    min_path_effect: float = 0.05
    min_attention: float = 0.3


DRAFT_RULES = DraftRules()


def hypothesis_from_explanation(
    explanation: Explanation, task: str, model: str, rules: DraftRules = DRAFT_RULES
) -> Hypothesis:
    """The draft hypothesis an explanation supports: its classes, its measured paths with
    |effect| >= `rules.min_path_effect`, each class depending on the positions it attends to
    and on the classes of its claimed incoming paths."""
    names = {c.name for c in explanation.classes}
    paths = tuple(
        ClaimedPath(
            p.sender, p.receiver, PathSlot(p.slot), _positions(p.position), _finite(p.effect)
        )
        for p in explanation.paths
        if p.sender in names
        and (p.receiver in names or p.receiver == LOGITS)
        and abs(p.effect) >= rules.min_path_effect
    )
    classes = _closed(tuple(_claimed_class(c, paths, rules) for c in explanation.classes))
    members = {p for c in classes for p in c.members}
    unexplained = tuple(p for p in explanation.circuit.pairs if p not in members)
    unexplained += tuple(
        p for p in explanation.unexplained if p not in members and p not in unexplained
    )
    return Hypothesis(
        task=task,
        model=model,
        classes=classes,
        paths=paths,
        unexplained=unexplained,
        provenance=_draft_provenance(explanation, rules),
    )


def _positions(text: str) -> tuple[str, ...]:
    """A measured path's position: one name, or several joined by commas."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _claimed_class(head_class: HeadClass, paths: tuple[ClaimedPath, ...], rules) -> ClaimedClass:
    attended = [
        key.removeprefix("attention_to_")
        for key, value in head_class.evidence.items()
        if key.startswith("attention_to_") and value >= rules.min_attention
    ]
    into = [p for p in paths if p.receiver == head_class.name]
    own = list(dict.fromkeys(p.position for p in head_class.members))
    fed_query = any(p.slot in (PathSlot.Q, PathSlot.IN) for p in into)
    positions = dict.fromkeys([*attended, *([] if fed_query else own)])
    return ClaimedClass(
        name=head_class.name,
        paper_class=head_class.paper_class if head_class.paper_class in PAPER_CLASSES else None,
        members=tuple(head_class.members),
        depends_on=Dependence(tuple(positions), tuple(dict.fromkeys(p.sender for p in into))),
        note=head_class.sentence,
    )


def _closed(classes: tuple[ClaimedClass, ...]) -> tuple[ClaimedClass, ...]:
    """Each class's depends_on positions followed by those of every class it depends on,
    transitively (a cycle of classes ends: a position is added once)."""
    positions = {c.name: list(c.depends_on.positions) for c in classes}
    changed = True
    while changed:
        changed = False
        for c in classes:
            for sender in c.depends_on.classes:
                new = [p for p in positions[sender] if p not in positions[c.name]]
                positions[c.name] += new
                changed = changed or bool(new)
    return tuple(
        replace(c, depends_on=replace(c.depends_on, positions=tuple(positions[c.name])))
        for c in classes
    )


def _draft_provenance(explanation: Explanation, rules: DraftRules) -> dict[str, Any]:
    plain = {
        k: v
        for k, v in explanation.provenance.items()
        if isinstance(v, str | int | float | bool) or v is None
    }
    faithfulness = {
        f.ablation: round(float(f.faithfulness), 4) for f in explanation.circuit.faithfulness
    }
    return {
        **plain,
        "source": "explanation.json",
        "circuit_faithfulness": faithfulness,
        "min_path_effect": rules.min_path_effect,
        "min_attention": rules.min_attention,
    }


# writing -----------------------------------------------------------------------------------------
HEADER = """\
# wildcircuits hypothesis: what the circuit is claimed to do (schema: docs/hypothesis.md).
# Edit it (move a member, drop a path, change a dependency) and test it again with
# `wildcircuits verify`. Keys:
#   version      schema version of this file ({version})
#   task, model  the task and model the claims are about
#   classes      the functional classes; each has
#     name         a unique name (not `logits`), used by paths and depends_on
#     paper_class  the IOI paper's class it matches, or null; one of
#                  {paper}
#     members      components at positions: L<layer>.H<head>@POS or L<layer>.mlp@POS
#     depends_on   what the class's output is claimed to depend on:
#       positions    the tokens at these named positions
#       classes      the outputs of these classes
#     note         the evidence in words (not tested)
#   unexplained  circuit members no class explains (in the circuit, no claim about them)
#   paths        claimed arrows: from CLASS, to CLASS or logits, slot q / k / v (a head
#                class's query / key / value input), in (an MLP class's input) or logits,
#                position (the receiver's: one, or a list), effect (the measured path
#                effect; not tested)
#   provenance   how this draft was obtained (not tested)
# Positions: the task's named positions ({positions}); `other` pools every unnamed one.
"""


def _flow(value: Any) -> str:
    """One YAML value on one line (strings quoted where YAML needs it)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def hypothesis_yaml(h: Hypothesis, positions: tuple[str, ...] = ()) -> str:
    """The commented YAML text of `h` (`load_hypothesis` reads it back equal)."""
    paper = ", ".join(PAPER_CLASSES)
    known = ", ".join(positions) if positions else "e.g. IO, S1, S1+1, S2, END, other"
    lines = [HEADER.format(version=h.version, paper=paper, positions=known).rstrip("\n")]
    lines += [f"version: {h.version}", f"task: {_flow(h.task)}", f"model: {_flow(h.model)}"]
    lines.append("classes:" + ("" if h.classes else " []"))
    for c in h.classes:
        lines += [
            f"  - name: {_flow(c.name)}",
            f"    paper_class: {_flow(c.paper_class)}",
            f"    members: {_flow([p.name for p in c.members])}",
            "    depends_on:",
            f"      positions: {_flow(list(c.depends_on.positions))}",
            f"      classes: {_flow(list(c.depends_on.classes))}",
            f"    note: {_flow(c.note)}",
        ]
    lines.append(f"unexplained: {_flow([p.name for p in h.unexplained])}")
    lines.append("paths:" + ("" if h.paths else " []"))
    for p in h.paths:
        lines += [
            f"  - from: {_flow(p.sender)}",
            f"    to: {_flow(p.receiver)}",
            f"    slot: {p.slot.value}",
            f"    position: {_flow(_one_or_list(p.positions))}",
            f"    effect: {_flow(p.effect)}",
        ]
    lines.append("provenance:" + ("" if h.provenance else " {}"))
    lines += [f"  {_flow(str(k))}: {_flow(v)}" for k, v in h.provenance.items()]
    return "\n".join(lines) + "\n"


def _one_or_list(names: tuple[str, ...]) -> str | list[str]:
    return names[0] if len(names) == 1 else list(names)


def write_hypothesis(path: Path | str, h: Hypothesis, positions: tuple[str, ...] = ()) -> Path:
    """Write `h` atomically as commented YAML; `positions`: the task's position names, listed
    in the header for the person editing it."""
    return atomic_write_bytes(path, hypothesis_yaml(h, positions).encode("utf-8"))


def load_hypothesis(path: Path | str, shape=None, positions=None) -> Hypothesis:
    """Read and check a hypothesis file (see `hypothesis_check.load_hypothesis`)."""
    from wildcircuits.explanation.hypothesis_check import load_hypothesis as load

    return load(path, shape, positions)
