"""Planted ground truth: a tiny GPT-2 whose circuit is known by construction (hand-set weights).

Two layers, two heads each, MLPs zeroed (attention-only), untied unembedding:
- L0.H0, a previous-token head: its query reads the position, its key the position + 1, so
  every token attends to the one before it; its OV copies that token's identity into a
  "previous token" subspace.
- L1.H0, an induction head: its query reads the current token, its key the previous-token
  subspace, so at the second S it attends to the token after the first S (S1+1); its OV copies
  that token into an "answer" subspace, which the unembedding reads (it predicts that token).
- L0.H1 and L1.H1 are dead (all weights zero).

The residual stream is cut into subspaces of features: token (vocab), position, previous token
(vocab), answer (vocab). Feature f is written +x on dim f and -x on dim f + n_features, so every
vector has zero mean and LayerNorm's centring does nothing; LayerNorm only rescales.

`induction_problem` makes prompts r_0 .. S X .. S with distinct random tokens: S1 is the first S,
S2 (the metric position) the second; the answer is X (the token after S1), the distractor a
token not in the prompt; the corrupted prompt replaces the first S by a fresh token, so there is
nothing to induct from.
"""

from __future__ import annotations

import functools

import torch
import transformers as hf

from wildcircuits.models import InstrumentedModel, tokens_from_ids, wrap_hf_model
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.tasks.metrics import make_targets

VOCAB = 20
N_POSITIONS = 16
FIRST_TOKEN = 3  # ids below are special (pad, bos, eos)
TOKEN, POSITION, PREVIOUS, ANSWER = 0, VOCAB, VOCAB + N_POSITIONS, 2 * VOCAB + N_POSITIONS
N_FEATURES = 3 * VOCAB + N_POSITIONS
D_MODEL = 2 * N_FEATURES
D_HEAD = D_MODEL // 2


def _feature(f: int, value: float = 1.0) -> torch.Tensor:
    vector = torch.zeros(D_MODEL)
    vector[f], vector[f + N_FEATURES] = value, -value
    return vector


def _set_head(attn, head: int, read_q, read_k, read_v, write, sharp: float, gain: float):
    """Set one head's Q / K / V reads (residual feature -> head dim) and its O writes."""
    weight = attn.c_attn.weight  # Conv1D (d_model, 3 * d_model): x @ weight
    base = head * D_HEAD
    for part, reads, scale in ((0, read_q, sharp), (1, read_k, 1.0), (2, read_v, 1.0)):
        for feature, dim in reads:
            weight[feature, part * D_MODEL + base + dim] = scale
    for dim, feature in write:
        attn.c_proj.weight[base + dim] = _feature(feature, gain)


@functools.cache
def planted_induction_model() -> InstrumentedModel:
    """The two-layer model of the module doc (float32, eager attention)."""
    config = hf.GPT2Config(
        n_layer=2, n_head=2, n_embd=D_MODEL, n_inner=4, vocab_size=VOCAB,
        n_positions=N_POSITIONS, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        pad_token_id=0, attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0,
    )  # fmt: skip
    model = hf.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
            parameter.requires_grad_(False)
        for name, parameter in model.named_parameters():
            if "ln" in name and name.endswith("weight"):
                parameter.fill_(1.0)
        t = model.transformer
        for token in range(VOCAB):
            t.wte.weight[token] = _feature(TOKEN + token)
            model.lm_head.weight[token] = _feature(ANSWER + token, 2.0)
        for position in range(N_POSITIONS):
            t.wpe.weight[position] = _feature(POSITION + position)
        positions, tokens = range(N_POSITIONS), range(VOCAB)
        _set_head(
            t.h[0].attn, 0,
            read_q=[(POSITION + i, i) for i in positions],
            read_k=[(POSITION + j, j + 1) for j in positions if j + 1 < N_POSITIONS],
            read_v=[(TOKEN + v, v) for v in tokens],
            write=[(v, PREVIOUS + v) for v in tokens], sharp=5.0, gain=0.16,
        )  # fmt: skip
        _set_head(
            t.h[1].attn, 0,
            read_q=[(TOKEN + v, v) for v in tokens],
            read_k=[(PREVIOUS + v, v) for v in tokens],
            read_v=[(TOKEN + v, v) for v in tokens],
            write=[(v, ANSWER + v) for v in tokens], sharp=8.0, gain=0.2,
        )  # fmt: skip
    return wrap_hf_model(model, model_id="planted-induction")


def induction_problem(n: int = 8, length: int = 10, seed: int = 0) -> PatchingProblem:
    """Prompts r_0 .. S X .. S (module doc): named positions S1 and S2, metric at S2."""
    generator = torch.Generator().manual_seed(seed)
    clean, corrupted, answers, distractors, s1 = [], [], [], [], []
    for _ in range(n):
        pool = FIRST_TOKEN + torch.randperm(VOCAB - FIRST_TOKEN, generator=generator)
        row = pool[:length].clone()
        first = int(torch.randint(1, length - 3, (1,), generator=generator))
        row[-1] = row[first]
        broken = row.clone()
        broken[first] = pool[length]
        clean.append(row)
        corrupted.append(broken)
        answers.append([int(row[first + 1])])
        distractors.append([int(pool[length + 1])])
        s1.append(first)
    end = torch.full((n,), length - 1)
    return PatchingProblem(
        clean=tokens_from_ids(torch.stack(clean)),
        corrupted=tokens_from_ids(torch.stack(corrupted)),
        positions=end,
        targets=make_targets(answers, distractors),
        named_positions={"S1": torch.tensor(s1), "S2": end},
        provenance={"task": "planted induction", "model": "planted-induction", "n": n},
    )


# ground-truth edges (edge-graph names, `wildcircuits.graph.graph`) ------------------------------
#: Every edge the hand-set weights of `planted_induction_model` compute through, and why.
INDUCTION_MECHANISM = {
    "input->a0.h0<q>": "the previous-token head's query reads the position embedding",
    "input->a0.h0<k>": "its key reads the position embedding (shifted by one)",
    "input->a0.h0<v>": "its value reads the token embedding (the token it copies forward)",
    "input->a1.h0<q>": "the induction head's query reads the current token (S at S2)",
    "a0.h0->a1.h0<k>": "its key reads the previous-token subspace a0.h0 writes",
    "input->a1.h0<v>": "its value reads the token it attends to (X at S1+1)",
    "a1.h0->logits": "the unembedding reads the answer subspace a1.h0 writes",
}
#: The mechanism edges along which `induction_problem`'s clean and corrupted runs differ.
INDUCTION_CORRUPTED = frozenset({"input->a0.h0<v>", "a0.h0->a1.h0<k>", "a1.h0->logits"})
SCOPES = ("corruption", "mechanism")


def planted_edges(model="planted-induction", scope: str = "corruption") -> frozenset[str]:
    """The true edges of a planted model (its id or the model itself), as edge names.

    scope "mechanism": every edge the construction computes through (`INDUCTION_MECHANISM` says
    why each one is true); every other edge reads or feeds a dead head or MLP (all weights zero),
    or reads a subspace nothing downstream reads. Zero-ablating any mechanism edge breaks the
    behaviour, so this is the ground truth for zero-ablation methods.

    scope "corruption" (default): the mechanism edges whose input differs between
    `induction_problem`'s clean and corrupted prompts (it replaces the first S only):
    input -> a0.h0<v> (the token at S1), a0.h0 -> a1.h0<k> (the previous token at S1+1, so the
    induction head finds no match) and a1.h0 -> logits (its answer). The other four carry the
    same values in both runs: positions (a0.h0's q and k), S at S2 (a1.h0's q) and X at S1+1
    (a1.h0's v). Patching them with the corrupted run changes nothing, so no counterfactual
    method can see them; scoring counterfactual methods against them would measure the task's
    corruption, not the method. This is the ground truth for counterfactual methods.

    LayerNorm makes a few non-mechanism edges matter under zero ablation (removing the embeddings
    from the final residual stream rescales the logits); they stay false: the weights do not
    read them, only the norm of the stream does.
    """
    model_id = model if isinstance(model, str) else model.info.model_id
    if model_id != "planted-induction":
        raise ValueError(f"no planted edges for {model_id!r}; planted models: planted-induction")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; expected one of {SCOPES}")
    return INDUCTION_CORRUPTED if scope == "corruption" else frozenset(INDUCTION_MECHANISM)
