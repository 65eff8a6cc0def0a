"""Tiny problems and slow, obvious references for the discovery tests."""

from __future__ import annotations

import copy
import functools

import torch

from tests.tiny_models import VOCAB, tiny_model, tiny_tokens
from wildcircuits.discovery.common import loss_value
from wildcircuits.models import wrap_hf_model
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.models.tokens import Tokens
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.tasks.metrics import make_targets


@functools.cache
def double_model(family: str) -> InstrumentedModel:
    """The tiny model of `family` in float64 (finite differences need the precision)."""
    hf_model = copy.deepcopy(tiny_model(family).hf_model).double()
    return wrap_hf_model(hf_model, model_id=f"tiny-{family}-f64")


def tiny_problem(
    model: InstrumentedModel, batch: int = 3, seed: int = 7, same: bool = False
) -> PatchingProblem:
    """Random clean tokens, corrupted = other random tokens of the same layout.

    Rows 1 and 2 are right- and left-padded, except for float64 models: their fully masked
    (left-pad) query rows get a float64 mask minimum that the float32 softmax turns into NaN.
    """
    padded = model.dtype != torch.float64
    clean = tiny_tokens(batch=batch, padded=padded)
    other = tiny_tokens(batch=batch, seed=seed, padded=padded)
    ids = clean.input_ids if same else other.input_ids
    corrupted = Tokens(ids, clean.attention_mask, clean.position_ids, clean.last_index)
    generator = torch.Generator().manual_seed(seed)
    answers = torch.randint(3, VOCAB, (batch, 2), generator=generator)
    targets = make_targets(
        [[a] for a in answers[:, 0].tolist()], [[d] for d in answers[:, 1].tolist()]
    )
    provenance = {"model": model.info.model_id, "quantization": "none", "metric": "logit_diff"}
    return PatchingProblem(
        clean=clean.to(model.device),
        corrupted=corrupted.to(model.device),
        positions=clean.last_index,
        targets=targets,
        provenance=provenance,
    )


def patched_loss(
    engine: EdgeForward,
    problem: PatchingProblem,
    ablated: torch.Tensor,
    ablation: torch.Tensor,
) -> float:
    """Batch-mean loss of the clean run with `ablated` edges reading `ablation` (exact)."""
    run = engine.run(problem.clean, problem.positions, ablated=ablated, ablation=ablation)
    return float(loss_value(problem, run.logits))


def finite_difference(
    engine: EdgeForward,
    problem: PatchingProblem,
    ablated: torch.Tensor,
    clean: torch.Tensor,
    diff: torch.Tensor,
    step: float = 2e-2,
) -> float:
    """d/dt of the loss with `ablated` edges reading clean + t * diff, at t = 0.

    Central differences at `step` and `step / 2`, Richardson-extrapolated (error ~ step^4). The
    step is large because attention softmaxes run in float32 even in a float64 model (as in HF
    eager), which leaves ~1e-7 relative noise in the loss.
    """

    def central(h: float) -> float:
        plus = patched_loss(engine, problem, ablated, clean + h * diff)
        minus = patched_loss(engine, problem, ablated, clean - h * diff)
        return (plus - minus) / (2 * h)

    return (4 * central(step / 2) - central(step)) / 3


def sender_outputs(engine: EdgeForward, problem: PatchingProblem):
    """(clean, corrupted - clean) sender outputs, (batch, pos, sender, d_model), pads zeroed."""
    clean = engine.outputs(problem.clean)
    corrupted = engine.outputs(problem.corrupted)
    mask = problem.clean.attention_mask.to(clean.dtype)[:, :, None, None]
    return clean, (corrupted - clean) * mask
