"""`wildcircuits tasks`: list the built-in tasks with a description and an example."""

from __future__ import annotations

import argparse
import json

#: Characters of a prompt or answer printed as text (a user file may hold megabytes).
SHOWN_CHARS = 300


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `tasks` sub-command."""
    parser = subparsers.add_parser(
        "tasks",
        help="list the built-in tasks",
        description="List the built-in tasks (one-line description and an example), or show "
        "one task (built-in name, .yaml or .jsonl file) in detail.",
    )
    parser.add_argument("task", nargs="?", help="show this task in detail")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wildcircuits.tasks import builtin_names, load_task

    names = [args.task] if args.task else builtin_names()
    rows = []
    for name in names:
        task = load_task(name)
        preview = task.preview()
        rows.append(
            {
                "name": task.name,
                "description": task.description,
                "metric": task.metric.value,
                "default_corruption": task.default_corruption,
                "corruptions": list(task.corruption_names),
                "variations": [v.name for v in task.variations()],
                "example": {
                    "clean": preview.clean,
                    "corrupted": dict(preview.corrupted),
                    "answers": list(preview.answers),
                    "distractors": list(preview.distractors),
                },
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.task:
        _print_detail(rows[0])
    else:
        for row in rows:
            example = shown(row["example"]["clean"])
            answer = shown(" | ".join(row["example"]["answers"]))
            print(f"{row['name']:<24} {row['description']}")
            print(f"{'':<24} e.g. {example} -> {answer}  [{row['metric']}]")
    return 0


def _print_detail(row: dict) -> None:
    print(f"{row['name']}: {row['description']}")
    print(f"metric: {row['metric']}; default corruption: {row['default_corruption']}")
    print(f"corruptions: {', '.join(row['corruptions'])}")
    print(f"variations: {', '.join(row['variations']) or '-'}")
    example = row["example"]
    print(f"clean:      {shown(example['clean'])}")
    for name, text in example["corrupted"].items():
        print(f"{shown(name, 40) + ':':<11} {shown(text)}")
    answers = ", ".join(shown(a, 60) for a in example["answers"])
    distractors = ", ".join(shown(d, 60) for d in example["distractors"])
    print(f"answers: [{answers}]  distractors: [{distractors}]")


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """`repr(text)`, cut to `limit` characters with the full length said when longer."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters in all)"
