"""The run folder's bookkeeping: config.json, manifest.json and per-step completion.

A step is done when the manifest says so, its fingerprint agrees with the current config and the
upstream outputs (`fingerprint`), and every output it recorded still has its hash and parses; any
other step is run again on `--resume`. Every write is atomic and the manifest is updated after a
step's outputs, so killing the run at any point loses at most the step in progress.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from wildcircuits.errors import WildcircuitsError
from wildcircuits.pipeline.config import DiscoverConfig
from wildcircuits.pipeline.fingerprint import (
    STEP_FIELDS,
    differences,
    disagreement,
    file_hash,
    fingerprint,
    step_inputs,
)
from wildcircuits.results import RESULT_KINDS, load_json, save_json
from wildcircuits.results.manifest import Manifest, StepRecord, StepState, Stop


class RunFolder:
    """RUN_DIR and its manifest (a `Manifest`, replaced on every change and saved)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.manifest = Manifest()

    def path(self, name: str) -> Path:
        return self.root / name

    # config -------------------------------------------------------------------------------------
    def start(self, config: DiscoverConfig, resume: bool, fresh: bool = False) -> DiscoverConfig:
        """Create or reopen the folder.

        `fresh` deletes the previous run's files first. Without `resume`, a folder holding
        another config's results is refused, naming the differences; with it, the steps whose
        fingerprints no longer agree are recomputed (`is_done`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        config_path = self.path("config.json")
        if fresh:
            self._clear()
        elif not resume and config_path.exists():
            _check_same(config_path, config)
        manifest = self._load_manifest() if config_path.exists() else Manifest()
        save_json(config_path, config.to_dict(), require_provenance=False)
        self.manifest = replace(
            manifest,
            created=manifest.created or _now(),
            stopped=None,
            package_version=_version(),
            git_commit=_git_commit(),
            seeds=_seeds(config),
        )
        self.save_manifest()
        return config

    def _clear(self) -> None:
        """Delete the files a run writes (not other files the user put here)."""
        names = {"config.json", "manifest.json", "scores.pt", "report.html", "behaviour.png"}
        names |= set(RESULT_KINDS)
        for record in self._load_manifest().steps.values():
            names |= set(record.outputs)
        for name in names:
            path = self.path(name)
            if path.is_file() and path.resolve().is_relative_to(self.root.resolve()):
                path.unlink()
        shutil.rmtree(self.path("figures"), ignore_errors=True)

    def _load_manifest(self) -> Manifest:
        try:
            return Manifest.load(self.path("manifest.json"))
        except WildcircuitsError:  # unreadable: every step counts as not done
            return Manifest()

    def save_manifest(self) -> None:
        self.manifest.save(self.path("manifest.json"))

    def record_model(self, info: dict[str, Any]) -> None:
        self.manifest = replace(self.manifest, model=info)
        self.save_manifest()

    # steps --------------------------------------------------------------------------------------
    def is_done(self, step: str, config: DiscoverConfig) -> bool:
        """Finished, its fingerprint agrees with `config` and the upstream outputs, and every
        output still has its recorded hash and parses into its type."""
        entry = self.manifest.steps.get(step)
        if entry is None or step not in STEP_FIELDS:
            return False
        if disagreement(step, config.to_dict(), self.manifest, self.root) is not None:
            return False
        return all(_readable(self.path(name)) for name in entry.outputs)

    def why_not_done(self, step: str, config: DiscoverConfig) -> str | None:
        """Why a recorded step is recomputed (None when it was never run)."""
        if step not in self.manifest.steps:
            return None
        reason = disagreement(step, config.to_dict(), self.manifest, self.root)
        return reason or "an output does not parse into its type"

    def mark(self, step: str, state: StepState, **fields: Any) -> None:
        self.manifest = self.manifest.with_step(step, StepRecord(StepState(state), **fields))
        self.save_manifest()

    def finish(
        self,
        step: str,
        config: DiscoverConfig,
        seconds: float,
        outputs,
        token_forwards: int | None = None,
    ) -> None:
        """Record `step` as done, with its fingerprint, the hash of every output and the
        forward passes it ran (`token_forwards`, None where not counted). A file
        belongs to the step that wrote it last: another step's record that lists one of these
        outputs (hypothesis.yaml, written by the explain step before the hypothesis step
        existed) drops it first, so that record still agrees with the folder."""
        self._disown(step, outputs)
        hashes = {n: file_hash(self.path(n)) for n in outputs if self.path(n).is_file()}
        cost = {"seconds": seconds, "token_forwards": token_forwards}
        if step not in STEP_FIELDS:  # the report: rebuilt every run, no fingerprint
            self.mark(step, StepState.DONE, **cost, outputs=tuple(outputs))
            return
        self.mark(
            step,
            StepState.DONE,
            **cost,
            outputs=tuple(outputs),
            fingerprint=fingerprint(step, config.to_dict(), self.manifest),
            inputs=step_inputs(step, config.to_dict()),
            hashes=hashes,
        )

    def _disown(self, step: str, outputs) -> None:
        mine = set(outputs)
        for other, record in self.manifest.steps.items():
            if other == step or not mine & set(record.outputs):
                continue
            kept = replace(
                record,
                outputs=tuple(n for n in record.outputs if n not in mine),
                hashes={n: h for n, h in record.hashes.items() if n not in mine},
            )
            self.manifest = self.manifest.with_step(other, kept)

    def stop(self, step: str, reason: str) -> None:
        self.manifest = replace(self.manifest, stopped=Stop(step, reason))
        self.save_manifest()


def _check_same(config_path: Path, config: DiscoverConfig) -> None:
    """The saved config equals `config` except for `steps` and `device`; else refuse, naming
    the differences."""
    try:
        saved = DiscoverConfig.from_dict(load_json(config_path)).to_dict()
    except (WildcircuitsError, TypeError, ValueError, AttributeError) as error:
        raise WildcircuitsError(
            f"{config_path} cannot be read ({error}); rerun with --resume to recompute what "
            "does not agree, --fresh to start the folder afresh, or use a new --out folder"
        ) from None
    ignore = ("steps", "device")  # may differ between attempts
    a = {k: v for k, v in saved.items() if k not in ignore}
    b = {k: v for k, v in config.to_dict().items() if k not in ignore}
    changed = differences(a, b)
    if changed:
        raise WildcircuitsError(
            f"{config_path.parent} holds the results of other settings ({'; '.join(changed)}); "
            "rerun with --resume to recompute the affected steps, --fresh to start the folder "
            "afresh, or use a new --out folder"
        )


def _readable(path: Path) -> bool:
    """An output exists and parses: into its result type (RESULT_KINDS), as JSON, or as a .pt;
    other files just have to exist and be non-empty. A file that does not parse into its type
    (e.g. a metrics.json holding `{}`) means: recompute this step."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    try:
        if path.name in RESULT_KINDS:
            RESULT_KINDS[path.name].load(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".pt":
            from wildcircuits.files import safe_torch_load

            safe_torch_load(path, "run-folder tensor file", WildcircuitsError)
    except (WildcircuitsError, ValueError, OSError):  # unparseable: recompute this step
        return False
    return True


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version() -> str:
    from wildcircuits import __version__

    return __version__


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _seeds(config: DiscoverConfig) -> dict[str, Any]:
    return {
        "dataset": config.seed,
        "heldout_dataset": config.seed,
        "redteam_dataset": config.seed + 1,
        "random_baseline": list(config.random_seeds),
    }
