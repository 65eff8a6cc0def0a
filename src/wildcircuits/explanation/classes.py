"""Functional classes of a compact circuit's heads, assigned by rules on measured evidence.

Evidence per pair: `explain.evidence.head_evidence`. The rules, in order (a = thresholds.attention,
d = thresholds.direct, c = thresholds.copying, p = thresholds.path; "attends to N": mean
attention to N >= a; first match wins):
1. name mover: at END, attends to IO, direct_fraction >= d, copying >= c.
2. negative name mover: at END, attends to IO, direct_fraction <= -d, copying <= -c.
3. induction: at S2, attends to S1+1 (more than to S1).
4. duplicate token: at S2, attends to S1.
5. previous token: at S1+1, attends to S1.
6. S-inhibition: at END, attends to S1 and S2 together (summed attention >= a), and its path
   effect into the name movers' q (patched together) is >= p.
7. backup name mover: at END, and `backup.find_backup` (name movers knocked out) finds its
   direct effect rises.
Descriptive classes (any task; M = the metric position's name, e.g. END):
8. "writes the answer at M" / "writes against the answer at M": at M, |direct_fraction| >= d.
9. "moves <N> to <R> <slot>": its largest path effect into the member heads at position R
   (patched together) through slot is >= p; N is the named position it attends to most if that
   attention is >= a, else "other positions".
Path effects into member heads (rules 6 and 9) are measured only for the head pairs those rules
may label (`measure_evidence`).
A head matching none is unexplained (never forced into a class). MLP pairs form one class per
position, "MLPs at <position>" (paper_class None).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from wildcircuits.explanation.evidence import head_evidence, position_masks
from wildcircuits.explanation.pair_paths import group_position, path_key
from wildcircuits.explanation.thresholds import THRESHOLDS, ClassThresholds
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.names import parse_display_node
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.results.explain import HeadClass, Pair, PositionCircuit

NAME_MOVER = "name mover"
NEGATIVE_NAME_MOVER = "negative name mover"
BACKUP_NAME_MOVER = "backup name mover"
S_INHIBITION = "S-inhibition"
INDUCTION = "induction"
DUPLICATE_TOKEN = "duplicate token"
PREVIOUS_TOKEN = "previous token"
PAPER_CLASSES = (NAME_MOVER, NEGATIVE_NAME_MOVER, BACKUP_NAME_MOVER, S_INHIBITION, INDUCTION,
                 DUPLICATE_TOKEN, PREVIOUS_TOKEN)  # fmt: skip


Evidence = Mapping[str, Mapping[str, float]]
Label = tuple[str, str | None]  # (class name, paper class)


def metric_position(problem: PatchingProblem) -> str:
    """The name of the position the metric reads (e.g. END; a loss task's `LOSS`)."""
    metric = problem.metric_tokens()
    for name, mask in position_masks(problem).items():
        if bool((mask.to(metric.device) | ~metric).all()):  # every metric token is `name`
            return name
    return "other"


def _get(values: Mapping[str, float], key: str) -> float:
    value = values.get(key, float("nan"))
    return value if value == value else float("nan")  # NaN compares False in every rule


def _ge(values: Mapping[str, float], key: str, limit: float) -> bool:
    return _get(values, key) >= limit


def paper_label(pair: Pair, values: Mapping[str, float], t: ClassThresholds) -> str | None:
    """Rules 1-5 (evidence of the pair alone)."""
    pos, att = pair.position, lambda name: _get(values, f"attention_to_{name}")
    if pos == "END" and att("IO") >= t.attention:
        if _ge(values, "direct_fraction", t.direct) and _ge(values, "copying", t.copying):
            return NAME_MOVER
        if _get(values, "direct_fraction") <= -t.direct and _get(values, "copying") <= -t.copying:
            return NEGATIVE_NAME_MOVER
    if pos == "S2" and att("S1+1") >= t.attention and att("S1+1") > att("S1"):
        return INDUCTION
    if pos == "S2" and att("S1") >= t.attention:
        return DUPLICATE_TOKEN
    if pos == "S1+1" and att("S1") >= t.attention:
        return PREVIOUS_TOKEN
    return None


def receiver_paths(values: Mapping[str, float]) -> dict[tuple[str, str], float]:
    """Path effects into the member heads at each position, per (receiver position, slot)."""
    out: dict[tuple[str, str], float] = {}
    for key, value in values.items():
        if (where := group_position(key)) is not None:
            out[where] = value
    return out


def descriptive_label(pair: Pair, values: Mapping[str, float], metric: str,
                      t: ClassThresholds) -> str | None:  # fmt: skip
    """Rules 8-9."""
    direct = _get(values, "direct_fraction")
    if pair.position == metric and abs(direct) >= t.direct:
        return f"writes {'the' if direct > 0 else 'against the'} answer at {metric}"
    paths = receiver_paths(values)
    if not paths:
        return None
    (position, slot), best = max(paths.items(), key=lambda item: abs(item[1]))
    if abs(best) < t.path:
        return None
    return f"moves {_attended(values, t)} to {position} {slot}"


def _attended(values: Mapping[str, float], t: ClassThresholds) -> str:
    named = {k[len("attention_to_") :]: v for k, v in values.items()
             if k.startswith("attention_to_") and k != "attention_to_other"}  # fmt: skip
    name, best = max(named.items(), key=lambda item: item[1], default=("", 0.0))
    return name if best >= t.attention else "other positions"


def label_pairs(
    pairs: Sequence[Pair],
    evidence: Evidence,
    metric: str,
    t: ClassThresholds = THRESHOLDS,
    backup_nodes: frozenset[str] = frozenset(),
) -> dict[str, Label]:
    """Each labelled pair's (class name, paper class); unlabelled pairs are left out."""
    labels: dict[str, Label] = {}
    heads = [p for p in pairs if parse_display_node(p.node).kind.value == "head"]
    for pair in pairs:
        if pair not in heads:
            labels[pair.name] = (f"MLPs at {pair.position}", None)
        elif (paper := paper_label(pair, evidence[pair.name], t)) is not None:
            labels[pair.name] = (paper, paper)
    movers = [p.name for p in heads if labels.get(p.name, ("", None))[1] == NAME_MOVER]
    for pair in (p for p in heads if p.name not in labels):
        values = evidence[pair.name]
        if _s_inhibition(pair, values, movers, t):
            labels[pair.name] = (S_INHIBITION, S_INHIBITION)
        elif pair.position == "END" and movers and pair.node in backup_nodes:
            labels[pair.name] = (BACKUP_NAME_MOVER, BACKUP_NAME_MOVER)
        elif (name := descriptive_label(pair, values, metric, t)) is not None:
            labels[pair.name] = (name, None)
    return labels


def _s_inhibition(pair: Pair, values, movers: Sequence[str], t: ClassThresholds) -> bool:
    if pair.position != "END" or not movers:
        return False
    attention = _get(values, "attention_to_S1") + _get(values, "attention_to_S2")
    into_movers = values.get(path_key(NAME_MOVER, "q"), 0.0)
    return attention >= t.attention and into_movers >= t.path


def classify(
    model: InstrumentedModel,
    problem: PatchingProblem,
    circuit: PositionCircuit,
    progress: bool = True,
    *,
    thresholds: ClassThresholds = THRESHOLDS,
    evidence: Evidence | None = None,
) -> tuple[tuple[HeadClass, ...], tuple[Pair, ...]]:
    """The circuit's classes (ordered by mean layer) and its unexplained head pairs.

    evidence: `head_evidence` of the circuit's pairs, if already measured."""
    from wildcircuits.explanation.backup import find_backup

    pairs = circuit.pairs
    if evidence is None:
        evidence = measure_evidence(model, problem, pairs, thresholds, progress)
    metric = metric_position(problem)
    labels = label_pairs(pairs, evidence, metric, thresholds)
    backup_nodes: frozenset[str] = frozenset()
    if any(paper == NAME_MOVER for _, paper in labels.values()):
        first = build_classes(pairs, evidence, labels, thresholds)
        backup = find_backup(model, problem, first, thresholds=thresholds)
        backup_nodes = frozenset(h.node for h in backup.heads) if backup else frozenset()
        labels = label_pairs(pairs, evidence, metric, thresholds, backup_nodes)
    classes = build_classes(pairs, evidence, labels, thresholds)
    unexplained = tuple(p for p in pairs if p.name not in labels)
    return classes, unexplained


def measure_evidence(
    model: InstrumentedModel,
    problem: PatchingProblem,
    pairs: Sequence[Pair],
    thresholds: ClassThresholds = THRESHOLDS,
    progress: bool = True,
) -> Evidence:
    """`head_evidence` of the pairs, with path patching into member heads only from the head
    pairs that rules 6 and 9 may label, the only rules that read those numbers (a class's
    sentence states the class diagram's measured arrows, `sentences.with_arrows`): pairs rules
    1-5 leave unlabelled, except those rule 8 labels when rule 6 cannot apply first. Receivers:
    the member heads at each position (rule 9) and the name movers (rule 6), each group
    patched jointly (`pair_paths`)."""
    from wildcircuits.explanation.evidence import path_only_evidence

    evidence = head_evidence(model, problem, pairs, progress, slots=())  # logits paths only
    heads = [p for p in pairs if parse_display_node(p.node).kind.value == "head"]
    labels = {p.name: paper_label(p, evidence[p.name], thresholds) for p in heads}
    movers = tuple(p for p in heads if labels[p.name] == NAME_MOVER)
    metric = metric_position(problem)

    def needs_paths(pair: Pair) -> bool:
        if labels[pair.name] is not None:
            return False
        if pair.position == "END" and movers:
            return True  # rule 6 may label it
        direct = abs(_get(evidence[pair.name], "direct_fraction"))
        return not (pair.position == metric and direct >= thresholds.direct)  # else rule 8

    senders = [p for p in heads if needs_paths(p)]
    if senders:
        extra = {NAME_MOVER: movers} if movers else {}
        found = path_only_evidence(model, problem, pairs, senders, progress, extra_groups=extra)
        for name, values in found.items():
            evidence[name].update(values)
    return evidence


def build_classes(
    pairs: Sequence[Pair], evidence: Evidence, labels: Mapping[str, Label], t: ClassThresholds
) -> tuple[HeadClass, ...]:
    """Group labelled pairs into classes with their evidence and sentence."""
    from wildcircuits.explanation.sentences import class_evidence, class_sentence

    groups: dict[str, list[Pair]] = {}
    for pair in pairs:
        if pair.name in labels:
            groups.setdefault(labels[pair.name][0], []).append(pair)
    classes = []
    for name, members in groups.items():
        members.sort(key=lambda p: (parse_display_node(p.node), p.position))
        numbers = class_evidence(name, members, evidence)
        paper = labels[members[0].name][1]
        sentence = class_sentence(name, paper, members, numbers, t)
        classes.append(HeadClass(name, paper, tuple(members), sentence, numbers))
    return tuple(sorted(classes, key=_depth))


def _depth(head_class: HeadClass) -> tuple[bool, float, str]:
    layers = [parse_display_node(p.node).layer for p in head_class.members]
    mlp_last = head_class.name.startswith("MLPs at")
    return (mlp_last, sum(layers) / len(layers) if layers else math.inf, head_class.name)
