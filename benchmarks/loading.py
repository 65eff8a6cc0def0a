"""Cost of loading a built-in model from the conversion cache, against converting it afresh.

For each built-in model, in this one run: a first conversion into an empty temporary cache
(the baseline), then `--repeats` cached reloads from it (median). Prints per model the CPU and
wall seconds of both and `ratio: X` (cached CPU / conversion CPU); the target for a cached
reload is under 2 s of CPU on this 2-core machine (idle: ~1.0 s for Gemma3).

    python benchmarks/loading.py [--models smollm2-135m-instruct,gemma3-270m] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def timed(model_id: str) -> tuple[float, float]:
    from wildcircuits.models.loading import load_pretrained

    wall, cpu = time.perf_counter(), time.process_time()
    load_pretrained(model_id)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m-instruct,gemma3-270m")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        os.environ["WILDCIRCUITS_CACHE"] = root  # read at every load (models.cache.cache_root)
        for model_id in args.models.split(","):
            convert_cpu, convert_wall = timed(model_id)
            reloads = [timed(model_id) for _ in range(args.repeats)]
            cpu = statistics.median(r[0] for r in reloads)
            wall = statistics.median(r[1] for r in reloads)
            print(
                f"{model_id}: conversion {convert_cpu:.2f} s CPU ({convert_wall:.2f} s wall); "
                f"cached reload {cpu:.2f} s CPU ({wall:.2f} s wall), median of {args.repeats}; "
                f"target < 2 s CPU: {'met' if cpu < 2.0 else 'NOT met'}"
            )
            print(f"ratio: {cpu / convert_cpu:.3f}")


if __name__ == "__main__":
    main()
