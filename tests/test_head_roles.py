"""Head roles on a hand-built model with one known previous-token head and one induction head."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers as hf

from tests.test_dla import tiny_problem
from tests.tiny_models import tiny_model
from wildcircuits.errors import SiteError
from wildcircuits.localise.head_roles import RandomSequences, head_roles, save_patterns
from wildcircuits.localise.head_scores import (
    answer_positions,
    name_mover_scores,
    ov_logits,
    pattern_scores,
    repeated_random_tokens,
)
from wildcircuits.models import tokens_from_ids, wrap_hf_model
from wildcircuits.names import Shape, head_node, parse_head
from wildcircuits.patching.sites import Component, Site

VOCAB, POSITIONS, D_MODEL, D_HEAD = 16, 24, 64, 32
TOKEN, POS, PREV, DUMP = 0, VOCAB, VOCAB + POSITIONS, VOCAB + POSITIONS + VOCAB


def _zero_sum(weight: torch.Tensor) -> None:
    """Make every output column sum to zero over inputs via the unused DUMP input dimension.

    LayerNorm maps x to a * (x - mean(x)); a map whose columns sum to zero ignores the mean, so it
    sees a * x: the hand-set one-hot structure survives the norm.
    """
    weight[DUMP] = -weight.sum(0)


def induction_model():
    """GPT-2 shaped, 2 layers x 2 heads, MLPs zero. L0.H0 attends to the previous position and
    copies its token into the PREV dims; L1.H1 attends to keys whose PREV token is the query's
    token (an induction head). L0.H1 and L1.H0 have zero weights (uniform attention)."""
    config = hf.GPT2Config(
        vocab_size=VOCAB, n_positions=POSITIONS, n_embd=D_MODEL, n_layer=2, n_head=2,
        bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    model = hf.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.fill_(1.0 if ("ln" in name and name.endswith("weight")) else 0.0)
        t = model.transformer
        t.wte.weight[:, TOKEN:POS] = torch.eye(VOCAB)
        t.wpe.weight[:, POS:PREV] = torch.eye(POSITIONS)
        attn0 = t.h[0].attn.c_attn.weight  # (d_model, 3 * d_model): [q | k | v], head h at h*D_HEAD
        q0, k0, v0 = (attn0[:, i * D_MODEL : i * D_MODEL + D_HEAD] for i in range(3))
        q0[POS:PREV, :POSITIONS] = 3.0 * torch.eye(POSITIONS)  # query i -> coordinate i
        k0[POS : PREV - 1, 1:POSITIONS] = 3.0 * torch.eye(POSITIONS - 1)  # key j -> j + 1
        v0[TOKEN:POS, :VOCAB] = torch.eye(VOCAB)
        for block in (q0, k0, v0):
            _zero_sum(block)
        t.h[0].attn.c_proj.weight[:VOCAB, PREV:DUMP] = torch.eye(VOCAB)  # head 0 -> PREV dims
        attn1 = t.h[1].attn.c_attn.weight
        q1 = attn1[:, D_HEAD:D_MODEL]  # head 1 queries
        k1 = attn1[:, D_MODEL + D_HEAD : 2 * D_MODEL]
        q1[TOKEN:POS, :VOCAB] = 4.0 * torch.eye(VOCAB)  # current token
        k1[PREV:DUMP, :VOCAB] = 4.0 * torch.eye(VOCAB)  # previous token
        _zero_sum(q1)
        _zero_sum(k1)
    return wrap_hf_model(model, model_id="hand-built-induction")


def test_hand_built_heads_attend_as_designed() -> None:
    model = induction_model()
    tokens, start = repeated_random_tokens(model, batch=4, length=8, seed=3)
    assert start == 0 and tokens.input_ids.shape == (4, 16)
    run = model.run(tokens, capture=[Site(Component.PATTERN, 0), Site(Component.PATTERN, 1)])
    prev = run[Site(Component.PATTERN, 0)][:, 0]  # (batch, pos, kv_pos)
    assert (prev[:, torch.arange(1, 16), torch.arange(15)] > 0.99).all()
    induction = run[Site(Component.PATTERN, 1)][:, 1]
    assert (induction[:, torch.arange(9, 16), torch.arange(2, 9)] > 0.95).all()


def test_role_scores_find_exactly_the_built_heads() -> None:
    model = induction_model()
    roles = head_roles(model, sequences=RandomSequences(batch=8, length=10, seed=0))
    assert set(roles.scores) == {"previous_token", "induction", "duplicate_token"}
    assert roles.heads_with("previous_token") == [(0, 0)]
    assert roles.heads_with("induction") == [(1, 1)]
    assert roles.heads_with("duplicate_token") == []
    assert roles.scores["previous_token"][0, 0] > 0.99
    assert roles.scores["induction"][1, 1] > 0.9
    assert roles.labels(1, 1) == ["induction head"]


def test_pattern_scores_match_a_slow_loop() -> None:
    model = tiny_model("llama")
    scores = pattern_scores(model, batch=3, length=6, seed=1)
    tokens, start = repeated_random_tokens(model, 3, 6, seed=1)
    run = model.run(tokens, capture=[Site(Component.PATTERN, 2)])
    pattern = run[Site(Component.PATTERN, 2)]
    for head in range(model.n_heads):
        values = [
            float(pattern[b, head, start + 6 + j, start + j + 1])
            for b in range(3)
            for j in range(5)
        ]
        torch.testing.assert_close(scores["induction"][2, head], torch.tensor(values).mean())


def test_ov_logits_match_a_slow_reference() -> None:
    model = tiny_model("gpt2")
    ids = torch.tensor([5, 9, 20])
    logits = ov_logits(model, 1, ids)
    block = model.hf_model.transformer.h[1]
    x = block.ln_1(model.hf_model.transformer.wte.weight[9])
    v = (x @ block.attn.c_attn.weight + block.attn.c_attn.bias)[2 * 32 :]  # v of all heads
    head = 3
    out = v[head * 8 : (head + 1) * 8] @ block.attn.c_proj.weight[head * 8 : (head + 1) * 8]
    ln_f = model.hf_model.transformer.ln_f
    centred = out - out.mean()
    normed = centred / torch.sqrt(out.var(unbiased=False) + ln_f.eps) * ln_f.weight
    expected = normed @ model.hf_model.lm_head.weight[ids].T
    torch.testing.assert_close(logits[head, 1], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("distractors", [False, True])
def test_name_mover_matches_slow_reference(distractors: bool) -> None:
    model = tiny_model("qwen2")
    problem = tiny_problem(model)
    ids = problem.clean.input_ids.clone()
    ids[:, 2] = problem.targets.answers[:, 0]  # each answer appears in its prompt at position 2
    ids[:, 4] = problem.targets.distractors[:, 0]  # and each distractor at position 4
    clean = tokens_from_ids(ids, problem.clean.attention_mask)
    problem = dataclasses.replace(problem, clean=clean, corrupted=clean)
    where = 4 if distractors else 2
    assert answer_positions(problem, distractors=distractors).tolist() == [where] * 3
    scores = name_mover_scores(model, problem, batch_size=2, distractors=distractors)
    token = problem.targets.distractors if distractors else problem.targets.answers
    layer = 1
    run = model.run(
        clean, capture=[Site(Component.PATTERN, layer), Site(Component.Z, layer),
                        Site(Component.FINAL_RESID)],
    )  # fmt: skip
    norm = model.hf_model.model.norm
    w_u = model.hf_model.lm_head.weight
    for head in range(model.n_heads):
        total = 0.0
        for row in range(problem.batch):
            end = int(problem.positions[row])
            resid = run[Site(Component.FINAL_RESID)][row, end]
            scale = 1 / torch.sqrt(resid.pow(2).mean() + norm.variance_epsilon)
            out = run[Site(Component.Z, layer)][row, end, head] @ model.out_weight(layer)[head]
            effect = (out * scale * norm.weight) @ w_u[token[row, 0]]
            total += float(run[Site(Component.PATTERN, layer)][row, head, end, where] * effect)
        torch.testing.assert_close(
            scores[layer, head], torch.tensor(total / 3), atol=1e-5, rtol=1e-4
        )


def test_role_table_on_a_task_problem(tmp_path) -> None:
    model = tiny_model("gemma3_text")
    problem = tiny_problem(model, sets=True)
    roles = head_roles(model, problem, RandomSequences(batch=2, length=5))
    assert set(roles.scores) == {
        "previous_token", "induction", "duplicate_token", "copying", "copy_suppression",
        "name_mover", "distractor_suppression",
    }  # fmt: skip
    # The tiny prompts contain no distractor token: that score is undefined, not zero.
    assert roles.scores["distractor_suppression"].isnan().all()
    for role, values in roles.scores.items():
        assert values.shape == (3, 4), role
    assert ((roles.scores["copying"] >= 0) & (roles.scores["copying"] <= 1)).all()
    table = roles.table()
    assert len(table) == 12 and table[5]["head"] == "L1.H1"
    path = roles.save(tmp_path)
    assert path.name == "head_roles.json" and (tmp_path / "role_induction.png").exists()


def test_parse_head_and_patterns(tmp_path) -> None:
    assert parse_head("L2.H3", Shape(3, 4)) == head_node(2, 3)
    with pytest.raises(SiteError, match="layers 0..2"):
        parse_head("L3.H0", Shape(3, 4))
    with pytest.raises(SiteError, match="L<layer>"):
        parse_head("12.3", Shape(3, 4))
    model = induction_model()
    tokens, _ = repeated_random_tokens(model, 2, 8)
    paths = save_patterns(model, tokens, [(0, 0), (1, 1)], tmp_path, row=1, info={"model": "x"})
    assert [p.name for p in paths] == ["pattern_L0_H0_p1.png", "pattern_L1_H1_p1.png"]
