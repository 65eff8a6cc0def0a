"""Time a catalogue cell by cell and step by step, and count each step's forward passes.

    python benchmarks/catalogue.py --tasks ioi,greater_than --models smollm2-135m-instruct \
        [--n 16] [--out runs/bench-catalogue] [--resume]

Forward passes are counted as benchmarks/explain.py counts them: every layer's MLP module
counts the rows it processes (every engine runs the model's own MLP modules), so rows /
layers is the number of prompt-forwards (one prompt through every layer; partial forwards count
by the layers they run, backward passes are not counted). Steps skipped on --resume show 0.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

from wildcircuits.models.counting import ForwardCount, attach_counter


@dataclass
class Tally:
    """Rows through the MLP modules of every model loaded (`models.counting`; n_layers is the
    model loaded last), and per (cell, step) tallies."""

    count: ForwardCount = field(default_factory=lambda: ForwardCount(n_layers=1))
    cell: str = ""
    steps: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)


def count_loads(tally: Tally) -> None:
    """Every model the pipeline loads gets a forward hook on each layer's MLP module."""
    import wildcircuits.models as models

    real = models.load_model

    def load(*args, **kwargs):
        model = real(*args, **kwargs)
        tally.count.n_layers = model.n_layers
        attach_counter(model, tally.count)
        return model

    models.load_model = load  # Context.model imports it from the package at call time


def time_steps(tally: Tally) -> None:
    """Each pipeline step records (seconds, prompt-forwards) for the current cell."""
    from wildcircuits.pipeline import runner

    def wrap(name, real):
        def step(ctx):
            tally.cell = ctx.folder.root.name
            start, rows = time.perf_counter(), tally.count.rows
            try:
                return real(ctx)
            finally:
                forwards = (tally.count.rows - rows) / tally.count.n_layers
                tally.steps[(tally.cell, name)] = (time.perf_counter() - start, forwards)

        return step

    runner.STEP_FUNCTIONS = {n: wrap(n, f) for n, f in runner.STEP_FUNCTIONS.items()}


def report(tally: Tally, result) -> None:
    from wildcircuits.catalogue.plan import cell_folder_name
    from wildcircuits.pipeline import STEPS

    print(f"{'cell':<44} {'step':<10} {'seconds':>8} {'forwards':>10}")
    for cell in result.cells:
        name = cell_folder_name(cell.task, cell.model)
        total_s = total_f = 0.0
        for step in STEPS:
            if (name, step) not in tally.steps:
                continue
            seconds, forwards = tally.steps[(name, step)]
            total_s, total_f = total_s + seconds, total_f + forwards
            print(f"{name:<44} {step:<10} {seconds:8.1f} {forwards:10.0f}")
        print(f"{name:<44} {'total':<10} {total_s:8.1f} {total_f:10.0f}  ({cell.state.value})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--out", default="runs/bench-catalogue")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    from wildcircuits.catalogue.run import catalogue
    from wildcircuits.pipeline import DiscoverConfig

    tally = Tally()
    count_loads(tally)
    time_steps(tally)
    start = time.perf_counter()
    config = DiscoverConfig(n_examples=args.n, n_heldout=args.n)
    result = catalogue(args.tasks, args.models, args.out, config=config, resume=args.resume)
    report(tally, result)
    print(f"catalogue: {len(result.cells)} cells in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
