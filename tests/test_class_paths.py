"""Class-to-class path patching: the batched, position-restricted version against a slow loop
(one sender class at a time, three full forwards, receiver inputs replaced row by row)."""

from __future__ import annotations

import pytest
import torch

from tests.test_path_patching import PROVENANCE, metric, normalized, slow_step2
from tests.tiny_models import tiny_model, tiny_tokens
from wildcircuits.errors import InputError, SiteError
from wildcircuits.explanation.class_paths import (
    class_paths,
    forward_counts,
    path_jobs,
)
from wildcircuits.explanation.positions import position_index
from wildcircuits.names import LOGITS, parse_display_receiver
from wildcircuits.patching.hooks import Intervention, Mode
from wildcircuits.patching.path import path_cache, path_patch, path_patch_sets, receiver_site
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site
from wildcircuits.results.explain import HeadClass, Pair
from wildcircuits.tasks.metrics import make_targets


def named_problem(batch: int = 4) -> PatchingProblem:
    """Random prompts with IOI-like named positions that differ per row."""
    clean = tiny_tokens(batch, 9, seed=1, padded=False)
    corrupted = tiny_tokens(batch, 9, seed=2, padded=False)
    targets = make_targets([[5 + i] for i in range(batch)], [[40 + i] for i in range(batch)])
    named = {
        "S1": torch.tensor([1, 2, 1, 2][:batch]),
        "IO": torch.tensor([3, 1, 3, 4][:batch]),
        "S2": torch.tensor([5, 6, 6, 5][:batch]),
        "END": clean.last_index,
    }
    return PatchingProblem(clean, corrupted, clean.last_index, targets, named_positions=named,
                           provenance=PROVENANCE)  # fmt: skip


def klass(name: str, *members: str) -> HeadClass:
    pairs = tuple(Pair(*m.split("@")) for m in members)
    return HeadClass(name, None, pairs, f"{name} (synthetic)")


CLASSES = (
    klass("early", "L0.H1@S2", "L0.H3@S1+1", "L0.mlp@S2"),
    klass("middle", "L1.H0@END", "L1.H2@S2", "L1.H3@END", "L1.mlp@END"),
    klass("late", "L2.H1@END", "L2.H0@S2"),  # L2.H0 and L2.H1 share KV head 0
    klass("also late", "L2.H3@END"),
)


def sender_sites(c: HeadClass) -> dict[Site, set[str]]:
    """Each member component's site -> the positions it is a member at."""
    out: dict[Site, set[str]] = {}
    for p in c.members:
        layer = int(p.node[1 : p.node.index(".")])
        head = None if p.node.endswith("mlp") else int(p.node.split(".H")[1])
        site = Site(Component.Z if head is not None else Component.MLP_OUT, layer, head)
        out.setdefault(site, set()).add(p.position)
    return out


def masked_senders(problem, c: HeadClass) -> list[tuple[Site, torch.Tensor]]:
    """(site, (batch, pos) mask of its member positions' tokens) per member component."""
    names, index = position_index(problem)
    out = []
    for site, positions in sender_sites(c).items():
        at = torch.zeros(problem.batch, problem.clean.seq_len, dtype=torch.bool)
        for name in positions:
            at |= index == names.index(name)
        out.append((site, at))
    return out


def slow_step2_at(model, problem, senders: dict[Site, set[str]]) -> list[Intervention]:
    """Steps 1-2, token by token: a sender's value is the corrupted run's at the tokens of its
    member positions; elsewhere a sender head keeps its clean z (every other head is frozen
    clean, as `slow_step2`) and a sender MLP its value in this run (MLPs are recomputed)."""
    names, index = position_index(problem)
    step2 = slow_step2(model, problem, list(senders))
    corrupt = model.run(problem.corrupted, capture=list(senders))
    clean = model.run(problem.clean, capture=list(senders))

    def member_tokens(site):
        return [
            (row, column)
            for row in range(problem.batch)
            for column in range(problem.clean.seq_len)
            if index[row, column] >= 0 and names[index[row, column]] in senders[site]
        ]

    def patched(site, base):
        value = base.clone()
        for row, column in member_tokens(site):
            value[row, column] = corrupt[site][row, column]
        return value

    out = []
    for patch in step2:
        site = patch.site
        if site not in senders:
            out.append(patch)
        elif site.component is Component.MLP_OUT:
            out.append(Intervention(site, Mode.REPLACE, lambda now, site=site: patched(site, now)))
        else:
            out.append(Intervention(site, Mode.REPLACE, patched(site, clean[site])))
    return out


def slow_class_path(model, problem, senders, receivers, positions) -> float:
    """Steps 1-3 of path patching with nothing cached or batched; in step 3 each receiver site
    takes the recorded value at (row, position) pairs listed one by one: a q / MLP input at
    the member's token, a k / v at every token up to it."""
    names, index = position_index(problem)
    step2 = slow_step2_at(model, problem, senders)
    if receivers[0].node == LOGITS:
        return normalized(model, problem, metric(model, problem, step2))
    sites = [receiver_site(r) for r in receivers]
    run2 = model.run(problem.clean, capture=sites, interventions=step2)
    run0 = model.run(problem.clean, capture=sites)
    values = {s: run0[s].clone() for s in sites}
    for receiver, site, position in zip(receivers, sites, positions, strict=True):
        for row in range(problem.batch):
            columns = [c for c in range(problem.clean.seq_len) if names[index[row, c]] == position]
            if receiver.slot.value in "kv" and columns:
                columns = range(max(columns) + 1)
            for column in columns:
                values[site][row, column] = run2[site][row, column]
    patches = [Intervention(s, Mode.REPLACE, v) for s, v in values.items()]
    return normalized(model, problem, metric(model, problem, patches))


def receivers_of(model, c: HeadClass, slot: str):
    group = model.n_heads // model.n_kv_heads
    out = []
    for p in c.members:
        if p.node.endswith("mlp") != (slot == "in"):
            continue
        layer, head = p.node.split(".")
        if slot in ("k", "v"):
            name = f"{layer}.H{int(head[1:]) // group}:{slot}"
        else:
            name = p.node if slot == "in" else f"{p.node}:{slot}"
        out.append((parse_display_receiver(name), p.position))
    return [r for r, _ in out], [pos for _, pos in out]


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_batched_class_paths_equal_slow_loop(family):
    model, problem = tiny_model(family), named_problem()
    by_name = {c.name: c for c in CLASSES}
    paths = class_paths(model, problem, CLASSES, progress=False, max_rows=8, n_bootstrap=0)
    assert paths, "some arrows are measurable"
    for path in paths:
        senders = sender_sites(by_name[path.sender])
        if path.receiver == "logits":
            receivers, positions = [parse_display_receiver("logits")], ["END"]
        else:
            receivers, positions = receivers_of(model, by_name[path.receiver], path.slot)
        slow = slow_class_path(model, problem, senders, receivers, positions)
        assert path.effect == pytest.approx(slow, abs=1e-5), path


def test_batched_equals_one_path_patch_per_sender_class():
    model, problem = tiny_model("qwen2"), named_problem()
    paths = iter(class_paths(model, problem, CLASSES, progress=False, max_rows=5, n_bootstrap=0))
    by_name = {c.name: c for c in CLASSES}
    for job in path_jobs(model, problem, CLASSES):
        for sender in job.senders:
            senders = masked_senders(problem, by_name[sender])
            (rows,) = path_patch_sets(model, problem, path_cache(model, problem), [senders],
                                      list(job.receivers), list(job.masks))  # fmt: skip
            one = normalized(model, problem, float(rows.mean()))
            path = next(paths)
            assert (path.sender, path.receiver, path.slot) == (sender, job.receiver, job.slot)
            assert path.effect == pytest.approx(one, abs=1e-5)


def test_receiver_at_every_position_equals_plain_path_patch():
    model, problem = tiny_model("llama"), named_problem()
    senders = [Site(Component.Z, 0, 1), Site(Component.MLP_OUT, 0), Site(Component.Z, 1, 2)]
    receivers = ["L2.H1:q", "L2.H0:k", "L2.mlp"]
    every = torch.ones(problem.batch, problem.clean.seq_len, dtype=torch.bool)
    plain = path_patch(model, problem, senders, receivers)
    masked = path_patch(model, problem, senders, receivers, [every, every, None])
    torch.testing.assert_close(masked.per_example, plain.per_example, atol=1e-6, rtol=0)
    none = torch.zeros_like(every)
    nothing = path_patch(model, problem, senders, receivers, [none, none, none])
    assert nothing.score == pytest.approx(0.0, abs=1e-6)  # no position patched: clean metric


def test_sender_without_a_path_is_skipped_and_would_be_zero():
    model, problem = tiny_model("llama"), named_problem()
    jobs = {(j.receiver, j.slot): j.senders for j in path_jobs(model, problem, CLASSES)}
    assert "also late" not in jobs[("late", "q")] and "late" not in jobs[("also late", "q")]
    assert ("early", "q") not in jobs  # nothing comes before layer 0
    assert jobs[("middle", "k")] == ("early",)
    assert jobs[("logits", "logits")] == tuple(c.name for c in CLASSES)
    late = path_patch(model, problem, list(sender_sites(CLASSES[3])), ["L2.H1:q"])
    assert late.score == 0.0


def test_forward_count_is_the_shared_step2_plan(monkeypatch):
    model, problem = tiny_model("llama"), named_problem()
    runs = []
    original = type(model).run
    monkeypatch.setattr(
        type(model), "run", lambda self, *a, **k: (runs.append(1), original(self, *a, **k))[1]
    )
    paths = class_paths(model, problem, CLASSES, progress=False, n_bootstrap=0)
    counts = forward_counts(path_jobs(model, problem, CLASSES), problem.batch)
    assert len(runs) == counts["forwards"]
    assert counts["arrows"] == len(paths)
    assert counts["naive_forwards"] > counts["forwards"]


def test_intervals_bracket_the_effect_and_slots_are_named():
    model, problem = tiny_model("llama"), named_problem()
    paths = class_paths(model, problem, CLASSES, progress=False, n_bootstrap=200)
    assert {p.slot for p in paths} == {"q", "k", "v", "in", "logits"}
    for p in paths:
        low, high = p.interval
        assert low <= high
    by_key = {(p.sender, p.receiver, p.slot): p for p in paths}
    assert by_key[("early", "late", "q")].position == "END, S2"
    assert by_key[("early", "logits", "logits")].position == "END"
    assert by_key[("early", "middle", "in")].position == "END"


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ((klass("a", "L0.H1@S9"),), "not one of this task's positions"),
        ((klass("a", "L0.H1@S2"), klass("a", "L1.H1@S2")), "is used twice"),
        ((klass("logits", "L0.H1@S2"),), "reserved"),
        ((klass("a"),), "has no members"),
    ],
)
def test_bad_classes_raise_one_line_errors(classes, message):
    model, problem = tiny_model("llama"), named_problem()
    with pytest.raises(InputError, match=message) as error:
        path_jobs(model, problem, classes)
    assert "\n" not in str(error.value)


def test_bad_receiver_mask_raises():
    model, problem = tiny_model("llama"), named_problem()
    bad = torch.ones(problem.batch, 3, dtype=torch.bool)
    with pytest.raises(SiteError, match="position mask must be a bool tensor"):
        path_patch(model, problem, [Site(Component.Z, 0, 1)], ["L2.H1:q"], [bad])


def test_a_sender_is_patched_only_at_its_members_positions():
    """Members at END cannot reach a receiver at S2 (an earlier token): the arrow is exactly 0,
    while the same components patched at every position do reach it."""
    model, problem = tiny_model("llama"), named_problem()
    at_end = HeadClass("at END", None, (Pair("L1.H0", "END"), Pair("L1.mlp", "END")), "")
    at_s2 = HeadClass("at S2", None, (Pair("L2.H0", "S2"),), "")
    paths = class_paths(model, problem, [at_end, at_s2], progress=False, n_bootstrap=0)
    into = {p.slot: p.effect for p in paths if p.receiver == "at S2"}
    assert set(into) == {"q", "k", "v"} and all(e == 0.0 for e in into.values()), into
    everywhere = path_patch(model, problem, list(sender_sites(at_end)), ["L2.H0:q"])
    assert abs(everywhere.score) > 1e-4  # the unmasked senders' later tokens are what moved it


def test_path_patch_jobs_refuses_logits_and_unknown_sender_sets():
    from wildcircuits.errors import SiteError
    from wildcircuits.patching.path import path_patch_jobs
    from wildcircuits.patching.path_steps import ReceiverJob

    model, problem = tiny_model("llama"), named_problem()
    cache = path_cache(model, problem)
    sets = [[Site(Component.Z, 0, 1)]]
    q = parse_display_receiver("L2.H1:q")
    logits = ReceiverJob((parse_display_receiver("logits"),), (None,), (0,))
    with pytest.raises(SiteError, match="use path_patch_sets"):
        path_patch_jobs(model, problem, cache, sets, [logits])
    with pytest.raises(SiteError, match="must name some of the 1 sets"):
        path_patch_jobs(model, problem, cache, sets, [ReceiverJob((q,), (None,), (3,))])
