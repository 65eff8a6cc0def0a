"""Fingerprints: what each step's outputs were computed from, and checking that they agree.

A step's fingerprint is the SHA-256 of the config fields it depends on (`STEP_FIELDS`), its
method version (`METHOD_VERSIONS`) and the content hashes of the outputs of the steps it reads
(`STEP_UPSTREAM`). The manifest records, per step, the fingerprint, the fields and version it
was computed from (`inputs`) and the SHA-256 of every output file (`hashes`, JSON and non-JSON
alike). An output agrees with a run folder's config when its step's recorded fingerprint equals
the one computed from config.json and the recorded upstream hashes, the file's bytes still hash
to the recorded value, and every upstream step agrees.

`device` and `steps` are in no fingerprint: a run may be resumed on another device or with
another subset of steps. Nothing here imports torch (the report uses it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from wildcircuits.results.manifest import Manifest, StepRecord, StepState

_DATA = ("task", "model", "n_examples", "seed", "corruption")

#: step -> the config fields its outputs depend on directly.
STEP_FIELDS: dict[str, tuple[str, ...]] = {
    "behaviour": (*_DATA, "min_accuracy", "min_loss_gap"),
    "localise": _DATA,
    "discover": (*_DATA, "method", "method_settings"),
    "evaluate": (*_DATA, "n_heldout", "ablation", "random_seeds", "method"),
    "explain": (*_DATA, "n_heldout"),
    "hypothesis": _DATA,
    "verify": (*_DATA, "n_heldout", "verify_settings"),
    "redteam": (*_DATA, "n_heldout", "ablation", "random_seeds", "method", "method_settings"),
    "summarise": _DATA,
}

#: step -> the version of its method, for a step whose method changed in a way that changes its
#: outputs (it enters `step_inputs` as `method_version`, so older outputs are recomputed on
#: --resume and the reason names it). explain 2: the compact-circuit search requires a margin
#: and every ablation (`position_search.SEARCH_SLACK`); 3: where no prefix reaches that, the
#: search ablation alone; 4: and where not even that, the search ablation alone at the target
#: itself; a head's path evidence into member heads is measured into the heads at each
#: position together (`explanation.pair_paths`). hypothesis 2: a drafted class's depends_on
#: positions include those of the classes it reads (`explanation.hypothesis`; version 1 was
#: drafted inside the explain step). verify 2: in causal scrubbing a class computes as one
#: unit (its members read each other from the class run, `verification.scrub_runs`); 3: the
#: whole hypothesis's tree counts identical subtrees once against max_tree (so more trees are
#: scrubbed); 4: a resampling variable holds every token of its span (a multi-token entity
#: whole), greater_than and induction have variables, values compare by key and text
#: (`verification.resampling.pool_from_dataset`); 5: the prompts grow within a budget of
#: token-forwards (`models.counting`), not seconds, so they do not depend on the machine's load.
#: A step not listed is at version 1 and carries no entry, so its fingerprints are those written
#: before versions existed.
METHOD_VERSIONS: dict[str, int] = {"explain": 4, "hypothesis": 2, "verify": 5}

#: step -> the steps whose outputs it reads (their output hashes enter its fingerprint).
STEP_UPSTREAM: dict[str, tuple[str, ...]] = {
    "behaviour": (),
    "localise": ("behaviour",),
    "discover": ("behaviour",),
    "evaluate": ("discover",),
    "explain": ("evaluate",),
    "hypothesis": ("explain",),
    "verify": ("hypothesis",),
    "redteam": ("behaviour", "localise", "evaluate"),
    "summarise": ("localise", "evaluate"),
}


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def step_inputs(step: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config fields `step` depends on, as plain JSON values, and its `METHOD_VERSIONS`
    entry where it has one."""
    inputs = {name: _plain(config.get(name)) for name in STEP_FIELDS.get(step, ())}
    if step in METHOD_VERSIONS:
        inputs["method_version"] = METHOD_VERSIONS[step]
    return inputs


def fingerprint(step: str, config: Mapping[str, Any], manifest: Manifest) -> str:
    """The fingerprint `step` must carry under `config` and the upstream hashes in `manifest`."""
    upstream = {
        name: dict(sorted(_record(manifest, name).hashes.items()))
        for name in STEP_UPSTREAM.get(step, ())
    }
    text = json.dumps(
        {"step": step, "inputs": step_inputs(step, config), "upstream": upstream},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def disagreement(
    step: str,
    config: Mapping[str, Any],
    manifest: Manifest,
    root: Path,
    may_be_missing: Collection[str] = (),
) -> str | None:
    """Why `step`'s outputs in `root` do not agree with `config` (None when they do).
    may_be_missing: outputs that may be absent (a present one must still have its hash).

    Upstream agreement is not checked here; `stale_steps` walks the steps in order."""
    record = _record(manifest, step)
    if record.state is not StepState.DONE:
        return f"the {step} step did not finish"
    if record.fingerprint is None:
        return f"the {step} step carries no fingerprint"
    if record.fingerprint != fingerprint(step, config, manifest):
        changed = differences(record.inputs, step_inputs(step, config))
        if changed:
            return f"{step} was computed with other settings ({', '.join(changed)})"
        return f"{step} was computed from other upstream outputs"
    for name in record.outputs:
        path = root / name
        if not path.is_file() and name in may_be_missing:
            continue
        if not path.is_file() or record.hashes.get(name) != file_hash(path):
            return f"{name} changed or is missing since the {step} step wrote it"
    return None


def stale_steps(
    config: Mapping[str, Any], manifest: Manifest, root: Path, legacy_ok: bool = False
) -> dict[str, str]:
    """step -> why its outputs do not agree, for every recorded step (report excluded).

    With `legacy_ok`, a finished step without a fingerprint (written before fingerprints)
    counts as agreeing, as does a step downstream of it that has none either."""
    stale: dict[str, str] = {}
    for step in STEP_FIELDS:
        if step not in manifest.steps:
            continue
        record = manifest.steps[step]
        if legacy_ok and record.state is StepState.DONE and record.fingerprint is None:
            continue
        bad_up = [u for u in STEP_UPSTREAM[step] if u in stale]
        reason = disagreement(step, config, manifest, root)
        if reason is None and bad_up:
            reason = f"it was computed from {', '.join(bad_up)}, which does not agree"
        if reason is not None:
            stale[step] = reason
    return stale


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """'field: old -> new' for each field that differs (sorted by field)."""
    keys = sorted(set(old) | set(new))
    return [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in keys
        if _plain(old.get(k)) != _plain(new.get(k))
    ]


def _record(manifest: Manifest, step: str) -> StepRecord:
    return manifest.steps.get(step) or StepRecord(StepState.PENDING)


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so that config.json and a DiscoverConfig compare equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
