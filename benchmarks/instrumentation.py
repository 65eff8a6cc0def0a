"""Cost of full instrumentation: a forward capturing every site of every layer vs plain HF eager.

On the default model (SmolLM2-135M), batch 8 x 20 tokens, both timed in this one run
(interleaved repeats, median). Prints `ratio: X` last; the target is <= 1.3.

    python benchmarks/instrumentation.py [--model ID] [--device cpu] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from wildcircuits.models import load_model
from wildcircuits.patching.sites import GLOBAL_COMPONENTS, Component, Site


def every_site(model) -> list[Site]:
    sites = [Site(Component.EMBED), Site(Component.FINAL_RESID), Site(Component.LOGITS)]
    for layer in range(model.n_layers):
        for component in Component:
            if component in GLOBAL_COMPONENTS:
                continue
            if component is Component.RESID_MID and model.parallel_residual:
                continue
            sites.append(Site(component, layer))
    return sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    model = load_model(args.model, device=args.device)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 10_000, (8, 20), generator=generator).to(model.device)
    from wildcircuits.models import tokens_from_ids

    tokens = tokens_from_ids(ids)
    sites = every_site(model)

    def plain():
        with torch.no_grad():
            return model.hf_model(input_ids=ids).logits

    def instrumented():
        return model.run(tokens, capture=sites)

    for fn in (plain, instrumented):  # warm-up
        fn()
    times: dict[str, list[float]] = {"plain": [], "instrumented": []}
    for _ in range(args.repeats):
        for name, fn in (("plain", plain), ("instrumented", instrumented)):
            start = time.perf_counter()
            fn()
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    plain_s, inst_s = (statistics.median(times[k]) for k in ("plain", "instrumented"))
    diff = (instrumented().logits - plain()).abs().max().item()
    print(f"model: {model.info.model_id} ({model.info.quantization}), device {model.device}")
    print(f"sites captured: {len(sites)} (every component of every layer)")
    print(f"plain HF eager forward: {plain_s * 1000:.1f} ms (median of {args.repeats})")
    print(f"instrumented forward:   {inst_s * 1000:.1f} ms")
    print(f"max abs logit diff: {diff:.2e}")
    print(f"ratio: {inst_s / plain_s:.3f}")


if __name__ == "__main__":
    main()
