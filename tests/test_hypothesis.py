"""hypothesis.yaml: the draft from an explanation, the commented writer, the safe loader (a table
of bad files, each an error naming the file, the line and the problem) and properties: any text
or generated structure loads or raises a HypothesisFileError, never another exception; any
generated hypothesis round-trips through the file."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.explain_fixtures import hypothesis_explanation as synthetic_explanation
from wildcircuits.explanation.hypothesis import (
    PAPER_CLASSES,
    ClaimedClass,
    ClaimedPath,
    Dependence,
    Hypothesis,
    HypothesisFileError,
    PathSlot,
    hypothesis_from_explanation,
    hypothesis_yaml,
    load_hypothesis,
    write_hypothesis,
)
from wildcircuits.names import Shape
from wildcircuits.results.explain import ClassPath, Pair

SHAPE = Shape(3, 2)
POSITIONS = ("IO", "S1", "S1+1", "S2", "END", "other")
FAST = settings(derandomize=True, max_examples=80, deadline=None)


@pytest.fixture(scope="module")
def draft() -> Hypothesis:
    return hypothesis_from_explanation(synthetic_explanation(), "ioi", "tiny-test-model")


@pytest.fixture(scope="module")
def good_text(draft) -> str:
    return hypothesis_yaml(draft, POSITIONS)


def _load_text(tmp_path, text: str, shape=SHAPE, positions=POSITIONS) -> Hypothesis:
    path = tmp_path / "hypothesis.yaml"
    path.write_text(text)
    return load_hypothesis(path, shape, positions)


# the draft -------------------------------------------------------------------------------------
def test_the_draft_claims_what_the_explanation_measured(draft):
    names = [c.name for c in draft.classes]
    assert names == ["duplicate token", "S-inhibition", "name mover", "MLPs at END"]
    # the 0.02 path is below DraftRules.min_path_effect; the others are claimed
    assert [(p.sender, p.receiver, p.slot.value) for p in draft.paths] == [
        ("duplicate token", "S-inhibition", "k"),
        ("S-inhibition", "name mover", "q"),
        ("MLPs at END", "name mover", "q"),
        ("name mover", "logits", "logits"),
    ]
    mover = draft.class_named("name mover")
    # attends to IO (0.71 >= 0.3, S2 at 0.1 is not); its query is fed by claimed paths, so
    # not its own position for itself; then the tokens the classes it reads depend on
    # (S-inhibition's S2 and END, and through duplicate token S1; MLPs at END's END)
    assert mover.depends_on == Dependence(
        ("IO", "S2", "END", "S1"), ("S-inhibition", "MLPs at END")
    )
    # no path into its query: it also depends on its own position's token; then duplicate
    # token's S1 (S2 it has already)
    assert draft.class_named("S-inhibition").depends_on == Dependence(
        ("S2", "END", "S1"), ("duplicate token",)
    )
    assert draft.class_named("duplicate token").depends_on == Dependence(("S1", "S2"), ())
    assert draft.class_named("MLPs at END").paper_class is None
    assert draft.unexplained == (Pair("L0.H0", "other"),)
    assert set(draft.pairs()) == set(synthetic_explanation().circuit.pairs)
    assert draft.provenance["circuit_faithfulness"] == {
        "counterfactual": 0.86,
        "mean:template": 0.74,
    }
    assert draft.paths_into("logits")[0].effect == 0.8


def test_written_file_is_commented_and_reads_back_equal(draft, tmp_path):
    path = write_hypothesis(tmp_path / "h.yaml", draft, POSITIONS)
    text = path.read_text()
    assert text.startswith("# wildcircuits hypothesis")
    for key in ("depends_on", "paper_class", "unexplained", "slot q / k / v"):
        assert key in text.split("version:")[0]
    assert "IO, S1, S1+1, S2, END, other" in text
    assert load_hypothesis(path, SHAPE, POSITIONS) == draft
    assert load_hypothesis(path) == draft  # no shape / positions: only the form is checked
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_drafted_positions_are_closed_over_a_cycle_of_classes():
    """Two classes reading each other (MLPs and duplicate-token heads at S2 on SmolLM2 IOI)
    each get the other's positions, once, and the closure ends."""
    explanation = synthetic_explanation()
    a, b = explanation.classes[0], explanation.classes[3]  # duplicate token, MLPs at END
    cycle = (
        ClassPath(a.name, b.name, "in", "END", 0.3),
        ClassPath(b.name, a.name, "q", "S2", 0.3),
    )
    explanation = dataclasses.replace(explanation, paths=(*explanation.paths, *cycle))
    h = hypothesis_from_explanation(explanation, "ioi", "m")
    # both inputs are fed by claimed paths, so neither depends on its own position's token;
    # duplicate token attends to S1, and MLPs at END, reading it, gets S1 too
    assert h.class_named(a.name).depends_on == Dependence(("S1",), (b.name,))
    assert h.class_named(b.name).depends_on == Dependence(("S1",), (a.name,))


def test_a_path_measured_at_several_positions_is_one_claim_listing_them(tmp_path):
    explanation = synthetic_explanation()
    mover = explanation.classes[2]
    wide = dataclasses.replace(mover, members=(*mover.members, Pair("L2.H0", "S2")))
    path = ClassPath("S-inhibition", "name mover", "q", "END, S2", 0.2)
    explanation = dataclasses.replace(
        explanation,
        classes=(*explanation.classes[:2], wide, explanation.classes[3]),
        paths=(path,),
    )
    h = hypothesis_from_explanation(explanation, "ioi", "m")
    assert h.paths[0].positions == ("END", "S2")
    text = hypothesis_yaml(h)
    assert "position: [END, S2]" in text
    assert _load_text(tmp_path, text) == h
    with pytest.raises(HypothesisFileError, match="a list of distinct positions"):
        _load_text(tmp_path, text.replace("position: [END, S2]", "position: [END, END]"))


def test_an_edited_file_loads_the_edit(good_text, tmp_path):
    edited = good_text.replace("members: [L2.H1@END, L2.H0@END]", "members: [L2.H1@END]")
    edited = edited.replace("unexplained: [L0.H0@other]", "unexplained: [L0.H0@other, L2.H0@END]")
    h = _load_text(tmp_path, edited)
    assert h.class_named("name mover").members == (Pair("L2.H1", "END"),)
    assert h.unexplained[-1] == Pair("L2.H0", "END")


# bad files ------------------------------------------------------------------------------------
#: (what is wrong, text replaced, replacement, words the error must contain)
BAD = [
    ("unknown head", "[L1.H0@END]", "[L1.H7@END]", "out of range: valid layers 0..2, heads 0..1"),
    ("layer out of range", "[L0.H1@S2]", "[L9.H1@S2]", "out of range"),
    ("not a node", "[L0.H1@S2]", "[head3@S2]", "unknown node name 'head3'"),
    ("no position", "[L0.H1@S2]", "[L0.H1]", "lacks '@POSITION'"),
    ("unknown position", "[L0.H1@S2]", "[L0.H1@S3]", "unknown position 'S3'"),
    ("input as member", "[L0.H1@S2]", "[input@S2]", "not a head or an MLP"),
    ("unknown class in a path", "  - from: S-inhibition", "  - from: S-inhib", "no class is named"),
    ("unknown receiver", "    to: S-inhibition", "    to: nobody", "no class is named 'nobody'"),
    ("unknown dependency", "classes: [duplicate token]", "classes: [dup]", "no class is named"),
    ("duplicate class", "name: S-inhibition", "name: duplicate token", "is also classes[0]"),
    ("reserved name", "name: S-inhibition", "name: logits", "names the model's output"),
    ("member in two classes", "[L1.H0@END]", "[L0.H1@S2]", "already a member of"),
    ("member also unexplained", "[L0.H0@other]", "[L1.H0@END]", "remove it from one list"),
    ("slot unknown", "slot: k", "slot: z", "slot 'z' is not one of"),
    ("slot in into heads", "slot: k", "slot: in", "holds heads"),
    ("slot logits into a class", "slot: k", "slot: logits", "for paths to logits"),
    ("slot q into logits", "slot: logits", "slot: q", "has slot logits"),
    ("position without receiver", "    position: END\n    effect: 0.3", "    position: IO\n"
     "    effect: 0.3", "no member at IO"),
    ("backwards path", "  - from: duplicate token\n    to: S-inhibition", "  - from: name mover\n"
     "    to: S-inhibition", "from earlier layers to later"),
    ("unknown key", "    note: L1.mlp", "    notes: L1.mlp", "unknown key 'notes'"),
    ("wrong type", "task: ioi", "task: [ioi]", "is a list, expected a non-empty string"),
    ("members not a list", "members: [L1.H0@END]", "members: 3", "expected a list"),
    ("empty members", "members: [L1.H0@END]", "members: []", "at least one member"),
    ("paper class unknown", "paper_class: S-inhibition", "paper_class: S-inhib", "IOI paper's"),
    ("effect not a number", "effect: 0.3", "effect: high", "expected a number or null"),
    ("newer version", "version: 1", "version: 2", "upgrade wildcircuits"),
    ("version missing", "version: 1\n", "", "lacks the key 'version'"),
    ("bad YAML", "classes:\n", "classes: [\n", "invalid YAML"),
    ("a tag", "task: ioi", "task: !!python/object:os.system ioi", "never constructs"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "old", "new", "words"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_file_is_one_error_naming_the_file_line_and_problem(
    good_text, tmp_path, what, old, new, words
):
    assert old in good_text, what
    text = good_text.replace(old, new, 1)
    with pytest.raises(HypothesisFileError) as caught:
        _load_text(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message and words in message, message
    assert message.startswith(f"{tmp_path / 'hypothesis.yaml'}: line "), message
    line = int(message.split(": line ")[1].split(":")[0])
    if new.strip():  # the error points at the edited line (or the one after a broken one)
        first_changed = good_text[: good_text.index(old)].count("\n") + 1
        assert first_changed <= line <= first_changed + 2 + new.count("\n"), (line, what)


def test_missing_empty_and_not_utf8_files(tmp_path):
    with pytest.raises(HypothesisFileError, match="no such file"):
        load_hypothesis(tmp_path / "none.yaml")
    with pytest.raises(HypothesisFileError, match="empty file"):
        _load_text(tmp_path, "# only a comment\n")
    (tmp_path / "bin.yaml").write_bytes(b"version: 1\n\xff\xfe")
    with pytest.raises(HypothesisFileError, match="not UTF-8"):
        load_hypothesis(tmp_path / "bin.yaml")
    with pytest.raises(HypothesisFileError, match="line 1: the file is a list"):
        _load_text(tmp_path, "- 1\n- 2\n")


# properties -----------------------------------------------------------------------------------
SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(-5, 40)
    | st.floats(allow_nan=True)
    | st.sampled_from(["L1.H0@END", "L2.mlp@S2", "L9.H0@IO", "IO", "q", "logits", "name mover"])
    | st.text(max_size=6)
)
TREE = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(
        st.sampled_from(
            ["version", "task", "model", "classes", "paths", "name", "members", "from", "to",
             "slot", "position", "depends_on", "positions", "unexplained", "x"]
        ),
        inner,
        max_size=4,
    ),
    max_leaves=12,
)  # fmt: skip


def _ok_or_ours(tmp_path, text: str) -> None:
    try:
        _load_text(tmp_path, text)
    except HypothesisFileError as error:
        assert "\n" not in str(error)


@FAST
@given(TREE)
def test_any_structure_loads_or_is_our_error(tmp_path_factory, data):
    top = {"version": 1, "task": "ioi", "model": "m"}
    if isinstance(data, dict):
        top.update(data)
    text = yaml.safe_dump(top if isinstance(data, dict) else data)
    _ok_or_ours(tmp_path_factory.mktemp("h"), text)


@FAST
@given(st.integers(0, 2000), st.integers(0, 30), st.text(max_size=8))
def test_any_edit_of_a_good_file_loads_or_is_our_error(tmp_path_factory, start, length, insert):
    text = hypothesis_yaml(
        hypothesis_from_explanation(synthetic_explanation(), "ioi", "m"), POSITIONS
    )
    start = start % len(text)
    _ok_or_ours(tmp_path_factory.mktemp("h"), text[:start] + insert + text[start + length :])


NAMES = st.sampled_from(["name mover", "S-inhibition", "yes", "no", "1.5", "a: b", "#x", "'q'"])
NODES = st.sampled_from(["L0.H0", "L0.H1", "L0.mlp", "L1.H0", "L1.H1", "L1.mlp", "L2.H0", "L2.H1"])


@st.composite
def hypotheses(draw) -> Hypothesis:
    """Consistent hypotheses on Shape(3, 2): unique class names, each pair in one class."""
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    pairs = draw(
        st.lists(st.tuples(NODES, st.sampled_from(POSITIONS)), min_size=len(names), unique=True)
    )
    groups = [pairs[i :: len(names)] for i in range(len(names))]
    classes = tuple(
        ClaimedClass(
            name=name,
            paper_class=draw(st.none() | st.sampled_from(PAPER_CLASSES)),
            members=tuple(Pair(n, p) for n, p in group),
            depends_on=Dependence(
                tuple(draw(st.lists(st.sampled_from(POSITIONS), max_size=2, unique=True))),
                tuple(draw(st.lists(st.sampled_from(names), max_size=2, unique=True))),
            ),
            note=draw(st.text(max_size=20)),
        )
        for name, group in zip(names, groups, strict=True)
    )
    last = max(classes, key=lambda c: max(_order(p) for p in c.members))
    paths = [ClaimedPath(last.name, "logits", PathSlot.LOGITS, ("END",), draw(st.floats(-2, 2)))]
    for a in classes:  # a path into every class some other class's member comes before
        for b in classes:
            if a is not b and min(map(_order, a.members)) < max(map(_order, b.members)):
                mlps = all(p.node.endswith("mlp") for p in b.members)
                slot = PathSlot.IN if mlps else draw(st.sampled_from([PathSlot.Q, PathSlot.V]))
                positions = tuple(dict.fromkeys(p.position for p in b.members))
                paths.append(ClaimedPath(a.name, b.name, slot, positions, None))
                break
    provenance = draw(st.dictionaries(st.sampled_from(["model", "seed", "x y"]), SCALAR))
    provenance = {k: v for k, v in provenance.items() if v == v}  # NaN never equals itself
    return Hypothesis("ioi", draw(NAMES), classes, tuple(paths), (), provenance)


def _order(pair: Pair) -> int:
    layer = int(pair.node[1])
    return 2 * layer + (1 if pair.node.endswith("mlp") else 0)


@FAST
@given(hypotheses())
def test_any_hypothesis_round_trips_through_its_file(tmp_path_factory, h):
    path = write_hypothesis(tmp_path_factory.mktemp("h") / "h.yaml", h, POSITIONS)
    assert load_hypothesis(path, SHAPE, POSITIONS) == h


def test_hypothesis_types_are_frozen(draft):
    with pytest.raises(dataclasses.FrozenInstanceError):
        draft.task = "other"  # type: ignore[misc]
