"""`wildcircuits discover TASK`: behaviour -> localise -> discover -> evaluate -> red team ->
summary -> report.html, in a run folder that can be resumed."""

from __future__ import annotations

import argparse
import json

from wildcircuits.pipeline.config import STEPS, DiscoverConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `discover` sub-command."""
    defaults = DiscoverConfig()
    parser = subparsers.add_parser(
        "discover",
        help="the whole workflow: from a behaviour to a verified circuit and a report",
        description=(
            "Probe the behaviour, localise it (DLA, activation patching, head roles), score every "
            "edge, evaluate circuits on held-out data against a random baseline, red-team the "
            "result, summarise node roles and write RUN_DIR/report.html."
        ),
    )
    parser.add_argument("task", help="built-in task name or a .yaml / .jsonl task file")
    parser.add_argument("--model", default=defaults.model)
    parser.add_argument("--out", required=True, help="run folder (created if missing)")
    parser.add_argument(
        "--method", default=defaults.method, help=f"discovery method (default {defaults.method})"
    )
    parser.add_argument(
        "--method-settings",
        default="{}",
        help="JSON object of method settings, e.g. '{\"steps\": 5}'",
    )
    parser.add_argument(
        "--verify-settings",
        default="{}",
        help="JSON object of the verify step's effort settings (docs/verify.md), e.g. "
        "'{\"greedy_steps\": 2}'",
    )
    parser.add_argument(
        "--n-examples",
        type=int,
        default=defaults.n_examples,
        help="train examples (the held-out test split has as many)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument(
        "--ablation",
        default=defaults.ablation,
        help="what an ablated edge carries: counterfactual (default), mean[:clean][:pooled], zero",
    )
    parser.add_argument("--corruption", default=None, help="corruption (default: the task's)")
    parser.add_argument(
        "--steps", default=",".join(STEPS), help=f"comma-separated subset of: {','.join(STEPS)}"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip steps whose outputs in RUN_DIR agree with these settings; recompute the rest",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="delete the previous run's files in RUN_DIR first"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run, check=config_from_args)


def _steps(text: str) -> tuple[str, ...]:
    """--steps as step names: at least one, each known."""
    from wildcircuits.errors import InputError

    steps = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in steps if s not in STEPS]
    if not steps or unknown:
        raise InputError(
            f"--steps {text!r} names {'unknown step(s) ' + str(unknown) if unknown else 'no step'}"
            f"; give a comma-separated subset of {','.join(STEPS)}"
        )
    return steps


def _json_object(option: str, text: str, example: str) -> dict:
    """An option's JSON object; anything else is an InputError showing an example."""
    from wildcircuits.errors import InputError

    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{option} {text!r} is not JSON ({error}); give a JSON object, e.g. '{example}'"
        ) from None
    if not isinstance(value, dict):
        raise InputError(
            f"{option} {text!r} is a JSON {type(value).__name__}, not an object; give e.g. "
            f"'{example}'"
        )
    return value


def config_from_args(args: argparse.Namespace) -> DiscoverConfig:
    """The run's config from the options; every setting is checked here, before any work:
    --method-settings is parsed into the method's config type, --ablation as a spec."""
    from wildcircuits.discovery.registry import get_method

    settings = _json_object("--method-settings", args.method_settings, '{"steps": 5}')
    get_method(args.method).config(settings)  # type-checks every value against the method
    verify_settings = _json_object("--verify-settings", args.verify_settings,
                                   '{"greedy_steps": 2}')  # fmt: skip
    return DiscoverConfig(
        task=args.task, model=args.model, method=args.method, n_examples=args.n_examples,
        n_heldout=args.n_examples, seed=args.seed, device=args.device, ablation=args.ablation,
        steps=_steps(args.steps), corruption=args.corruption, method_settings=settings,
        verify_settings=verify_settings,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from wildcircuits.pipeline.runner import discover

    config = config_from_args(args)
    folder = discover(
        config, args.out, resume=args.resume, progress=not args.quiet, fresh=args.fresh
    )
    print(f"run folder: {folder}")
    if (folder / "report.html").exists():
        print(f"report: {folder / 'report.html'}")
    return 0
