"""Time the verify step on a hypothesis file and count its forward passes against the naive plan.

Runs `wildcircuits.verification.run.verify` once and prints, per part (criteria, statistical
tests, causal scrubbing, red-team checks), the wall time and the full-model forwards actually
run: every layer's MLP module counts the rows it processes (every engine runs the model's own
MLP modules), and rows / (layers x prompts) is the number of full-batch forwards (partial
forwards count by the layers they run). Next to them, the naive count:
- criteria: `Criteria.naive_forwards` (one forward per knockout set per bootstrap resample, no
  memo, the count the criteria report themselves);
- statistical tests: one forward per evaluated circuit per bootstrap / permutation resample is
  not what the tests need (their p-values come from per-prompt metrics), so their naive count is
  one forward per circuit, the same as measured unless sets were shared;
- scrubbing: one forward per class run per claim per bootstrap resample (the scrub's own
  forwards times the resamples of one interval), and 1 + claims forwards per resample for the
  model, x_rand and the claims themselves.

    python benchmarks/verify.py HYPOTHESIS.yaml [--model smollm2-135m-instruct] [--task ioi]
        [--n 16] [--max-n 16] [--progress]
"""

from __future__ import annotations

import argparse
import time

import wildcircuits as wc
from wildcircuits.models.counting import ForwardCount, attach_counter

PARTS = ("criteria", "tests", "scrubbing", "checks")


def wrap_parts(counter: ForwardCount, tallies: dict[str, int]) -> None:
    """Record the rows each part of `verify` runs (the parts are module functions of run.py;
    the checks are `TaskInputs.checks`)."""
    from wildcircuits.verification import run

    def wrapped(name, real):
        def call(*args, **kwargs):
            rows = counter.rows
            value = real(*args, **kwargs)
            tallies[name] = tallies.get(name, 0) + counter.rows - rows
            return value

        return call

    run._grow = wrapped("criteria", run._grow)
    run._tests = wrapped("tests", run._tests)
    run._scrub = wrapped("scrubbing", run._scrub)
    run.TaskInputs.checks = wrapped("checks", run.TaskInputs.checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hypothesis")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--n", type=int, default=16, help="held-out prompts (first round)")
    parser.add_argument("--max-n", type=int, default=16, help="most prompts after growth")
    parser.add_argument("--progress", action="store_true", help="progress bars on stderr")
    args = parser.parse_args()
    from wildcircuits.verification.run import VerifySettings

    model = wc.load_model(args.model)
    counter, tallies = ForwardCount(model.n_layers), {}
    attach_counter(model, counter)
    wrap_parts(counter, tallies)
    settings = VerifySettings(n=args.n, max_n=args.max_n)
    start = time.perf_counter()
    result = wc.verify(model, args.task, args.hypothesis, settings, progress=args.progress)
    total = time.perf_counter() - start
    report(args, model, result, tallies, total)


def report(args, model, result, tallies: dict[str, int], total: float) -> None:
    n = result.provenance["n_prompts"]
    per_forward = model.n_layers * n
    measured = {p: tallies.get(p, 0) / per_forward for p in PARTS}
    crit, scrub, n_boot = result.criteria, result.scrubbing, result.provenance["settings"]["n_boot"]
    naive = dict(measured)
    naive["criteria"] = float(crit.naive_forwards) * 1.0
    if scrub is not None:
        naive["scrubbing"] = measured["scrubbing"] * max(1, n_boot)
    rounds = [r["n"] for r in result.provenance["rounds"]]
    print(f"verify on {args.model} / {args.task}: {n} held-out prompts (rounds {rounds}), "
          f"{n_boot} bootstrap resamples")  # fmt: skip
    print(f"  {'part':<10} {'seconds':>8} {'passes':>9} {'naive':>11} {'ratio':>8}")
    for part in PARTS:
        seconds = result.seconds.get(part, 0.0)
        ours, theirs = measured[part], naive[part]
        ratio = f"{theirs / ours:7.1f}x" if ours else "     n/a"
        print(f"  {part:<10} {seconds:8.1f} {ours:9.1f} {theirs:11.0f} {ratio}")
    ours, theirs = sum(measured.values()), sum(naive.values())
    ratio = theirs / max(ours, 1e-9)
    print(f"  {'total':<10} {total:8.1f} {ours:9.1f} {theirs:11.0f} {ratio:7.1f}x")
    print(f"  (criteria's own count: {crit.forwards} circuit evaluations vs {crit.naive_forwards} "
          "naive)")  # fmt: skip
    print(result.verdict)
    for claim in result.claims:
        print(f"  {claim.status.value:12s} {claim.claim}: {claim.reason}")
    for check in result.checks:
        print(f"  red team {check.name}: {check.verdict.value}: {check.evidence}")


if __name__ == "__main__":
    main()
