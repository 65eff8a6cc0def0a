"""Reading a hypothesis file safely: YAML parsed without ever constructing an object from a tag,
then every key type-checked and the whole checked for consistency; each problem is ONE
`HypothesisFileError` line naming the file, the line and what to fix.

Checks (docs/hypothesis.md lists them with examples): the YAML parses and is one mapping;
`version` is one this code reads; every key is known and has its type; a member is
`L<layer>.H<head>@POS` or `L<layer>.mlp@POS` with the layer and head inside the model (`shape`)
and a known position (`positions`); class names are unique and not `logits`; a pair is in one
class at most, and not also unexplained; `paper_class` is one of the IOI paper's seven or null;
`depends_on` names existing classes and known positions; a path runs between existing classes (or
into the logits), through a slot that fits its receiver (q / k / v into heads, in into MLPs,
logits into the logits), at a position where the receiver has members, from a sender with a
member earlier in the model than one of the receiver's, and is claimed once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from wildcircuits.errors import UnknownNameError
from wildcircuits.explanation.hypothesis import (
    LOGITS,
    PAPER_CLASSES,
    VERSION,
    ClaimedClass,
    ClaimedPath,
    Dependence,
    Hypothesis,
    HypothesisFileError,
    PathSlot,
)
from wildcircuits.files import YAML_VALUE_ERRORS, kind_of, one_line, read_text_file, yaml_failure
from wildcircuits.names import Node, NodeKind, Shape, parse_display_node
from wildcircuits.results.explain import Pair

Key = tuple[str | int, ...]
_POSITION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[+-]\d+)?")
_TOP = ("version", "task", "model", "classes", "unexplained", "paths", "provenance")
_CLASS = ("name", "paper_class", "members", "depends_on", "note")
_DEPENDS = ("positions", "classes")
_PATH = ("from", "to", "slot", "position", "effect")


def load_hypothesis(
    path: Path | str, shape: Shape | None = None, positions: Sequence[str] | None = None
) -> Hypothesis:
    """Read, type-check and check `path`. `shape`: the model's layers and heads (members out of
    it are errors); `positions`: the task's position names (others are errors; None: any
    well-formed name)."""
    path = Path(path)
    text = read_text_file(path, "hypothesis file", HypothesisFileError)
    doc = _Doc(path, *_parse(path, text))
    hypothesis = _Reader(doc, shape, tuple(positions) if positions is not None else None).read()
    _Consistency(doc, hypothesis).check()
    return hypothesis


def _parse(path: Path, text: str) -> tuple[Any, yaml.Node | None]:
    """(data, node tree) of `text` with the safe loader's constructor (no tag builds an object)."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # reading starts here: it refuses control characters
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    except yaml.reader.ReaderError as error:
        line = text[: error.position].count("\n") + 1
        message = (
            f"line {line}: invalid YAML: character {error.character!r} is not allowed; remove it"
        )
    except (yaml.YAMLError, *YAML_VALUE_ERRORS) as error:
        fix = "; fix the syntax there" if isinstance(error, yaml.YAMLError) else ""
        message = yaml_failure(error, "hypothesis files", "line", fix)
    finally:
        if loader is not None:
            loader.dispose()
    raise HypothesisFileError(f"{path}: {one_line(message, limit=600)}")


@dataclass(frozen=True)
class _Doc:
    """The parsed file and its node tree, to name the line of any key path."""

    path: Path
    data: Any
    root: yaml.Node | None

    def line(self, key: Key) -> int:
        node = self.root
        if node is None:
            return 1
        line = node.start_mark.line + 1
        for part in key:
            node = _child(node, part)
            if node is None:
                break
            line = node.start_mark.line + 1
        return line

    def fail(self, key: Key, problem: str) -> NoReturn:
        where = _key_text(key)
        text = f"{self.path}: line {self.line(key)}: {where + ': ' if where else ''}{problem}"
        raise HypothesisFileError(one_line(text, limit=600, foreign=False))


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        return next((v for k, v in node.value if getattr(k, "value", None) == part), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None


def _key_text(key: Key) -> str:
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


class _Reader:
    """Type-checks the parsed data into a `Hypothesis` (names and ranges, not consistency)."""

    def __init__(self, doc: _Doc, shape: Shape | None, positions: tuple[str, ...] | None):
        self.doc, self.shape, self.positions = doc, shape, positions

    def read(self) -> Hypothesis:
        data = self.mapping(self.doc.data, (), _TOP, required=("version", "task", "model"))
        version = data["version"]
        if isinstance(version, bool) or not isinstance(version, int):
            self.doc.fail(("version",), f"is {kind_of(version)}, expected the integer {VERSION}")
        if version != VERSION:
            fix = "upgrade wildcircuits" if version > VERSION else f"write version: {VERSION}"
            self.doc.fail(("version",), f"schema version {version} is not {VERSION}; {fix}")
        return Hypothesis(
            task=self.string(data["task"], ("task",)),
            model=self.string(data["model"], ("model",)),
            classes=tuple(
                self.claimed_class(c, ("classes", i))
                for i, c in enumerate(self.sequence(data.get("classes"), ("classes",)))
            ),
            paths=tuple(
                self.path(p, ("paths", i))
                for i, p in enumerate(self.sequence(data.get("paths"), ("paths",)))
            ),
            unexplained=self.pairs(data.get("unexplained"), ("unexplained",)),
            provenance=dict(self.provenance(data.get("provenance"))),
        )

    # plain values -------------------------------------------------------------------------------
    def mapping(self, value, key: Key, keys, required=()) -> Mapping[str, Any]:
        if value is None and not key:
            self.doc.fail(key, "empty file; expected a hypothesis (see docs/hypothesis.md)")
        if not isinstance(value, Mapping):
            what = "the file" if not key else "it"
            self.doc.fail(key, f"{what} is {kind_of(value)}, expected a mapping with keys "
                               f"{', '.join(keys)}")  # fmt: skip
        for name in value:
            if name not in keys:
                self.doc.fail(
                    (*key, str(name)),
                    f"unknown key {name!r}; expected some of {', '.join(keys)}",
                )
        missing = [k for k in required if k not in value]
        if missing:
            self.doc.fail(key, f"lacks the key {missing[0]!r}; add it (see docs/hypothesis.md)")
        return value

    def sequence(self, value, key: Key) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.doc.fail(key, f"is {kind_of(value)}, expected a list")
        return value

    def string(self, value, key: Key) -> str:
        if not isinstance(value, str) or not value.strip():
            got = "an empty string" if isinstance(value, str) else kind_of(value)
            self.doc.fail(key, f"is {got}, expected a non-empty string (quote it if needed)")
        return value

    def strings(self, value, key: Key) -> tuple[str, ...]:
        return tuple(self.string(v, (*key, i)) for i, v in enumerate(self.sequence(value, key)))

    def provenance(self, value) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            self.doc.fail(("provenance",), f"is {kind_of(value)}, expected a mapping of names")
        return value

    # names --------------------------------------------------------------------------------------
    def position(self, value, key: Key) -> str:
        text = self.string(value, key)
        if self.positions is not None and text not in self.positions:
            self.doc.fail(
                key, f"unknown position {text!r}; the task's positions are "
                     f"{', '.join(self.positions)}"
            )  # fmt: skip
        if self.positions is None and not _POSITION.fullmatch(text):
            self.doc.fail(key, f"{text!r} is not a position name (e.g. IO, S1+1, END, other)")
        return text

    def path_positions(self, value, key: Key) -> tuple[str, ...]:
        """A position name or a non-empty list of distinct ones."""
        if not isinstance(value, list):
            return (self.position(value, key),)
        names = tuple(self.position(v, (*key, i)) for i, v in enumerate(value))
        if not names or len(set(names)) != len(names):
            self.doc.fail(key, "expected a position or a list of distinct positions")
        return names

    def pair(self, value, key: Key) -> Pair:
        text = self.string(value, key)
        node_text, at, position = text.partition("@")
        if not at:
            self.doc.fail(key, f"member {text!r} lacks '@POSITION'; write e.g. L3.H2@END")
        try:
            node = parse_display_node(node_text, self.shape)
        except UnknownNameError as error:
            self.doc.fail(key, f"member {text!r}: {error}")
        if node.kind not in (NodeKind.HEAD, NodeKind.MLP):
            self.doc.fail(key, f"member {text!r} is not a head or an MLP; write e.g. L3.H2@END")
        return Pair(node.display, self.position(position, key))

    def pairs(self, value, key: Key) -> tuple[Pair, ...]:
        return tuple(self.pair(v, (*key, i)) for i, v in enumerate(self.sequence(value, key)))

    # records ------------------------------------------------------------------------------------
    def claimed_class(self, value, key: Key) -> ClaimedClass:
        data = self.mapping(value, key, _CLASS, required=("name", "members"))
        paper = data.get("paper_class")
        if paper is not None and paper not in PAPER_CLASSES:
            self.doc.fail(
                (*key, "paper_class"),
                f"{paper!r} is not one of the IOI paper's classes ({', '.join(PAPER_CLASSES)}); "
                "use one of them or null",
            )
        members = self.pairs(data["members"], (*key, "members"))
        if not members:
            self.doc.fail((*key, "members"), "a class needs at least one member")
        depends = data.get("depends_on")
        where = (*key, "depends_on")
        depends = {} if depends is None else self.mapping(depends, where, _DEPENDS)
        note = data.get("note", "")
        if note is not None and not isinstance(note, str):
            self.doc.fail((*key, "note"), f"is {kind_of(note)}, expected a string")
        return ClaimedClass(
            name=self.string(data["name"], (*key, "name")),
            paper_class=paper,
            members=members,
            depends_on=Dependence(
                tuple(
                    self.position(p, (*where, "positions", i))
                    for i, p in enumerate(
                        self.sequence(depends.get("positions"), (*where, "positions"))
                    )
                ),
                self.strings(depends.get("classes"), (*where, "classes")),
            ),
            note=note or "",
        )

    def path(self, value, key: Key) -> ClaimedPath:
        data = self.mapping(value, key, _PATH, required=("from", "to", "slot", "position"))
        slot = data["slot"]
        if slot not in [s.value for s in PathSlot]:
            self.doc.fail(
                (*key, "slot"),
                f"slot {slot!r} is not one of {', '.join(s.value for s in PathSlot)}",
            )
        effect = data.get("effect")
        ok = effect is None or (isinstance(effect, int | float) and not isinstance(effect, bool))
        if not ok or (effect is not None and effect != effect):
            self.doc.fail((*key, "effect"), f"is {kind_of(effect)}, expected a number or null")
        return ClaimedPath(
            sender=self.string(data["from"], (*key, "from")),
            receiver=self.string(data["to"], (*key, "to")),
            slot=PathSlot(slot),
            positions=self.path_positions(data["position"], (*key, "position")),
            effect=None if effect is None else float(effect),
        )


def _order(node: Node) -> int:
    """Where a component sits in a sequential block: layer L's heads, then its MLP."""
    return 2 * node.layer + (1 if node.kind is NodeKind.MLP else 0)


class _Consistency:
    """The checks between keys: names that must exist, pairs claimed once, paths that fit."""

    def __init__(self, doc: _Doc, hypothesis: Hypothesis):
        self.doc, self.h = doc, hypothesis
        self.classes = {c.name: c for c in hypothesis.classes}

    def check(self) -> None:
        self.unique_classes()
        self.pairs_once()
        for i, c in enumerate(self.h.classes):
            for j, name in enumerate(c.depends_on.classes):
                self.known_class(name, ("classes", i, "depends_on", "classes", j))
        seen: dict[tuple[str, str, str, tuple[str, ...]], int] = {}
        for i, path in enumerate(self.h.paths):
            self.path(path, ("paths", i))
            signature = (path.sender, path.receiver, path.slot.value, path.positions)
            if signature in seen:
                self.doc.fail(("paths", i), f"the same path as paths[{seen[signature]}]; drop one")
            seen[signature] = i

    def unique_classes(self) -> None:
        first: dict[str, int] = {}
        for i, c in enumerate(self.h.classes):
            key = ("classes", i, "name")
            if c.name == LOGITS:
                self.doc.fail(key, "'logits' names the model's output; give the class another name")
            if c.name in first:
                self.doc.fail(key, f"class {c.name!r} is also classes[{first[c.name]}]; rename one")
            first[c.name] = i

    def pairs_once(self) -> None:
        owner: dict[Pair, str] = {}
        for i, c in enumerate(self.h.classes):
            for j, pair in enumerate(c.members):
                if pair in owner:
                    self.doc.fail(
                        ("classes", i, "members", j),
                        f"{pair.name} is already a member of {owner[pair]!r}; keep it in one class",
                    )
                owner[pair] = c.name
        for j, pair in enumerate(self.h.unexplained):
            if pair in owner:
                self.doc.fail(
                    ("unexplained", j),
                    f"{pair.name} is a member of class {owner[pair]!r}; remove it from one list",
                )
            owner[pair] = "unexplained"

    def known_class(self, name: str, key: Key, allow_logits: bool = False) -> None:
        if name in self.classes or (allow_logits and name == LOGITS):
            return
        known = ", ".join(self.classes) or "none"
        extra = " or logits" if allow_logits else ""
        self.doc.fail(key, f"no class is named {name!r}; the classes are {known}{extra}")

    def path(self, path: ClaimedPath, key: Key) -> None:
        self.known_class(path.sender, (*key, "from"))
        self.known_class(path.receiver, (*key, "to"), allow_logits=True)
        sender = self.classes[path.sender]
        if path.receiver == LOGITS:
            if path.slot is not PathSlot.LOGITS:
                self.doc.fail((*key, "slot"), "a path into the logits has slot logits")
            return
        receiver = self.classes[path.receiver]
        self.slot_fits(path, receiver, (*key, "slot"))
        acts = {p.position for p in receiver.members}
        for position in path.positions:
            if position not in acts:
                self.doc.fail(
                    (*key, "position"),
                    f"class {receiver.name!r} has no member at {position} (it acts at "
                    f"{', '.join(sorted(acts))}); give the receiver's position",
                )
        first = min(_order(parse_display_node(p.node)) for p in sender.members)
        last = max(_order(parse_display_node(p.node)) for p in receiver.members)
        if first >= last:
            self.doc.fail(
                key,
                f"no member of {sender.name!r} comes before a member of {receiver.name!r} in "
                "the model; a path runs from earlier layers to later ones",
            )

    def slot_fits(self, path: ClaimedPath, receiver: ClaimedClass, key: Key) -> None:
        kinds = {parse_display_node(p.node).kind for p in receiver.members}
        if path.slot is PathSlot.LOGITS:
            self.doc.fail(key, f"slot logits is for paths to logits, not to {receiver.name!r}")
        if kinds == {NodeKind.HEAD} and path.slot is PathSlot.IN:
            self.doc.fail(key, f"{receiver.name!r} holds heads: use slot q, k or v")
        if kinds == {NodeKind.MLP} and path.slot is not PathSlot.IN:
            self.doc.fail(key, f"{receiver.name!r} holds MLPs: use slot in")
