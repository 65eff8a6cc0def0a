"""The CLI's input boundary: every option checked before a sub-command does any work.

`check_arguments(args)` runs in `main` before the sub-command's `func`: first the options every
command shares (device, sizes, seeds, indices, by name), then the command's own `check(args)`
(set with `parser.set_defaults(check=...)`: method settings, heads, ablation specs), last the
output folder, created and test-written. Checks that need the model (heads and positions against
its shape and the prompt length) run in the command right after the model loads.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from wildcircuits import inputs

#: Options that are counts or sizes (>= 1), by their argparse destination.
SIZES = ("batch_size", "max_rows", "top", "random_length", "random_batch")
#: Options that are numbers of examples (1 .. inputs.MAX_EXAMPLES).
EXAMPLES = ("n", "n_examples")
#: The most random-circuit seeds `evaluate` accepts.
MAX_RANDOM_SEEDS = 1000


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _checks() -> dict[str, Callable[[str, Any], Any]]:
    return {
        **{dest: inputs.check_size for dest in SIZES},
        **{dest: inputs.check_n for dest in EXAMPLES},
        "seed": inputs.check_seed,
        "random_seeds": lambda what, v: inputs.check_int(what, v, 0, MAX_RANDOM_SEEDS),
        "prompt_index": lambda what, v: inputs.check_int(what, v, 0, None),
    }


def _check_task_size(args: argparse.Namespace) -> None:
    """Numbers of examples against what the task can build (loading a task is cheap)."""
    task, given = getattr(args, "task", None), [d for d in EXAMPLES if getattr(args, d, None)]
    if not isinstance(task, str) or not given:
        return
    from wildcircuits.tasks import load_task
    from wildcircuits.tasks.base import check_task_n

    loaded = load_task(task)
    for dest in given:
        check_task_n(loaded, _option(dest), getattr(args, dest))


def check_arguments(args: argparse.Namespace) -> None:
    """Raise an `InputError` for the first bad option of `args`; create the output folder."""
    for dest, check in _checks().items():
        value = getattr(args, dest, None)
        if value is not None:
            check(_option(dest), value)
    if getattr(args, "device", None) is not None:
        inputs.check_device(args.device, "--device")
    _check_task_size(args)
    n, index = getattr(args, "n", None), getattr(args, "prompt_index", None)
    if n is not None and index is not None and index >= n:
        inputs.check_index("--prompt-index", index, n, f"prompts (--n {n})")
    command_check = getattr(args, "check", None)
    if command_check is not None:
        command_check(args)
    if getattr(args, "out", None) is not None and not getattr(args, "out_is_file", False):
        inputs.check_out_folder(args.out, "--out")
