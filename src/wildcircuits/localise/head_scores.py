"""Per-head role scores, each a (layer, head) tensor.

Attention-pattern scores, on random token sequences repeated twice, [bos] r_0..r_{n-1} r_0..r_{n-1}
(tokens distinct within a sequence, special tokens excluded; one forward gives all three):
- previous_token: mean attention from each first-half token r_j (j >= 1) to r_{j-1}.
- induction: mean attention from the second r_j to the token after the first r_j (r_{j+1}),
  j = 0..n-2.
- duplicate_token: mean attention from the second r_j to the first r_j, j = 0..n-1.

OV scores on the task's name tokens N (every answer and distractor id of the problem):
- copying: fraction of t in N whose own logit is the largest among N after the head's OV circuit
  alone: embedding of t -> the layer's attention norm -> W_V (with its bias) -> W_O ->
  post-attention norm (Gemma3) -> final norm's scale and weight (no bias) -> W_U.
  Chance level is 1/|N|.
- copy_suppression: the same fraction with "smallest" instead of "largest".

Task score on the problem's clean prompts (per row, then the batch mean):
- name_mover: attention from the metric position (END) to the answer's position in the prompt,
  times the head's direct contribution to the answer's logit at END (the head's output there
  through the frozen post-norm and final norm, dot the mean W_U row of the answer set). Negative
  values mark negative name movers (they suppress the answer they attend to).
- distractor_suppression: minus the same score read on the distractor: attention from END to the
  distractor's position (e.g. IOI's S2) times minus the head's direct effect on the distractor's
  logit. Positive for heads that attend to the distractor and push its logit down.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from wildcircuits.errors import TaskError
from wildcircuits.localise.common import at_positions
from wildcircuits.localise.dla import head_parts, unembed_matrix
from wildcircuits.localise.norms import freeze_norm
from wildcircuits.models.adapters import get_module
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.models.tokens import Tokens, tokens_from_ids
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site

Scores = Float[Tensor, "layer head"]


def _prepends_bos(model: InstrumentedModel) -> int | None:
    """The BOS id if the model's tokenizer puts one before every prompt, else None."""
    tokenizer = model.tokenizer
    if tokenizer is None or tokenizer.bos_token_id is None:
        return None
    first = int(model.tokenize(["a"]).input_ids[0, 0])
    return first if first == tokenizer.bos_token_id else None


def ordinary_token_ids(model: InstrumentedModel) -> Int[Tensor, " ids"]:
    """Every token id except the tokenizer's special ones."""
    special = set(getattr(model.tokenizer, "all_special_ids", None) or [])
    return torch.tensor([i for i in range(model.info.d_vocab) if i not in special])


def repeated_random_tokens(
    model: InstrumentedModel, batch: int, length: int, seed: int = 0
) -> tuple[Tokens, int]:
    """`batch` rows [bos] r r with r `length` distinct random ordinary tokens; also the offset of
    the first r_0 (1 with a BOS, else 0)."""
    allowed = ordinary_token_ids(model)
    if not 2 <= length <= len(allowed):
        raise TaskError(f"random sequence length {length} must be in 2..{len(allowed)}")
    generator = torch.Generator().manual_seed(seed)
    rows = [
        allowed[torch.randperm(len(allowed), generator=generator)[:length]] for _ in range(batch)
    ]
    ids = torch.stack(rows).repeat(1, 2)  # (batch, 2 * length)
    bos = _prepends_bos(model)
    if bos is not None:
        ids = torch.cat([torch.full((batch, 1), bos), ids], dim=1)
    return tokens_from_ids(ids).to(model.device), int(bos is not None)


def patterns(
    model: InstrumentedModel, tokens: Tokens
) -> Float[Tensor, "layer batch head pos kv_pos"]:
    """Every layer's attention pattern on `tokens` (no LM head)."""
    sites = [Site(Component.PATTERN, layer) for layer in range(model.n_layers)]
    run = model.run(tokens, capture=sites, return_logits=False)
    return torch.stack([run[s].float() for s in sites])


def pattern_scores(
    model: InstrumentedModel, batch: int = 8, length: int = 20, seed: int = 0
) -> dict[str, Scores]:
    """previous_token, induction and duplicate_token scores from one forward on repeated tokens."""
    tokens, start = repeated_random_tokens(model, batch, length, seed)
    maps = patterns(model, tokens)  # (layer, batch, head, pos, kv_pos)
    j = torch.arange(length, device=maps.device)
    first, second = start + j, start + length + j

    def mean_attention(query: Tensor, key: Tensor) -> Scores:
        return maps[:, :, :, query, key].mean(dim=(1, 3))  # (layer, head)

    return {
        "previous_token": mean_attention(first[1:], first[:-1]),
        "induction": mean_attention(second[:-1], first[1:]),
        "duplicate_token": mean_attention(second, first),
    }


def task_token_ids(problem: PatchingProblem) -> Int[Tensor, " ids"]:
    """The distinct answer and distractor ids of the problem (e.g. IOI's names); for a loss
    task, its loss targets (the tokens to predict)."""
    t = problem.targets
    if problem.multi_position:
        return t.loss_targets[t.loss_mask].unique().cpu()
    ids = torch.cat([t.answers[t.answer_mask], t.distractors[t.distractor_mask]])
    return ids.unique().cpu()


def ov_logits(
    model: InstrumentedModel, layer: int, ids: Int[Tensor, " ids"]
) -> Float[Tensor, "head ids ids"]:
    """Logits of the tokens `ids` (last axis) from each head's OV circuit on each of `ids` (middle
    axis), by the convention in the module docstring."""
    embed = get_module(model.hf_model, model.adapter.embed)(ids.to(model.device)[None])
    return ov_logits_from(model, layer, embed[0], ids)


def ov_logits_from(
    model: InstrumentedModel,
    layer: int,
    resid: Float[Tensor, "n d_model"],
    ids: Int[Tensor, " ids"],
) -> Float[Tensor, "head n ids"]:
    """Logits of the tokens `ids` from each head's OV circuit applied to residual-stream vectors
    `resid` (the layer's input at some tokens; `ov_logits` uses the token embeddings)."""
    block = model.layer_module(layer)
    x = get_module(block, model.adapter.attn_norm)(resid[None])  # (1, n, d_model)
    _, _, v = model.project_qkv(get_module(block, model.adapter.attention), x)
    v = v.repeat_interleave(model.n_heads // model.n_kv_heads, dim=2)  # (1, ids, head, d_head)
    out = torch.einsum("nhd,hdm->hnm", v[0], model.out_weight(layer))  # (head, n, d_model)
    if model.adapter.post_attn_norm:
        out = get_module(block, model.adapter.post_attn_norm)(out)
    final_norm = get_module(model.hf_model, model.adapter.final_norm)
    flat = out.reshape(-1, out.shape[-1])  # (head * n, d_model)
    normed = freeze_norm(final_norm, flat).linear(flat).view_as(out)
    weight, _ = unembed_matrix(model)
    return normed.float() @ weight[ids.to(model.device)].float().T  # (head, n, ids)


def ov_scores(model: InstrumentedModel, ids: Int[Tensor, " ids"]) -> dict[str, Scores]:
    """copying and copy_suppression: fraction of `ids` whose own logit is the max / min."""
    if len(ids) < 2:
        raise TaskError(f"OV copying scores need at least 2 distinct task tokens, got {len(ids)}")
    own = torch.arange(len(ids), device=model.device)
    top, bottom = [], []
    with torch.no_grad():
        for layer in range(model.n_layers):
            logits = ov_logits(model, layer, ids)
            top.append((logits.argmax(-1) == own).float().mean(-1))
            bottom.append((logits.argmin(-1) == own).float().mean(-1))
    return {"copying": torch.stack(top), "copy_suppression": torch.stack(bottom)}


def answer_positions(
    problem: PatchingProblem, name: str | None = None, distractors: bool = False
) -> Int[Tensor, " batch"]:
    """Where each row's answer (or, with `distractors`, distractor) appears in its clean prompt:
    the named position if given, else the last occurrence of any of its ids before the metric
    position (-1 where none appears)."""
    if name is not None:
        if name not in problem.named_positions:
            known = ", ".join(problem.named_positions) or "none"
            raise TaskError(f"no named position {name!r} in this problem (known: {known})")
        return problem.named_positions[name].cpu()
    ids = problem.clean.input_ids.cpu()
    t = problem.targets
    wanted, mask = (t.distractors, t.distractor_mask) if distractors else (t.answers, t.answer_mask)
    is_target = ((ids[:, :, None] == wanted.cpu()[:, None, :]) & mask.cpu()[:, None, :]).any(-1)
    before = torch.arange(ids.shape[1])[None] < problem.positions.cpu()[:, None]
    hits = is_target & before & problem.clean.attention_mask.cpu().bool()
    index = torch.arange(ids.shape[1]).expand_as(hits)
    return torch.where(hits, index, -1).amax(1)


def name_mover_scores(
    model: InstrumentedModel,
    problem: PatchingProblem,
    answer_position: str | None = None,
    batch_size: int = 16,
    distractors: bool = False,
) -> Scores:
    """Batch mean of attention(END -> answer) x the head's direct effect on the answer logit.

    With `distractors`: attention(END -> distractor) x the direct effect on the distractor logit
    (negative for a head that suppresses the distractor it attends to). Rows whose prompt lacks
    the token are skipped; NaN if all are.
    """
    where = answer_positions(problem, answer_position, distractors)
    keep = (where >= 0).nonzero().flatten()
    if len(keep) == 0:
        return torch.full((model.n_layers, model.n_heads), float("nan"))
    problem, where = problem.select(keep.tolist()), where[keep]
    total = torch.zeros(model.n_layers, model.n_heads)
    for rows, chunk in problem.chunks(batch_size):
        total += _name_mover_sum(model, chunk, where[rows], distractors).cpu()
    return total / problem.batch


def _token_direction(model: InstrumentedModel, ids: Tensor, mask: Tensor) -> Tensor:
    """Mean unembedding row over each example's id set: (batch, d_model)."""
    weight, _ = unembed_matrix(model)
    summed = (weight[ids].float() * mask[..., None]).sum(1)
    return summed / mask.sum(1, keepdim=True)


def _name_mover_sum(
    model: InstrumentedModel, problem: PatchingProblem, where: Tensor, distractors: bool
) -> Scores:
    sites = [Site(Component.FINAL_RESID)]
    for layer in range(model.n_layers):
        sites += [Site(Component.PATTERN, layer), Site(Component.Z, layer)]
    run = model.run(problem.clean, capture=sites, return_logits=False)
    end = problem.positions.to(model.device)
    final_resid = at_positions(run[Site(Component.FINAL_RESID)], end).float()
    frozen = freeze_norm(get_module(model.hf_model, model.adapter.final_norm), final_resid)
    t = problem.targets.to(model.device)
    ids, mask = (t.distractors, t.distractor_mask) if distractors else (t.answers, t.answer_mask)
    direction = _token_direction(model, ids, mask)  # (batch, d_model)
    rows = torch.arange(problem.batch, device=model.device)
    scores = []
    for layer in range(model.n_layers):
        results, _ = head_parts(model, layer, at_positions(run[Site(Component.Z, layer)], end))
        effect = (frozen.linear(results) * direction[:, None]).sum(-1)  # (batch, head)
        pattern = run[Site(Component.PATTERN, layer)]  # (batch, head, pos, kv_pos)
        attention = pattern[rows, :, end, where.to(model.device)].float()  # (batch, head)
        scores.append((attention * effect).sum(0))
    return torch.stack(scores)


def head_patterns(
    model: InstrumentedModel, tokens: Tokens, heads: Sequence[tuple[int, int]], row: int = 0
) -> dict[tuple[int, int], Float[Tensor, "pos kv_pos"]]:
    """The attention pattern of each chosen head on one row, cut to that row's real tokens."""
    layers = sorted({layer for layer, _ in heads})
    run = model.run(tokens.select([row]), capture=[Site(Component.PATTERN, i) for i in layers],
                    return_logits=False)  # fmt: skip
    real = tokens.attention_mask[row].bool().cpu()
    out = {}
    for layer, head in heads:
        pattern = run[Site(Component.PATTERN, layer)][0, head].float().cpu()  # (pos, kv_pos)
        out[(layer, head)] = pattern[real][:, real]
    return out
