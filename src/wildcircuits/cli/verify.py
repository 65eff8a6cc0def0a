"""`wildcircuits verify HYPOTHESIS.yaml --task T --model M --out DIR`: test a hypothesis file
(criteria, statistical tests, causal scrubbing, red team) and write DIR/verification.json."""

from __future__ import annotations

import argparse

from wildcircuits.pipeline.config import DiscoverConfig

DEFAULT_MODEL = DiscoverConfig.model


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `verify` sub-command."""
    parser = subparsers.add_parser(
        "verify",
        help="test a hypothesis file: faithfulness / completeness / minimality, Shi et al.'s "
        "tests, causal scrubbing, red team",
        description=(
            "Load HYPOTHESIS.yaml (docs/hypothesis.md; `wildcircuits discover` drafts one in "
            "its run folder), test it on the task's held-out prompts the ways docs/verify.md "
            "describes, and write DIR/verification.json with one verdict per claim. When DIR "
            "is a run folder its report.html is rebuilt with a 'Does the explanation hold?' "
            "section."
        ),
    )
    parser.add_argument("hypothesis", help="a hypothesis file (YAML, docs/hypothesis.md)")
    parser.add_argument("--task", required=True, help="the task the hypothesis is about")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model (default {DEFAULT_MODEL})")
    parser.add_argument("--out", required=True, help="folder for verification.json")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--corruption",
        default=None,
        help="the corruption the circuit was found with (default: the task's)",
    )
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="held-out prompts of the first round (default 16; "
        "a run folder: the run's held-out size)",
    )
    parser.add_argument(
        "--max-n",
        type=int,
        default=None,
        help="the most prompts the rounds may grow to (default 64)",
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="token-forwards (one prompt token through every layer) the rounds of prompts may "
        "spend together (default 128,000; a run folder: the pipeline's 64,000)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="prompts and resampling (default 0; a run folder: the run's seed)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run, check=check)  # fmt: skip


def chosen_settings(args: argparse.Namespace) -> dict[str, float | int]:
    """The `VerifySettings` fields the user set on the command line (the rest keep their
    defaults, or in a run folder the run's own settings)."""
    given = {"n": args.n, "max_n": args.max_n, "budget_forwards": args.budget, "seed": args.seed}
    return {key: value for key, value in given.items() if value is not None}


def check(args: argparse.Namespace) -> None:
    """The file parses as a hypothesis, the task exists and the numbers are sane, before any
    model is loaded."""
    from wildcircuits.errors import InputError
    from wildcircuits.explanation.hypothesis import load_hypothesis
    from wildcircuits.tasks import load_task

    load_hypothesis(args.hypothesis)
    load_task(args.task)
    n, max_n = args.n, args.max_n  # unset: the defaults, or a run folder's own sizes
    if (n is not None and n < 2) or (None not in (n, max_n) and max_n < n):
        raise InputError(f"--n {n} --max-n {max_n}: give --n >= 2 and --max-n >= --n")
    if args.budget is not None and args.budget <= 0:
        raise InputError(f"--budget {args.budget}: give a positive number of token-forwards")


def run(args: argparse.Namespace) -> int:
    from wildcircuits.pipeline.steps_verify import verify_file
    from wildcircuits.results.verify import Verification

    path = verify_file(args.hypothesis, args.task, args.model, args.out, chosen_settings(args),
                       device=args.device, corruption=args.corruption,
                       progress=not args.quiet)  # fmt: skip
    result = Verification.load(path)
    print(result.verdict)
    for claim in result.claims:
        print(f"  {claim.status.value:12s} {claim.claim}: {claim.reason}")
    print(f"wrote {path}")
    return 0
