"""EAP-IG (inputs, m steps) over every edge vs the bare passes it needs, in one run.

On the default model (SmolLM2-135M: 123,211 edges) and IOI pairs from the task library
(train split), chunk by chunk: the bare passes of the plain model on the chunk (2 forwards +
m forward-backwards, the gradient taken w.r.t. the input embeddings) and the full method on
the same chunk (same chunking: one method call per chunk, which is what the method does inside),
alternating which goes first. Prints per-chunk ratios, `overhead: X` (total method time / total
bare time; target <= 1.5) and the peak memory: the process's peak resident set size from
`resource.getrusage(RUSAGE_SELF).ru_maxrss` (it includes the model's weights; on CUDA also the
peak allocated GPU memory).

    python benchmarks/discovery.py [--n 100] [--steps 5] [--batch-size 10] [--model ID]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from wildcircuits.discovery import EAPIGConfig, eap_ig_inputs
from wildcircuits.discovery.common import loss_value
from wildcircuits.models import load_model
from wildcircuits.patching.problem import problem_from_dataset
from wildcircuits.patching.sites import Component, Site
from wildcircuits.tasks import Split, load_task


def bare_passes(model, part, steps: int) -> None:
    """2 forwards and `steps` forward-backwards (d loss / d embeddings) of the plain model."""
    with torch.no_grad():
        model.logits(part.clean, positions=part.positions)
        model.logits(part.corrupted, positions=part.positions)
    embed = Site(Component.RESID_PRE, 0)  # the leaf that requires grad
    for _ in range(steps):
        run = model.run(part.clean, capture=[embed], positions=part.positions, grad=True)
        torch.autograd.grad(loss_value(part, run.logits), run[embed])


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args()
    model = load_model(args.model, device=args.device)
    data = load_task("ioi").build(model.tokenizer, n=args.n, seed=0, split=Split.TRAIN)
    problem = problem_from_dataset(model, data)
    config = EAPIGConfig(steps=args.steps, batch_size=args.batch_size)
    print(f"{model.info.model_id} ({model.info.quantization}), IOI n={problem.batch} x "
          f"{problem.clean.seq_len} tokens, m={args.steps}, chunks of {args.batch_size}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    bare_passes(model, problem.select(slice(0, 2)), 1)  # warm-up
    rss_before = peak_rss_mib()
    bare, method = [], []
    for index, (_, part) in enumerate(problem.chunks(args.batch_size)):
        order = ("bare", "method") if index % 2 == 0 else ("method", "bare")
        for which in order:
            if which == "bare":
                bare.append(timed(lambda p=part: bare_passes(model, p, args.steps)))
            else:
                method.append(timed(lambda p=part: eap_ig_inputs(model, p, config)))
        print(f"chunk {index}: bare {bare[-1]:.2f} s, eap-ig {method[-1]:.2f} s, "
              f"ratio {method[-1] / bare[-1]:.3f}", flush=True)  # fmt: skip
    ratios = [m / b for m, b in zip(method, bare, strict=True)]
    print(f"bare passes {sum(bare):.1f} s, eap-ig-inputs {sum(method):.1f} s over "
          f"{model.n_layers} layers, {config.steps} steps; median chunk ratio "
          f"{statistics.median(ratios):.3f}")  # fmt: skip
    print(f"peak memory (ru_maxrss, whole process incl. weights): {peak_rss_mib():.0f} MiB "
          f"(after warm-up: {rss_before:.0f} MiB)")  # fmt: skip
    if torch.cuda.is_available() and model.device.type == "cuda":
        print(f"peak CUDA allocated: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print(f"overhead: {sum(method) / sum(bare):.3f}")


if __name__ == "__main__":
    main()
