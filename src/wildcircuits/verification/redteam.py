"""The harder red-team checks of a hypothesis (issue #14), each a `Check` with its numbers.

- `other_corruptions`: the circuit was found with one corruption; each of the task's other
  named corruptions probes another part of the mechanism. The circuit's normalized
  faithfulness (counterfactual patching from that corruption's prompts, every pair outside the
  circuit patched) should stay within `BAND`.
- `template_transfer`: the hypothesis's circuit on prompts from templates discovery never saw
  (the task's derived variations: other wordings of the same behaviour), relative to the
  model: F(C) / F(M) under the verification's ablation, within `BAND`.
- `simpler_story`: the boring explanation. Does a circuit of only the top class (the class
  whose claimed path into the logits is largest), or of only the classes that write the logits
  (no class that feeds them), reach the same relative faithfulness target as the compact
  circuit? If so, the rest of the story is not needed to explain the number.

Thresholds are module constants, stated once (`THRESHOLDS` collects them for
verification.json) and never changed for one run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from wildcircuits.errors import WildcircuitsError
from wildcircuits.explanation.hypothesis import LOGITS, Hypothesis
from wildcircuits.explanation.pair_evaluator import PairEvaluator
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.results.explain import Pair
from wildcircuits.results.verdicts import Check

#: A circuit's faithfulness on another corruption or held-out templates must lie in this band.
BAND = (0.5, 1.5)
#: A simpler circuit that keeps this share of F(M) "does as well" (the compact circuit's target).
SIMPLER_TARGET = 0.8
#: A variation whose |F(M)| is below this share of the main problem's is not a test of transfer
#: (the model does not do it there); it is reported and skipped.
MIN_EFFECT_SHARE = 0.25

THRESHOLDS = {
    "band_low": BAND[0],
    "band_high": BAND[1],
    "simpler_target": SIMPLER_TARGET,
    "transfer_min_effect_share": MIN_EFFECT_SHARE,
}


def _in_band(value: float) -> bool:
    return math.isfinite(value) and BAND[0] <= value <= BAND[1]


def _known(evaluator: PairEvaluator, pairs: Sequence[Pair]) -> tuple[list[Pair], list[str]]:
    """The pairs this problem has positions for, and the names of those it lacks."""
    kept, missing = [], []
    for pair in pairs:
        (kept if pair.position in evaluator.space.names else missing).append(pair)
    return kept, sorted({p.position for p in missing})


# another corruption ----------------------------------------------------------------------------
def other_corruptions(
    engine: EdgeForward,
    problem_for: Callable[[str], PatchingProblem],
    pairs: Sequence[Pair],
    corruptions: Sequence[str],
    used: str,
    batch_size: int = 16,
) -> Check:
    """Normalized faithfulness of the circuit under each corruption in `corruptions` other than
    `used` (counterfactual patching of every pair outside the circuit from that corruption's
    prompts); `problem_for(name)` builds the verification prompts with that corruption."""
    question = "Does the circuit hold under the task's other corruptions?"
    per: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for name in corruptions:
        if name == used:
            continue
        evaluator = PairEvaluator(engine, problem_for(name), "counterfactual", batch_size)
        kept, _ = _known(evaluator, pairs)
        try:
            (per[name],) = evaluator.faithfulness([kept])
        except WildcircuitsError as error:  # the corruption does not change the behaviour
            per[name], notes[name] = None, str(error).split(";")[0]
    tested = {k: v for k, v in per.items() if v is not None}
    if not per:
        return Check.of("other_corruption", question, True,
                        f"the task has no corruption other than {used!r}: nothing to test",
                        per_corruption={}, used=used)  # fmt: skip
    outside = sorted(k for k, v in tested.items() if not _in_band(v))
    text = ", ".join(f"{k} (no effect)" if v is None else f"{k} {v:.2f}" for k, v in per.items())
    return Check.of(
        "other_corruption",
        question,
        not outside,
        f"found with {used!r}; normalized faithfulness under the others: {text}"
        + (f"; outside [{BAND[0]}, {BAND[1]}]: {', '.join(outside)}" if outside else ""),
        per_corruption=per,
        notes=notes,
        used=used,
        outside=outside,
    )


# held-out templates ----------------------------------------------------------------------------
def template_transfer(
    engine: EdgeForward,
    variations: Sequence[tuple[str, PatchingProblem]],
    pairs: Sequence[Pair],
    spec: str,
    f_model_main: float,
    batch_size: int = 16,
) -> Check:
    """F(C) / F(M) of the circuit on each held-out variation's prompts (`variations`: name and
    problem), under ablation `spec`. Variations missing one of the circuit's positions, or where
    |F(M)| < MIN_EFFECT_SHARE * |F(M) of the main prompts|, are reported and not tested."""
    question = "Does the circuit transfer to templates held out from discovery?"
    per: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for name, problem in variations:
        evaluator = PairEvaluator(engine, problem, spec, batch_size)
        kept, missing = _known(evaluator, pairs)
        if missing:
            skipped[name] = f"has no position {', '.join(missing)}"
            continue
        f_model, f_circuit = evaluator.m_full, evaluator.metrics([kept])[0]
        if abs(f_model) < MIN_EFFECT_SHARE * abs(f_model_main):
            skipped[name] = f"the model barely does it (F(M) {f_model:.2f})"
            continue
        per[name] = f_circuit / f_model
    if not per:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "the task has none"
        return Check.of("template_transfer", question, True,
                        f"no held-out template set to test ({why})",
                        per_variation={}, skipped=skipped)  # fmt: skip
    outside = sorted(k for k, v in per.items() if not _in_band(v))
    text = ", ".join(f"{k} {v:.2f}" for k, v in per.items())
    untested = "; ".join(f"{k} ({v})" for k, v in skipped.items())
    return Check.of(
        "template_transfer",
        question,
        not outside,
        f"F(C) / F(M) on held-out templates: {text}"
        + (f"; outside [{BAND[0]}, {BAND[1]}]: {', '.join(outside)}" if outside else "")
        + (f"; not tested: {untested}" if skipped else ""),
        per_variation=per,
        skipped=skipped,
        outside=outside,
    )


# a simpler story -------------------------------------------------------------------------------
def simpler_story(evaluator: PairEvaluator, hypothesis: Hypothesis) -> Check:
    """F(S) / F(M) for S = the top class alone and S = the classes with a claimed path into the
    logits alone; warns when either reaches SIMPLER_TARGET while leaving out part of the
    hypothesis (the rest of the story would then not be needed for faithfulness)."""
    question = "Does a simpler story (the top class alone, or only the logit writers) do as well?"
    writers = hypothesis.paths_into(LOGITS)
    if not writers:
        return Check.of("simpler_story", question, True,
                        "the hypothesis claims no path into the logits: no simpler story to try",
                        candidates={})  # fmt: skip
    top = max(writers, key=lambda p: abs(p.effect) if p.effect is not None else 0.0).sender
    writer_names = tuple(dict.fromkeys(p.sender for p in writers))
    everything = set(hypothesis.pairs())
    stories = {f"top class ({top})": hypothesis.class_named(top).members}
    writer_pairs = tuple(m for n in writer_names for m in hypothesis.class_named(n).members)
    if set(writer_pairs) != set(stories[f"top class ({top})"]):
        stories[f"logit writers only ({', '.join(writer_names)})"] = writer_pairs
    stories = {k: v for k, v in stories.items() if set(v) != everything}
    if not stories:
        return Check.of("simpler_story", question, True,
                        "every class writes the logits: the hypothesis is already the simplest "
                        "story of this kind", candidates={})  # fmt: skip
    f_model = evaluator.m_full
    values = evaluator.metrics(list(stories.values()))
    shares = {k: v / f_model for k, v in zip(stories, values, strict=True)}
    enough = sorted(k for k, v in shares.items() if v >= SIMPLER_TARGET)
    text = ", ".join(f"{k}: {v:.2f} of F(M) with {len(stories[k])} pairs" for k, v in
                     shares.items())  # fmt: skip
    return Check.of(
        "simpler_story",
        question,
        not enough,
        f"{text} (the whole hypothesis has {len(everything)} pairs)"
        + (f"; {', '.join(enough)} reaches {SIMPLER_TARGET}: the rest is not needed for the "
           "number" if enough else ""),
        candidates=shares,
        sizes={k: len(v) for k, v in stories.items()},
        target=SIMPLER_TARGET,
    )  # fmt: skip
