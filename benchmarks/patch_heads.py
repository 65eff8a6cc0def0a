"""Patching every head (z, all positions, denoising) on IOI: naive loop vs ours vs TransformerLens.

SmolLM2-135M (270 heads), 32 IOI pairs from the built-in `ioi` task (ABC corruption), logit diff:
- ours: `activation_patching` (forwards start at the patched layer; 9 heads per batched forward);
- naive: `activation_patching_reference`, one full forward per head with one intervention and
  logits at every position, as a plain hooked forward of the HF model computes them;
- naive-end: the same loop with logits only at the metric position (the strongest naive
  baseline; `--no-naive-end` skips it);
- bridge: TransformerLens 4.x `TransformerBridge` over a copy of the same HF model, one
  `run_with_hooks` per head patching `blocks.{l}.attn.hook_z[:, :, h]` from a cached clean run
  (what a TransformerLens user writes).
All run in this process; rounds are interleaved and the median time of each method is used. The
last lines print `speedup: X` (naive / ours), `speedup-end-only: Z` (naive-end / ours) and
`vs-bridge: Y` (bridge / ours).

    python benchmarks/patch_heads.py [--n 32] [--rounds 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.tl_bridge

from wildcircuits.models import load_model  # noqa: E402
from wildcircuits.patching.activation import activation_patching  # noqa: E402
from wildcircuits.patching.activation_reference import activation_patching_reference  # noqa: E402
from wildcircuits.patching.problem import problem_from_dataset  # noqa: E402
from wildcircuits.tasks import load_task  # noqa: E402


def ioi_problem(model, n: int, seed: int):
    dataset = load_task("ioi").build(model.tokenizer, n=n, seed=seed)
    return problem_from_dataset(model, dataset)


def bridge_patcher(model, problem, layers):
    """A function running the bridge's per-head z patching, returning (layer, head) metric means."""
    from tests.tl_bridge import build_bridge

    bridge = build_bridge(model.hf_model, model.tokenizer)
    # Right-padded rows: real tokens never attend to later padding, so plain ids give exact
    # logits at every real position (the metric reads each row's last real token).
    clean_ids, corrupt_ids = problem.clean.input_ids, problem.corrupted.input_ids
    rows = torch.arange(problem.batch)

    def run() -> torch.Tensor:
        means = torch.zeros(len(layers), model.n_heads, dtype=torch.float64)
        with torch.no_grad():
            _, cache = bridge.run_with_cache(clean_ids, names_filter=lambda n: n.endswith("hook_z"))
            for row, layer in enumerate(layers):
                name = f"blocks.{layer}.attn.hook_z"
                for head in range(model.n_heads):

                    def patch(z, hook, head=head, name=name):
                        z[:, :, head] = cache[name][:, :, head]
                        return z

                    logits = bridge.run_with_hooks(corrupt_ids, fwd_hooks=[(name, patch)])
                    at = logits[rows, problem.positions]  # (batch, vocab)
                    means[row, head] = float(problem.score(at).double().mean())
        return means

    return run


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-naive-end", action="store_true", help="skip the END-only loop")
    parser.add_argument("--no-bridge", action="store_true")
    parser.add_argument(
        "--layers", help="comma-separated layers to patch (default all; e.g. 0,5,10,15,20,25)"
    )
    args = parser.parse_args()
    model = load_model(args.model, device=args.device)
    problem = ioi_problem(model, args.n, args.seed)
    info = model.info
    heads = model.n_layers * model.n_heads
    print(f"model {info.model_id} ({info.quantization}), {problem.batch} IOI pairs, ", end="")
    print(f"{problem.clean.seq_len} tokens (padded), {heads} heads in all")
    layers = None if args.layers is None else [int(x) for x in args.layers.split(",")]
    chosen = layers if layers is not None else list(range(model.n_layers))
    print(f"patching the heads of layers {chosen}")

    def ours() -> torch.Tensor:
        result = activation_patching(model, problem, "heads", layers=layers, progress=False)
        return result.metric.values[chosen]

    def naive_loop(full_logits: bool):
        def run() -> torch.Tensor:
            result = activation_patching_reference(
                model, problem, "heads", layers=layers, full_logits=full_logits, progress=False
            )
            return result.metric.values[chosen]

        return run

    methods = {"ours": ours, "naive": naive_loop(True)}
    if not args.no_naive_end:
        methods["naive-end"] = naive_loop(False)
    bridge_reason = "--no-bridge" if args.no_bridge else None
    if bridge_reason is None:
        try:
            methods["bridge"] = bridge_patcher(model, problem, chosen)
        except Exception as error:  # report why, keep the other numbers
            bridge_reason = f"{type(error).__name__}: {error}"
    times: dict[str, list[float]] = {name: [] for name in methods}
    values = {}
    for round_ in range(args.rounds):
        order = list(methods) if round_ % 2 == 0 else list(reversed(methods))
        for name in order:
            seconds, values[name] = timed(methods[name])
            times[name].append(seconds)
            print(f"round {round_}: {name:<9} {seconds:8.2f} s", flush=True)
    median = {name: statistics.median(t) for name, t in times.items()}
    ours = values["ours"].double()
    if any(bool(torch.isnan(v).any()) for v in values.values()):
        raise SystemExit("a method left NaN entries: the comparison would be meaningless")
    print(
        f"max diff ours vs naive (patched logit diff): {(ours - values['naive']).abs().max():.2e}"
    )
    if "bridge" in values:
        print(f"max diff ours vs bridge (patched logit diff): "
              f"{(ours - values['bridge']).abs().max():.2e}")  # fmt: skip
    print("median seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in median.items()))
    if "naive-end" in values:
        print(f"max diff ours vs naive-end (patched logit diff): "
              f"{(ours - values['naive-end']).abs().max():.2e}")  # fmt: skip
    print(f"speedup: {median['naive'] / median['ours']:.2f}")
    if "naive-end" in median:
        print(f"speedup-end-only: {median['naive-end'] / median['ours']:.2f}")
    if "bridge" in median:
        print(f"vs-bridge: {median['bridge'] / median['ours']:.2f}")
    else:
        print(f"vs-bridge: unavailable ({bridge_reason})")


if __name__ == "__main__":
    main()
