"""`wildcircuits verify-model MODEL`: parity and invariant checks, as JSON; exit 1 on failure."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `verify-model` sub-command."""
    parser = subparsers.add_parser(
        "verify-model",
        help="check that the instrumented model reproduces the HF model exactly",
        description=(
            "Run the instrumented forward against the Hugging Face eager forward and check the "
            "invariants (identity patching, head sums, causality). Prints a JSON summary; "
            "exit status 1 when any check fails. Run this first when adding a model."
        ),
    )
    parser.add_argument("model", help="built-in id, HF hub id, local folder or .gguf path")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--prompt", action="append", help="prompt(s) to check with (repeatable)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wildcircuits.models import load_model
    from wildcircuits.models.verify import verify_model

    model = load_model(args.model, device=args.device)
    prompts = tuple(args.prompt) if args.prompt else None
    report = verify_model(model, prompts)
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.passed else 1
