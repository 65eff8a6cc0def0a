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


# a sparse random-weight model ------------------------------------------------------------------
SPARSE_LIVE = ("m0", "a1.h2", "a2.h0")  # every other head and MLP writes nothing
SPARSE_X, SPARSE_LENGTH = 3, 8  # the one position the corruption changes; prompt length
SPARSE_GAINS = (25.0, 10.0)  # token embeddings (= unembedding); live heads' q/k/v/o and m0


@functools.cache
def planted_sparse_model() -> InstrumentedModel:
    """The tiny random GPT-2 of tests/tiny_models.py (3 layers x 4 heads, random LayerNorms) with
    every head's and MLP's output zeroed except m0, a1.h2 and a2.h0 (`SPARSE_LIVE`), and the
    attention output biases zeroed (they would write from no head). Generic random weights:
    every live path carries some effect, every dead node carries none."""
    import copy

    from tests.tiny_models import tiny_model

    hf_model = copy.deepcopy(tiny_model("gpt2").hf_model)
    d_model, n_heads = hf_model.config.n_embd, hf_model.config.n_head
    d_head = d_model // n_heads
    with torch.no_grad():
        hf_model.transformer.wte.weight.mul_(SPARSE_GAINS[0])  # tied: the unembedding too
        for layer, block in enumerate(hf_model.transformer.h):
            block.attn.c_proj.bias.zero_()
            for head in range(n_heads):
                dims = slice(head * d_head, (head + 1) * d_head)  # Conv1D rows of c_proj
                if f"a{layer}.h{head}" not in SPARSE_LIVE:
                    block.attn.c_proj.weight[dims] = 0
                    continue
                block.attn.c_proj.weight[dims] *= SPARSE_GAINS[1]
                for part in range(3):  # q, k, v columns of c_attn
                    cols = slice(part * d_model + dims.start, part * d_model + dims.stop)
                    block.attn.c_attn.weight[:, cols] *= SPARSE_GAINS[1]
            if f"m{layer}" in SPARSE_LIVE:
                block.mlp.c_fc.weight.mul_(SPARSE_GAINS[1])
                block.mlp.c_proj.weight.mul_(SPARSE_GAINS[1])
            else:
                block.mlp.c_proj.weight.zero_()
                block.mlp.c_proj.bias.zero_()
    return wrap_hf_model(hf_model, model_id="planted-sparse")


def sparse_problem(n: int = 8, seed: int = 0) -> PatchingProblem:
    """Random prompts; the corrupted prompt changes the token at `SPARSE_X` only; logit diff of
    a random answer over a random distractor at the last position."""
    from tests.tiny_models import VOCAB as TINY_VOCAB

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, TINY_VOCAB, (n, SPARSE_LENGTH), generator=generator)
    other = ids.clone()
    shift = torch.randint(1, TINY_VOCAB - 3, (n,), generator=generator)
    other[:, SPARSE_X] = (ids[:, SPARSE_X] - 3 + shift) % (TINY_VOCAB - 3) + 3
    answers = torch.randint(3, TINY_VOCAB, (n, 2), generator=generator)
    targets = make_targets([[int(a)] for a in answers[:, 0]], [[int(d)] for d in answers[:, 1]])
    clean = tokens_from_ids(ids)
    return PatchingProblem(
        clean=clean,
        corrupted=tokens_from_ids(other),
        positions=clean.last_index,
        targets=targets,
        named_positions={"X": torch.full((n,), SPARSE_X)},
        provenance={"task": "planted sparse", "model": "planted-sparse", "n": n},
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

#: planted-sparse: every edge between live nodes (random weights read everything they get).
SPARSE_MECHANISM = frozenset(
    ["input->m0"]
    + [f"{u}->a1.h2<{s}>" for u in ("input", "m0") for s in "qkv"]
    + [f"{u}->a2.h0<{s}>" for u in ("input", "m0", "a1.h2") for s in "qkv"]
    + [f"{u}->logits" for u in ("input", "m0", "a1.h2", "a2.h0")]
)
#: Its edges that carry the change at X to the logits at the last position (END): the sender's
#: output differs at a position the receiver slot reads there. input and m0 differ at X only;
#: a1.h2 differs at X (its query) and after it (its keys / values at X), so a2.h0 reads it in
#: every slot. a2.h0's query and the logits read END, where input and m0 are unchanged.
SPARSE_CORRUPTED = SPARSE_MECHANISM - {
    "input->a2.h0<q>", "m0->a2.h0<q>", "input->logits", "m0->logits",
}  # fmt: skip

PLANTED_MODELS = {
    "planted-induction": (planted_induction_model, induction_problem),
    "planted-sparse": (planted_sparse_model, sparse_problem),
}
_TRUTHS = {
    "planted-induction": (INDUCTION_CORRUPTED, frozenset(INDUCTION_MECHANISM)),
    "planted-sparse": (SPARSE_CORRUPTED, SPARSE_MECHANISM),
}
SCOPES = ("corruption", "mechanism")


def planted_case(name: str, n: int = 8) -> tuple[InstrumentedModel, PatchingProblem]:
    """The planted model `name` and its problem with `n` prompts."""
    if name not in PLANTED_MODELS:
        raise ValueError(f"unknown planted model {name!r}; planted models: {list(PLANTED_MODELS)}")
    model, problem = PLANTED_MODELS[name]
    return model(), problem(n=n)


def planted_edges(model="planted-induction", scope: str = "corruption") -> frozenset[str]:
    """The true edges of a planted model (its id or the model itself), as edge names.

    scope "mechanism": every edge the construction computes through. planted-induction:
    `INDUCTION_MECHANISM` says why each one is true; every other edge reads or feeds a dead head
    or MLP (all weights zero), or reads a subspace nothing downstream reads. planted-sparse:
    every edge between live nodes. Zero-ablating any mechanism edge changes the behaviour, so
    this is the ground truth for zero-ablation methods.

    scope "corruption" (default): the mechanism edges whose input differs between the model's
    clean and corrupted prompts, the ground truth for counterfactual methods. planted-induction
    (`induction_problem` replaces the first S only): input -> a0.h0<v> (the token at S1),
    a0.h0 -> a1.h0<k> (the previous token at S1+1, so the induction head finds no match) and
    a1.h0 -> logits (its answer). Its other four carry the same values in both runs: positions
    (a0.h0's q and k), S at S2 (a1.h0's q) and X at S1+1 (a1.h0's v); patching them with the
    corrupted run changes nothing, so no counterfactual method can see them, and scoring such a
    method against them would measure the task's corruption, not the method. planted-sparse:
    `SPARSE_CORRUPTED` (why in its comment).

    LayerNorm makes a few non-mechanism edges of planted-induction matter under zero ablation
    (removing the embeddings from the final residual stream rescales the logits); they stay
    false: no weight reads them, only the norm of the stream does.
    """
    model_id = model if isinstance(model, str) else model.info.model_id
    if model_id not in _TRUTHS:
        raise ValueError(f"no planted edges for {model_id!r}; planted models: {list(_TRUTHS)}")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; expected one of {SCOPES}")
    corruption, mechanism = _TRUTHS[model_id]
    return corruption if scope == "corruption" else mechanism
