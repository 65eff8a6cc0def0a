"""Time each step of `wildcircuits discover` (the main job) so the slowest one is known.

Runs the pipeline with its defaults (or the options given) into a fresh temporary folder, in
this process, then prints the seconds of every step from the run's manifest, each step's share
of the total, and `slowest: STEP`. Loading the model is part of the first step (behaviour).

    python benchmarks/pipeline_steps.py [--task ioi] [--model smollm2-135m-instruct]
        [--n-examples 16] [--method eap-ig-inputs] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from wildcircuits.pipeline import DiscoverConfig, discover


def main() -> None:
    defaults = DiscoverConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=defaults.task)
    parser.add_argument("--model", default=defaults.model)
    parser.add_argument("--n-examples", type=int, default=defaults.n_examples)
    parser.add_argument("--method", default=defaults.method)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--keep", default=None, help="write the run here (default: a temp dir)")
    args = parser.parse_args()
    config = DiscoverConfig(
        task=args.task,
        model=args.model,
        n_examples=args.n_examples,
        method=args.method,
        device=args.device,
    )
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.keep) if args.keep else Path(scratch) / "run"
        start = time.perf_counter()
        discover(config, out, resume=False, progress=False)
        total = time.perf_counter() - start
        manifest = json.loads((out / "manifest.json").read_text())
    steps = {name: entry.get("seconds") for name, entry in manifest["steps"].items()}
    print(f"{args.task} on {args.model}: n_examples {args.n_examples}, method {args.method}")
    timed = {name: s for name, s in steps.items() if s is not None}
    for name, seconds in timed.items():
        print(f"  {name:<10} {seconds:8.1f} s  {100 * seconds / total:5.1f}%")
    print(f"total: {total:.1f} s (steps {sum(timed.values()):.1f} s)")
    print(f"slowest: {max(timed, key=timed.get)}")


if __name__ == "__main__":
    main()
