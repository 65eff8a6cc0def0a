"""Functional classes (explain.evidence / pair_paths / classes / backup): planted ground truth,
fast vs slow references, rules on hand-written evidence, backup invariants, bad input."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from tests.planted_models import induction_problem, planted_induction_model
from tests.tiny_models import VOCAB, tiny_model, tiny_tokens
from wildcircuits.errors import InputError, TaskError, UnknownNameError
from wildcircuits.explanation.backup import find_backup
from wildcircuits.explanation.class_paths import class_paths
from wildcircuits.explanation.classes import (
    INDUCTION,
    PREVIOUS_TOKEN,
    THRESHOLDS,
    classify,
    label_pairs,
    measure_evidence,
)
from wildcircuits.explanation.evidence import direct_effects, head_evidence, members
from wildcircuits.explanation.pair_paths import path_evidence, position_groups
from wildcircuits.explanation.sentences import with_arrows
from wildcircuits.localise.dla import direct_logit_attribution
from wildcircuits.patching.hooks import Intervention, Mode
from wildcircuits.patching.path import path_patch
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site
from wildcircuits.results.explain import Pair, PositionCircuit
from wildcircuits.tasks.metrics import make_targets


def _circuit(pairs) -> PositionCircuit:
    heads = sum(1 for p in pairs if ".H" in p.node)
    return PositionCircuit(tuple(pairs), 0.8, True, (), heads, len(pairs) - heads)


# --- planted ground truth -----------------------------------------------------------------


def test_planted_model_comes_out_with_exactly_its_classes():
    model, problem = planted_induction_model(), induction_problem()
    pairs = [Pair("L0.H0", "S1+1"), Pair("L1.H0", "S2"), Pair("L1.H1", "S2"), Pair("L0.H0", "S2")]
    classes, unexplained = classify(model, problem, _circuit(pairs), progress=False)
    found = {c.name: (c.paper_class, c.members) for c in classes}
    assert found == {
        PREVIOUS_TOKEN: (PREVIOUS_TOKEN, (Pair("L0.H0", "S1+1"),)),
        INDUCTION: (INDUCTION, (Pair("L1.H0", "S2"),)),
    }
    assert unexplained == (Pair("L1.H1", "S2"), Pair("L0.H0", "S2"))  # dead head; no job there
    previous, induction = classes  # ordered by layer
    assert previous.evidence["attention_to_S1"] == pytest.approx(1.0, abs=1e-3)
    assert induction.evidence["attention_to_S1+1"] == pytest.approx(1.0, abs=1e-3)
    assert induction.evidence["path_to_logits"] == pytest.approx(1.0, abs=0.02)
    assert "mean attention to S1+1 1.00" in induction.sentence
    # The class edge, from the measured arrows: the previous-token head feeds the induction
    # head's key, not q / v.
    paths = class_paths(model, problem, classes, progress=False, n_bootstrap=0)
    previous, induction = with_arrows(classes, paths, THRESHOLDS)
    assert previous.evidence["path_to_induction_k"] == pytest.approx(1.0, abs=0.02)
    assert abs(previous.evidence["path_to_induction_v"]) < 1e-4
    assert abs(previous.evidence["path_to_induction_q"]) < 1e-6  # S1+1 never reaches S2's q
    assert induction.evidence["path_to_logits"] == pytest.approx(1.0, abs=0.02)
    assert "path effect into induction (k) +1.00" in previous.sentence


def test_classify_measures_member_paths_only_for_pairs_the_first_rules_leave_open():
    """Rules 1-5 label the previous-token and induction heads without path evidence; the dead
    head is the only head sender, and its numbers equal those of measuring every sender."""
    model, problem = planted_induction_model(), induction_problem()
    pairs = [Pair("L0.H0", "S1+1"), Pair("L1.H0", "S2"), Pair("L1.H1", "S2"), Pair("L0.H0", "S2")]
    restricted = measure_evidence(model, problem, pairs, progress=False)
    full = head_evidence(model, problem, pairs, progress=False)
    open_ = {"L1.H1@S2", "L0.H0@S2"}
    for name, values in full.items():
        member_paths = {k for k in values if k.startswith("path_to_") and k != "path_to_logits"}
        got = {k for k in restricted[name] if k.startswith("path_to_") and k != "path_to_logits"}
        assert got == (member_paths if name in open_ else set()), name
        for key, value in restricted[name].items():
            assert value == pytest.approx(values[key], abs=1e-6), (name, key)


def test_writers_at_the_metric_position_get_no_member_paths_without_name_movers():
    """Rule 8 labels a head at END writing >= 5% of the logit difference before rule 9 reads
    its paths, so with no name movers (rule 6) its member paths are never measured; every
    other unlabelled head gets all 3 slots into each position's heads."""
    model = tiny_model("llama")
    problem = _tiny_problem(model)
    evidence = measure_evidence(model, problem, TINY_PAIRS, progress=False)
    writes = {"L1.H3@END"}  # direct fraction 0.07; L2.H1@END: -0.015
    for pair in TINY_PAIRS:
        values = evidence[pair.name]
        keys = {k for k in values if k.startswith("path_to_heads@")}
        if pair.name in writes:
            assert abs(values["direct_fraction"]) >= THRESHOLDS.direct and keys == set()
        elif ".H" in pair.node:
            assert abs(values["direct_fraction"]) < THRESHOLDS.direct or pair.position != "END"
            assert len(keys) == 3 * 4, pair.name  # q, k, v x heads@{S1+1, S2, other, END}
        else:
            assert keys == set()  # MLPs are never path senders here


def test_planted_backup_knocks_out_the_induction_head_and_finds_no_backup():
    model, problem = planted_induction_model(), induction_problem()
    pairs = [Pair("L0.H0", "S1+1"), Pair("L1.H0", "S2")]
    classes, _ = classify(model, problem, _circuit(pairs), progress=False)
    backup = find_backup(model, problem, classes)
    assert backup.knocked_out == INDUCTION
    clean = float(direct_effects(model, problem).heads[:, 1, 0].mean())
    assert backup.knocked_out_effect == pytest.approx(clean)
    assert backup.heads == () and backup.restored == 0.0  # nothing else writes the answer


# --- fast vs slow references --------------------------------------------------------------


def _tiny_problem(model, seed: int = 3) -> PatchingProblem:
    clean = tiny_tokens(batch=3, length=9, seed=seed, padded=False)
    generator = torch.Generator().manual_seed(seed + 1)
    corrupted = clean.input_ids.clone()
    corrupted[:, [2, 5]] = torch.randint(3, VOCAB, (3, 2), generator=generator)
    end = torch.full((3,), 8)
    return PatchingProblem(
        clean=clean,
        corrupted=replace(clean, input_ids=corrupted),
        positions=end,
        targets=make_targets([[5], [6], [7]], [[8], [9], [10]]),
        named_positions={"S1": torch.full((3,), 2), "S2": torch.full((3,), 5), "END": end},
    )


TINY_PAIRS = [
    Pair("L0.H1", "S1+1"),
    Pair("L0.H2", "S2"),
    Pair("L0.mlp", "S2"),
    Pair("L1.H0", "S2"),
    Pair("L1.H2", "other"),
    Pair("L1.H3", "END"),
    Pair("L2.H1", "END"),
]


def _slow_path(model, problem, sender, receivers, slot) -> float:
    """Steps 1-3 of pair_paths' module doc as plain full forwards, one sender into one
    receiver group's slot (None: the logits)."""
    layers = range(model.n_layers)
    z_sites = [Site(Component.Z, i) for i in layers]
    mlp_sites = [Site(Component.MLP_OUT, i) for i in layers]
    clean = model.run(problem.clean, capture=z_sites, positions=problem.positions)
    bad = model.run(problem.corrupted, capture=z_sites + mlp_sites, positions=problem.positions)
    m_clean, m_bad = (
        float(problem.score(clean.logits).mean()),
        float(problem.score(bad.logits).mean()),
    )
    mask = sender.mask[..., None]
    step2 = []
    for layer in layers:
        z = clean[Site(Component.Z, layer)].clone()
        if sender.is_head and sender.node.layer == layer:
            h = sender.node.head
            z[:, :, h] = torch.where(mask, bad[Site(Component.Z, layer)][:, :, h], z[:, :, h])
        step2.append(Intervention(Site(Component.Z, layer), Mode.REPLACE, z))
        if not sender.is_head and sender.node.layer == layer:
            value = bad[Site(Component.MLP_OUT, layer)]
            step2.append(Intervention(Site(Component.MLP_OUT, layer), Mode.REPLACE,
                                      lambda cur, v=value: torch.where(mask, v, cur)))  # fmt: skip
    if receivers is None:
        run = model.run(problem.clean, interventions=step2, positions=problem.positions)
        return (m_clean - float(problem.score(run.logits).mean())) / (m_clean - m_bad)
    component = {"q": Component.Q, "k": Component.K, "v": Component.V}[slot]
    sites = [Site(component, i) for i in layers]
    recorded = model.run(problem.clean, capture=sites, interventions=step2)
    # Per (layer, head index of the slot): the tokens taken from step 2. q at the receiver's
    # own tokens; k / v (its KV head) at every token up to the last of them.
    where: dict[tuple[int, int], torch.Tensor] = {}
    for r in receivers:
        at = r.mask.clone()
        if slot != "q":
            for row in range(at.shape[0]):
                last = int(at[row].nonzero().max()) if at[row].any() else -1
                at[row, : last + 1] = True
        index = r.node.head // (model.n_heads // model.n_kv_heads) if slot != "q" else r.node.head
        key = (r.node.layer, index)
        where[key] = where[key] | at if key in where else at
    step3 = []
    for (layer, index), at in where.items():
        value = recorded[Site(component, layer)][:, :, index]

        def patch(cur, v=value, a=at):
            return torch.where(a[..., None], v, cur)

        step3.append(Intervention(Site(component, layer, index), Mode.REPLACE, patch))
    run = model.run(problem.clean, interventions=step3, positions=problem.positions)
    return (m_clean - float(problem.score(run.logits).mean())) / (m_clean - m_bad)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_path_evidence_matches_the_slow_reference(family):
    """Into the logits, into the heads at each position, and into a group across positions and
    layers (as the name movers are for rule 6)."""
    model = tiny_model(family)
    problem = _tiny_problem(model)
    checked = members(model, problem, TINY_PAIRS)
    by_name = {m.pair.name: m for m in checked}
    groups = position_groups(checked)
    assert sorted(groups) == ["heads@END", "heads@S1+1", "heads@S2", "heads@other"]
    groups["mixed"] = [by_name["L1.H0@S2"], by_name["L2.H1@END"]]
    with torch.no_grad():
        fast = path_evidence(model, problem, checked, max_rows=6, progress=False, groups=groups)
        nonzero = mixed = 0
        for sender in checked:
            keys = set(fast[sender.pair.name])
            assert len(keys) == 1 + 3 * len(groups)  # every group slot, measured or exactly 0
            for key, value in fast[sender.pair.name].items():
                if key == "path_to_logits":
                    receivers, slot = None, "logits"
                else:
                    name, slot = key[len("path_to_") :].rsplit("_", 1)
                    receivers = groups[name]
                slow = _slow_path(model, problem, sender, receivers, slot)
                assert value == pytest.approx(slow, abs=1e-4), (sender.pair.name, key)
                if receivers is not None:
                    nonzero += abs(slow) > 1e-3
                    mixed += abs(slow) > 1e-3 and name == "mixed"
    assert nonzero >= 10 and mixed >= 4  # the comparison is not between zeros


def test_logits_path_of_an_end_pair_equals_whole_head_path_patching():
    """At END with every other head frozen, a head's output elsewhere cannot reach END."""
    model = tiny_model("llama")
    problem = _tiny_problem(model)
    checked = members(model, problem, [Pair("L1.H3", "END"), Pair("L2.H1", "END")])
    with torch.no_grad():
        fast = path_evidence(model, problem, checked, slots=(), progress=False)
    for m in checked:
        whole = path_patch(
            model, problem, [Site(Component.Z, m.node.layer, m.node.head)], ["logits"]
        )
        assert fast[m.pair.name]["path_to_logits"] == pytest.approx(whole.score, abs=1e-5)


def test_direct_effect_and_attention_match_dla_and_a_loop():
    model = tiny_model("qwen2")
    problem = _tiny_problem(model)
    pairs = [Pair("L2.H1", "END"), Pair("L1.H0", "S2"), Pair("L2.mlp", "END")]
    evidence = head_evidence(model, problem, pairs, progress=False, slots=())
    dla = direct_logit_attribution(model, problem, progress=False)
    assert evidence["L2.H1@END"]["direct_effect"] == pytest.approx(
        float(dla.heads[:, 2, 1].mean()), abs=1e-5
    )
    assert evidence["L2.mlp@END"]["direct_effect"] == pytest.approx(
        float(dla.mlp[:, 2].mean()), abs=1e-5
    )
    assert evidence["L1.H0@S2"]["direct_effect"] == 0.0  # not at the metric position
    torch.testing.assert_close(
        direct_effects(model, problem).total, dla.total, atol=1e-4, rtol=1e-4
    )
    pattern = model.run(problem.clean, capture=[Site(Component.PATTERN, 1)])[
        Site(Component.PATTERN, 1)
    ]
    expected = sum(float(pattern[row, 0, 5, 2]) for row in range(3)) / 3  # S2 -> S1, per row
    assert evidence["L1.H0@S2"]["attention_to_S1"] == pytest.approx(expected, abs=1e-6)
    other = [i for i in range(9) if i not in (2, 3, 5, 8)]
    expected = sum(float(pattern[row, 0, 5, other].sum()) for row in range(3)) / 3
    assert evidence["L1.H0@S2"]["attention_to_other"] == pytest.approx(expected, abs=1e-6)
    assert -1.0 <= evidence["L2.H1@END"]["copying"] <= 1.0


# --- rules on hand-written evidence -------------------------------------------------------


def _ev(**values) -> dict[str, float]:
    base = {f"attention_to_{n}": 0.0 for n in ("IO", "S1", "S1+1", "S2", "END", "other")}
    base.update(direct_fraction=0.0, copying=0.0, path_to_logits=0.0)
    return {**base, **{k.replace("S1p1", "S1+1"): v for k, v in values.items()}}


def test_ioi_rules_give_the_papers_classes_and_leave_misfits_unexplained():
    evidence = {
        "L9.H1@END": _ev(attention_to_IO=0.6, direct_fraction=0.3, copying=0.8),
        "L9.H2@END": _ev(attention_to_IO=0.5, direct_fraction=-0.2, copying=-0.7),
        "L7.H3@END": _ev(attention_to_S2=0.4, **{"path_to_name mover_q": 0.1}),
        "L5.H0@S2": _ev(attention_to_S1p1=0.5, attention_to_S1=0.1),
        "L3.H0@S2": _ev(attention_to_S1=0.7),
        "L2.H0@S1+1": _ev(attention_to_S1=0.9),
        "L10.H0@END": _ev(attention_to_IO=0.2),
        "L8.H0@END": _ev(attention_to_IO=0.6, direct_fraction=0.2, copying=0.0),
        "L6.H0@S2": _ev(attention_to_S1=0.1, **{"path_to_heads@END_k": 0.05}),
        "L4.H4@IO": _ev(attention_to_IO=0.9),
        "L1.mlp@S2": {"direct_fraction": 0.0, "path_to_logits": 0.0},
    }
    pairs = [Pair(*name.split("@")) for name in evidence]
    labels = label_pairs(pairs, evidence, "END", backup_nodes=frozenset({"L10.H0"}))
    assert labels == {
        "L9.H1@END": ("name mover", "name mover"),
        "L9.H2@END": ("negative name mover", "negative name mover"),
        "L7.H3@END": ("S-inhibition", "S-inhibition"),
        "L5.H0@S2": ("induction", "induction"),
        "L3.H0@S2": ("duplicate token", "duplicate token"),
        "L2.H0@S1+1": ("previous token", "previous token"),
        "L10.H0@END": ("backup name mover", "backup name mover"),
        "L8.H0@END": ("writes the answer at END", None),  # does not copy: no paper class
        "L6.H0@S2": ("moves other positions to END k", None),
        "L1.mlp@S2": ("MLPs at S2", None),
    }  # L4.H4@IO attends but has no measured output: unexplained


def test_descriptive_classes_on_a_task_without_ioi_positions():
    """greater-than: named positions YY and END; no paper class can apply."""
    evidence = {
        "L9.H1@END": {"attention_to_YY": 0.7, "direct_fraction": 0.4, "copying": 0.9},
        "L9.H2@END": {"attention_to_YY": 0.1, "direct_fraction": -0.1},
        "L6.H0@YY": {"attention_to_YY": 0.5, "path_to_heads@END_v": 0.2},
        "L3.H0@END": {"attention_to_YY": 0.6, "path_to_heads@END_q": 0.01},
    }
    pairs = [Pair(*name.split("@")) for name in evidence]
    labels = label_pairs(pairs, evidence, "END")
    assert labels == {
        "L9.H1@END": ("writes the answer at END", None),
        "L9.H2@END": ("writes against the answer at END", None),
        "L6.H0@YY": ("moves YY to END v", None),
    }


def test_class_sentence_states_the_numbers():
    model, problem = planted_induction_model(), induction_problem()
    evidence = head_evidence(model, problem, [Pair("L1.H0", "S2")], progress=False)
    evidence["L1.H0@S2"]["attention_to_S1+1"] = 0.0  # no longer an induction head by the rules
    classes, unexplained = classify(model, problem, _circuit([Pair("L1.H0", "S2")]),
                                    progress=False, evidence=evidence)  # fmt: skip
    (only,) = classes
    assert only.name == "writes the answer at S2" and only.paper_class is None
    assert f"{only.evidence['direct_effect']:+.2f} logits" in only.sentence
    assert "(+100% of the clean logit difference)" in only.sentence and unexplained == ()


# --- backup invariants and bad input ------------------------------------------------------


def test_backup_on_identical_prompts_finds_nothing_and_reports_consistent_numbers():
    model = tiny_model("llama")
    problem = _tiny_problem(model)
    pairs = [Pair("L2.H1", "END"), Pair("L2.H3", "END")]
    classes, _ = classify(model, problem, _circuit(pairs), progress=False,
                          evidence={p.name: {"direct_fraction": 1.0} for p in pairs})  # fmt: skip
    writer = classes[0].name
    same = replace(problem, corrupted=problem.clean)
    nothing = find_backup(model, same, classes, writer)
    assert nothing.heads == () and nothing.restored == 0.0  # knocking out by itself: no change
    before = direct_effects(model, problem).heads.mean(0)
    for ablation in ("counterfactual", "mean"):
        backup = find_backup(model, problem, classes, writer, ablation=ablation)
        removed = float(before[2, 1] + before[2, 3])
        assert backup.knocked_out_effect == pytest.approx(removed, abs=1e-6)
        rises = [h.direct_after - h.direct_before for h in backup.heads]
        assert all(r >= THRESHOLDS.backup * abs(removed) for r in rises)
        assert {h.node for h in backup.heads}.isdisjoint({"L2.H1", "L2.H3"})
        assert backup.restored == pytest.approx(sum(rises) / removed)
        for h in backup.heads:
            layer, head = (int(x[1:]) for x in h.node.split("."))
            assert h.direct_before == pytest.approx(float(before[layer, head]), abs=1e-6)


@pytest.mark.parametrize(
    ("pairs", "error", "words"),
    [
        ([Pair("L0.H0", "YY")], TaskError, "no position 'YY'"),
        ([Pair("L0.H0", "S2"), Pair("L0.H0", "S2")], UnknownNameError, "listed twice"),
        ([Pair("L7.H0", "S2")], UnknownNameError, "L7"),
        ([Pair("input", "S2")], UnknownNameError, "only heads and MLPs"),
    ],
)
def test_bad_pairs_are_one_line_errors(pairs, error, words):
    model, problem = planted_induction_model(), induction_problem(n=2)
    with pytest.raises(error, match=words) as caught:
        head_evidence(model, problem, pairs, progress=False)
    assert "\n" not in str(caught.value)


def test_bad_settings_are_errors():
    model, problem = planted_induction_model(), induction_problem(n=2)
    with pytest.raises(InputError, match="slots are q, k, v"):
        head_evidence(model, problem, [Pair("L1.H0", "S2")], progress=False, slots=("x",))
    classes, _ = classify(model, problem, _circuit([Pair("L1.H0", "S2")]), progress=False)
    with pytest.raises(TaskError, match="no class named 'name mover'"):
        find_backup(model, problem, classes, "name mover")
    with pytest.raises(InputError, match="choose one of counterfactual, mean"):
        find_backup(model, problem, classes, ablation="zero")
    assert math.isfinite(classes[0].evidence["direct_effect"])


def test_in_context_copying_equals_a_loop_over_the_captured_values():
    """`copying` reads the OV circuit on the residual stream at the prompts' name tokens: the
    same as the model's own value vectors there, times W_O, through the frozen final norm."""
    from wildcircuits.localise.dla import unembed_matrix
    from wildcircuits.localise.norms import freeze_norm
    from wildcircuits.models.adapters import get_module

    model = tiny_model("llama")
    problem = _tiny_problem(model)
    ids = torch.tensor([5, 6, 7, 8, 9, 10])
    clean = problem.clean.input_ids.clone()
    clean[:, 2] = torch.tensor([5, 6, 7])  # the answer at S1, the distractor at S2
    clean[:, 5] = torch.tensor([8, 9, 10])
    problem = replace(problem, clean=replace(problem.clean, input_ids=clean))
    pairs = [Pair(f"L1.H{h}", "END") for h in range(model.n_heads)]
    evidence = head_evidence(model, problem, pairs, progress=False, slots=())
    v = model.run(problem.clean, capture=[Site(Component.V, 1)])[Site(Component.V, 1)]
    group = model.n_heads // model.n_kv_heads
    weight, _ = unembed_matrix(model)
    final_norm = get_module(model.hf_model, model.adapter.final_norm)
    for head in range(model.n_heads):
        top = bottom = 0
        for row in range(3):
            for position in (2, 5):
                out = v[row, position, head // group] @ model.out_weight(1)[head]  # (d_model,)
                normed = freeze_norm(final_norm, out[None]).linear(out[None])[0]
                logits = normed.float() @ weight[ids].float().T
                own = int((ids == clean[row, position]).nonzero())
                top += int(logits.argmax()) == own
                bottom += int(logits.argmin()) == own
        expected = (top - bottom) / 6
        assert evidence[f"L1.H{head}@END"]["copying"] == pytest.approx(expected, abs=1e-6)
