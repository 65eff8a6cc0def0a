"""The algorithm in words: sentences assembled from the classes and the measured arrows.

`describe_algorithm(classes, paths)` gives, first, the main chain: the chain of measured arrows
from earlier to later classes, ending in a positive arrow to the logits, that carries the most
total |effect| (so the long IOI chain beats a short cut of similar strength), told from the
earliest class to the logits (e.g. "duplicate-token heads at S2 detect that S is
repeated; S-inhibition heads move that to END (path effect 0.31 into their k); name movers at END
copy the name S-inhibition did not suppress (0.42 into their q); ..."); then one sentence per
class with the arrows that leave it. Only arrows whose |effect| reaches `ARROW_THRESHOLD` are
mentioned, each with its measured effect; nothing is said about a path that was not measured.
Known IOI-paper classes get a template for their role and for the links between them; any other
class is named as it is ("writes the answer at END") with a generic sentence.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from wildcircuits.names import parse_display_node
from wildcircuits.results.explain import ClassPath, HeadClass

#: The smallest |normalized path effect| of an arrow the sentences mention.
ARROW_THRESHOLD = 0.05

#: Plural label and role (at {pos}) of each IOI-paper class.
ROLES = {
    "previous token": ("previous-token heads", "copy each token's predecessor into it"),
    "duplicate token": ("duplicate-token heads", "detect that S is repeated"),
    "induction": ("induction heads", "detect that S is repeated (attending to S1+1)"),
    "S-inhibition": ("S-inhibition heads", "move the repetition signal to {pos}"),
    "name mover": ("name movers", "copy a name they attend to into the logits"),
    "negative name mover": ("negative name movers", "write against the name they attend to"),
    "backup name mover": ("backup name movers", "copy names when the name movers are removed"),
}
#: (sender paper class, receiver paper class) -> how the receiver uses the sender's output.
LINKS = {
    ("previous token", "induction"): "induction heads at {pos} use it to find S1+1",
    ("duplicate token", "S-inhibition"): "S-inhibition heads move that to {pos}",
    ("induction", "S-inhibition"): "S-inhibition heads move that to {pos}",
    ("S-inhibition", "name mover"): "name movers at {pos} copy the name S-inhibition did not "
    "suppress",
    ("S-inhibition", "negative name mover"): "negative name movers at {pos} write against the "
    "name S-inhibition did not suppress",
    ("S-inhibition", "backup name mover"): "backup name movers at {pos} read it too",
}
SLOT_WORDS = {"q": "queries", "k": "keys", "v": "values", "in": "input", "logits": "logits"}


def describe_algorithm(
    classes: Sequence[HeadClass], paths: Sequence[ClassPath], threshold: float = ARROW_THRESHOLD
) -> tuple[str, ...]:
    """Sentences: the main chain, then one per class (layer order); see the module doc."""
    if not classes:
        return ("No functional classes were found, so there is no algorithm to state.",)
    by_name = {c.name: c for c in classes}
    strong = [p for p in paths if abs(p.effect) >= threshold and p.sender in by_name]
    chain = _chain(by_name, strong)
    out = [_chain_sentence(by_name, chain)] if chain else []
    for c in sorted(classes, key=_depth):
        out.append(_class_sentence(c, [p for p in strong if p.sender == c.name], by_name))
    out.append(
        f"Arrows with |path effect| below {threshold:g} are left out "
        f"({len(paths) - len(strong)} of {len(paths)} measured)."
    )
    return tuple(out)


def _depth(c: HeadClass) -> tuple[float, str]:
    """Layer order: the median layer of the class's members, then its name."""
    return statistics.median(parse_display_node(p.node).layer for p in c.members), c.name


def _chain(by_name: dict[str, HeadClass], strong: Sequence[ClassPath]) -> list[ClassPath]:
    """The chain of arrows ending in a positive arrow to the logits, each from an earlier class
    not yet on it, that carries the most total |effect|; from its earliest arrow to the logits
    (ties: the first found, in the order of `strong`)."""
    into: dict[str, list[ClassPath]] = {}
    for p in strong:
        into.setdefault(p.receiver, []).append(p)
    best: list[ClassPath] = []

    def extend(chain: list[ClassPath], on_chain: set[str]) -> None:
        nonlocal best
        if sum(abs(p.effect) for p in chain) > sum(abs(p.effect) for p in best):
            best = list(chain)
        head = by_name[chain[-1].sender]
        for p in into.get(head.name, ()):
            if p.sender not in on_chain and _depth(by_name[p.sender]) < _depth(head):
                extend([*chain, p], on_chain | {p.sender})

    for writer in into.get("logits", ()):
        if writer.effect > 0:
            extend([writer], {writer.sender})
    return best[::-1]


def _label(c: HeadClass) -> str:
    return ROLES[c.paper_class][0] if c.paper_class in ROLES else f"“{c.name}”"


def _positions(c: HeadClass) -> str:
    return "/".join(dict.fromkeys(p.position for p in c.members))


def _role(c: HeadClass) -> str:
    if c.paper_class not in ROLES:
        return ""
    return " " + ROLES[c.paper_class][1].format(pos=_positions(c))


def _measured(p: ClassPath) -> str:
    into = "the logits" if p.receiver == "logits" else f"their {SLOT_WORDS.get(p.slot, p.slot)}"
    return f"(path effect {p.effect:+.2f} into {into})"


def _chain_sentence(by_name: dict[str, HeadClass], chain: Sequence[ClassPath]) -> str:
    first = by_name[chain[0].sender]
    parts = [f"{_label(first)} at {_positions(first)}{_role(first)}"]
    for p in chain:
        if p.receiver == "logits":
            parts.append(f"{_label(by_name[p.sender])} write the answer {_measured(p)}")
            continue
        receiver = by_name[p.receiver]
        link = LINKS.get((by_name[p.sender].paper_class, receiver.paper_class))
        text = (
            link.format(pos=_positions(receiver))
            if link
            else f"{_label(receiver)} at {_positions(receiver)} read {_label(by_name[p.sender])}"
        )
        parts.append(f"{text} {_measured(p)}")
    sentence = "; ".join(parts)
    return sentence[0].upper() + sentence[1:] + "."


def _class_sentence(c: HeadClass, out: Sequence[ClassPath], by_name) -> str:
    members = ", ".join(dict.fromkeys(p.node for p in c.members))
    head = f"{_label(c)} ({members}) at {_positions(c)}{_role(c)}"
    if not out:
        return f"{head[0].upper()}{head[1:]}; no arrow above the threshold leaves them."
    targets = [
        "the logits" + f" ({p.effect:+.2f})"
        if p.receiver == "logits"
        else f"the {SLOT_WORDS.get(p.slot, p.slot)} of {_label(by_name[p.receiver])} at "
        f"{p.position} ({p.effect:+.2f})"
        for p in sorted(out, key=lambda p: -abs(p.effect))
    ]
    return f"{head[0].upper()}{head[1:]}; they feed {_join(targets)}."


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


__all__ = ["ARROW_THRESHOLD", "describe_algorithm"]
