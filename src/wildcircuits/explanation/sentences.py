"""A class's evidence numbers (aggregated from its members' pair evidence) and its sentence.

Aggregation over a class's members: `members` their number; `attention_to_<N>` and `copying`
the mean over members (NaN skipped); `direct_effect`, `direct_fraction` and `path_to_logits`
the sum. Once the class diagram is measured (`explain.class_paths`), `with_arrows` replaces
every path number by the arrows out of the class: `path_to_<class>_<slot>` and
`path_to_logits` are then the class-level path patching effects (all members patched jointly),
and the sentence states those.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from wildcircuits.results.explain import ClassPath, HeadClass, Pair

#: The named position(s) whose attention defines each paper class (summed when several).
DEFINING_ATTENTION = {
    "name mover": ("IO",),
    "negative name mover": ("IO",),
    "backup name mover": ("IO",),
    "S-inhibition": ("S1", "S2"),
    "induction": ("S1+1",),
    "duplicate token": ("S1",),
    "previous token": ("S1",),
}


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def class_evidence(
    name: str,
    members: Sequence[Pair],
    evidence: Mapping[str, Mapping[str, float]],
) -> dict[str, float]:
    """The class's numbers from its members' evidence (module doc)."""
    rows = [evidence[p.name] for p in members]
    out: dict[str, float] = {"members": float(len(members))}
    keys = sorted({k for row in rows for k in row})
    for key in keys:
        if key.startswith("attention_to_") or key == "copying":
            out[key] = _mean([row.get(key, float("nan")) for row in rows])
        elif key in ("direct_effect", "direct_fraction", "path_to_logits"):
            out[key] = sum(row.get(key, 0.0) for row in rows)
    return out


def with_arrows(classes: Sequence[HeadClass], paths: Sequence[ClassPath], thresholds):
    """The classes with their path numbers and sentences taken from the measured arrows out of
    each class (module doc); a class with no measured arrow keeps no path number."""
    out = []
    for c in classes:
        numbers = {k: v for k, v in c.evidence.items() if not k.startswith("path_to_")}
        for p in paths:
            if p.sender == c.name:
                key = "path_to_logits" if p.receiver == "logits" else (
                    f"path_to_{p.receiver}_{p.slot}")  # fmt: skip
                numbers[key] = p.effect
        sentence = class_sentence(c.name, c.paper_class, c.members, numbers, thresholds)
        out.append(replace(c, evidence=numbers, sentence=sentence))
    return tuple(out)


def _attention_phrase(name: str, paper: str | None, numbers: Mapping[str, float]) -> str:
    named = DEFINING_ATTENTION.get(paper or "")
    if named is None:
        candidates = {k[len("attention_to_") :]: v for k, v in numbers.items()
                      if k.startswith("attention_to_") and not math.isnan(v)}  # fmt: skip
        if not candidates:
            return ""
        named = (max(candidates, key=candidates.get),)
    value = sum(numbers.get(f"attention_to_{n}", float("nan")) for n in named)
    return f"mean attention to {' + '.join(named)} {value:.2f}"


def class_sentence(
    name: str,
    paper: str | None,
    members: Sequence[Pair],
    numbers: Mapping[str, float],
    thresholds,
) -> str:
    """One sentence stating the class's evidence in numbers."""
    positions = ", ".join(sorted({p.position for p in members}))
    facts = [f"at {positions}"]
    if attention := _attention_phrase(name, paper, numbers):
        facts.append(attention)
    direct = numbers.get("direct_effect", 0.0)
    if direct:
        fraction = numbers.get("direct_fraction", float("nan"))
        facts.append(
            f"direct effect {direct:+.2f} logits ({fraction:+.0%} of the clean logit difference)"
        )
    if not math.isnan(numbers.get("copying", float("nan"))):
        facts.append(f"OV copying score {numbers['copying']:+.2f}")
    paths = [
        (key[len("path_to_") :], value)
        for key, value in numbers.items()
        if key.startswith("path_to_") and abs(value) >= thresholds.path
    ]
    paths.sort(key=lambda item: -abs(item[1]))
    feeds = ", ".join(f"{_target(target)} {value:+.2f}" for target, value in paths)
    head = f"{name} ({', '.join(p.name for p in members)})"
    tail = f"; path effect into {feeds}" if feeds else "; no path effect above the threshold"
    return f"{head}: {', '.join(facts)}{tail}."


def _target(key: str) -> str:
    """`name mover_q` -> `name mover (q)`; `logits` stays."""
    if key == "logits":
        return key
    name, slot = key.rsplit("_", 1)
    return f"{name} ({slot})"
