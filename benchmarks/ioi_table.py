"""The IOI circuit-discovery table: every method on both real models, one evaluation protocol.

For each (model, method): `wildcircuits discover-edges ioi` on the train split (n examples,
seed 0), then `wildcircuits evaluate` of the scores on the held-out test split (n examples,
counterfactual ablation, top-k circuits pruned). Each step's output folder is kept under OUT
and reused on a rerun (a crash loses only the step in progress). Prints a Markdown table: CPR
(signed top-k), CMD (absolute top-k), the signed log-size area, the smallest circuit with
faithfulness >= 0.8 (the better of signed / absolute), discovery seconds; random baseline from
3 seeds. ACDC runs on Gemma3 only (32 train pairs as the issue asks, EAP pre-filter optional).

    python benchmarks/ioi_table.py [--out runs/ioi_table] [--n 16] [--models ...] [--methods ...]
        [--acdc-prefilter 1500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("smollm2-135m-instruct", "gemma3-270m")
METHODS = ("eap", "eap-ig-inputs", "eap-ig-activations", "node-attribution", "random", "acdc")
ACDC_MODELS = ("gemma3-270m",)


def run(command: list[str], log: Path) -> float:
    """Run a CLI command (output to `log`); seconds taken. A failure stops the script."""
    start = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}; see {log}")
    return time.perf_counter() - start


def discover(model: str, method: str, args, folder: Path) -> dict:
    if not (folder / "discovery.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        n = args.acdc_n if method == "acdc" else args.n
        command = [sys.executable, "-m", "wildcircuits", "discover-edges", "ioi",
                   "--method", method, "--model", model, "--out", str(folder),
                   "--n", str(n), "--quiet"]  # fmt: skip
        if method == "acdc":
            command += ["--set", f"checkpoint={folder / 'checkpoint.pt'}"]
            if args.acdc_prefilter:
                command += ["--set", f"prefilter_top={args.acdc_prefilter}"]
        print(f"  discover {model} {method} ...", flush=True)
        run(command, folder / "discover.log")
    return json.loads((folder / "discovery.json").read_text())


def evaluate(model: str, method: str, args, folder: Path) -> dict:
    out = folder / "eval"
    if not (out / "report.json").exists():
        seeds = "3" if method == "random" else "0"
        command = [sys.executable, "-m", "wildcircuits", "evaluate", str(folder / "scores.pt"),
                   "--task", "ioi", "--model", model, "--out", str(out), "--n", str(args.n),
                   "--split", "test", "--random-seeds", seeds, "--quiet"]  # fmt: skip
        print(f"  evaluate {model} {method} ...", flush=True)
        seconds = run(command, folder / "evaluate.log")
        (folder / "evaluate_seconds.txt").write_text(f"{seconds:.1f}\n")
    return json.loads((out / "report.json").read_text())["summary"]


def smallest(summary: dict) -> str:
    found = [s for s in summary["smallest_80"].values() if s and s.get("n_edges") is not None]
    if not found:
        return "none"
    best = min(found, key=lambda s: s["n_edges"])
    return f"{best['n_edges']} ({100 * best['fraction']:.3g}%)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/ioi_table")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--acdc-n", type=int, default=32)
    parser.add_argument("--acdc-prefilter", type=int, default=None)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    rows = []
    for model in args.models:
        for method in args.methods:
            if method == "acdc" and model not in ACDC_MODELS:
                continue
            folder = Path(args.out) / model / method
            found = discover(model, method, args, folder)
            summary = evaluate(model, method, args, folder)
            rows.append((model, method, found, summary))
            print(f"  done {model} {method}", flush=True)
    print()
    print(f"IOI, discovery on train (n={args.n}; ACDC n={args.acdc_n}), evaluation on test "
          f"(n={args.n}), counterfactual ablation, pruned top-k circuits")  # fmt: skip
    print()
    print("| model | method | CPR | CMD | log area | smallest f>=0.8 | discovery s |")
    print("|---|---|---|---|---|---|---|")
    for model, method, found, summary in rows:
        seconds = found["settings"].get("seconds", found.get("seconds"))  # ACDC: incl. resumes
        print(
            f"| {model} | {method} | {summary['cpr']:.3f} | {summary['cmd']:.3f} | "
            f"{summary['log_area_signed']:.3f} | {smallest(summary)} | {seconds} |"
        )


if __name__ == "__main__":
    main()
