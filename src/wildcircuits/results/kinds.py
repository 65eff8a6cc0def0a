"""Imports every result module so that `RESULT_KINDS` lists every run-folder file type."""

from __future__ import annotations

from wildcircuits.results import (
    behaviour,
    circuits,
    explain,
    localise,
    manifest,
    metrics,
    verdicts,
    verify,
)

__all__ = [
    "behaviour", "circuits", "explain", "localise", "manifest", "metrics", "verdicts", "verify",
]  # fmt: skip
