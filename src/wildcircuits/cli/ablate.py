"""`wildcircuits ablate TASK --heads L12.H3,L14.H0 --mlps 5,6 --ablation mean --out DIR`.

Ablates the chosen heads (their z, or `--component result`) and MLP outputs on TASK's clean
prompts and writes DIR/ablation.json (metric with / without the ablation, provenance) and a bar
chart DIR/ablation.png / .html. `--ablation` is an ablation spec (`patching.ablation_spec`):
zero, mean, resample or counterfactual, with options such as mean:clean:pooled or
resample:seed=3. Mean and resample ablations draw from the task's corrupted distribution
(`--corruption`, default the task's own, e.g. IOI's ABC) unless the spec says clean, per template
with `--per-template`; `--seed` seeds the dataset and a resample whose spec names no seed.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `ablate` sub-command."""
    from wildcircuits.cli.attribute import add_problem_options

    parser = subparsers.add_parser(
        "ablate",
        help="ablate heads / MLPs (zero, mean, resample) and measure the metric",
        description="Ablate heads and MLPs on TASK's clean prompts; write DIR/ablation.json "
        "and a bar chart.",
    )
    add_problem_options(parser)
    parser.add_argument("--heads", default="", help="heads, e.g. L12.H3,L14.H0")
    parser.add_argument("--mlps", default="", help="MLP layers, e.g. 5,6")
    parser.add_argument("--position", type=int, default=None,
                        help="ablate only this position (negative: from the end)")  # fmt: skip
    parser.add_argument("--component", choices=["z", "result"], default="z",
                        help="head site to ablate (z)")  # fmt: skip
    parser.add_argument("--ablation", default="mean",
                        help="zero, mean[:clean][:pooled], resample[:clean][:seed=N] or "
                        "counterfactual (mean)")  # fmt: skip
    parser.add_argument("--per-template", action="store_true",
                        help="mean / resample within each template (IOI-paper style)")  # fmt: skip
    parser.add_argument("--no-per-position", action="store_true",
                        help="one mean over all positions instead of one per position")  # fmt: skip
    parser.set_defaults(func=run, check=check)


def check(args: argparse.Namespace) -> None:
    """Before the model loads: the head / layer syntax, at least one site, the ablation spec."""
    from wildcircuits.errors import InputError

    if not (parse_heads(args.heads) or parse_layers(args.mlps)):
        raise InputError("ablate: no sites given; pass --heads (e.g. L12.H3) and / or --mlps (5,6)")
    ablation_from_args(args)


def check_against(args: argparse.Namespace, model, problem) -> None:
    """After the model loads: heads, MLP layers and --position exist in the model and prompts."""
    from wildcircuits import inputs

    inputs.check_heads("--heads", args.heads, model)
    inputs.check_layers("--mlps", parse_layers(args.mlps), model.n_layers)
    inputs.check_position("--position", args.position, problem.clean.seq_len)


def parse_heads(text: str) -> list[tuple[int, int]]:
    """'L12.H3,L14.H0' -> [(12, 3), (14, 0)]."""
    from wildcircuits.names import parse_head, split_names

    heads = [parse_head(name) for name in split_names(text)]
    return [(head.layer, head.head) for head in heads]


def parse_layers(text: str) -> list[int]:
    """'5,6' -> [5, 6]."""
    from wildcircuits.errors import SiteError

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise SiteError(f"--mlps: cannot parse MLP layers {text!r}; expected e.g. 5,6")
    return [int(p) for p in parts]


def sites_from_args(args: argparse.Namespace) -> list:
    """The sites to ablate from --heads / --mlps / --component / --position."""
    from wildcircuits.patching.sites import Component, Site

    component = Component(args.component)
    sites = [Site(component, layer, head, args.position) for layer, head in parse_heads(args.heads)]
    sites += [
        Site(Component.MLP_OUT, layer, None, args.position) for layer in parse_layers(args.mlps)
    ]
    return sites


def ablation_from_args(args: argparse.Namespace):
    """The `AblationSpec` of --ablation, --no-per-position and --seed."""
    from dataclasses import replace

    from wildcircuits.patching.ablation_spec import AblationKind, AblationSpec

    spec = AblationSpec.parse(args.ablation, seed=args.seed)
    if args.no_per_position and spec.kind is AblationKind.MEAN:
        spec = replace(spec, per_position=False)
    return spec


def run(args: argparse.Namespace) -> int:
    from wildcircuits.models import load_model
    from wildcircuits.patching.ablation import ablate
    from wildcircuits.patching.problem import problem_from_dataset
    from wildcircuits.report.figures import save_bars
    from wildcircuits.results import save_json
    from wildcircuits.tasks import Split, load_task

    sites = sites_from_args(args)
    spec = ablation_from_args(args)
    task = load_task(args.task)
    model = load_model(args.model, device=args.device)
    data = task.build(model.tokenizer, n=args.n, seed=args.seed, split=Split(args.split))
    problem = problem_from_dataset(model, data, corruption=args.corruption)
    check_against(args, model, problem)
    groups = [e.template for e in data.examples] if args.per_template else None
    result = ablate(model, problem, sites, spec, groups=groups)
    path = save_json(f"{args.out}/ablation.json", result.to_dict())
    labels = ["clean", "corrupted", f"{spec}-ablated"]
    save_bars(
        [result.clean, result.corrupted, result.ablated], labels, f"{args.out}/ablation",
        f"{spec} ablation of {len(sites)} sites", problem.metric.value, result.provenance,
    )  # fmt: skip
    print(
        f"{problem.metric.value}: clean {result.clean:.3f}, corrupted {result.corrupted:.3f}, "
        f"{spec}-ablated {result.ablated:.3f} (effect {result.effect:+.3f}, "
        f"normalized {result.normalized:.3f}; n={problem.batch})"
    )
    print(f"wrote {path}")
    return 0
