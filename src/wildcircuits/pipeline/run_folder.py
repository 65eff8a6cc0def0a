"""The run folder's bookkeeping: config.json, manifest.json and per-step completion.

A step is done when the manifest says so AND every output it recorded exists and parses; a
step whose outputs are missing or corrupt is run again on `--resume`. Every write is atomic, so
killing the run at any point loses at most the step in progress.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from wildcircuits.errors import WildcircuitsError
from wildcircuits.pipeline.config import DiscoverConfig
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
    def start(self, config: DiscoverConfig, resume: bool) -> DiscoverConfig:
        """Create or reopen the folder; on resume the saved config must match `config`."""
        self.root.mkdir(parents=True, exist_ok=True)
        config_path = self.path("config.json")
        manifest = Manifest()
        if resume and config_path.exists():
            _check_same(config_path, config)
            manifest = self._load_manifest()
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
    def is_done(self, step: str) -> bool:
        entry = self.manifest.steps.get(step)
        if entry is None or entry.state is not StepState.DONE:
            return False
        return all(_readable(self.path(name)) for name in entry.outputs)

    def mark(self, step: str, state: StepState, **fields: Any) -> None:
        self.manifest = self.manifest.with_step(step, StepRecord(StepState(state), **fields))
        self.save_manifest()

    def stop(self, step: str, reason: str) -> None:
        self.manifest = replace(self.manifest, stopped=Stop(step, reason))
        self.save_manifest()


def _check_same(config_path: Path, config: DiscoverConfig) -> None:
    """The saved config equals `config` except for `steps` and `device`."""
    saved = DiscoverConfig.from_dict(load_json(config_path))
    ignore = ("steps", "device")  # may differ between attempts
    a = {k: v for k, v in saved.to_dict().items() if k not in ignore}
    b = {k: v for k, v in config.to_dict().items() if k not in ignore}
    if a != b:
        changed = sorted(k for k in a if a[k] != b.get(k))
        raise WildcircuitsError(
            f"{config_path} was written with other settings ({', '.join(changed)}); "
            "resume with the same settings or use a new --out folder"
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
            import torch

            torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any parse failure means: recompute this step
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
