"""The main job: `wildcircuits discover`, from a behaviour to a verified circuit and a report.

`discover` resolves lazily so that the CLI can read `STEPS` / `DiscoverConfig` without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wildcircuits.pipeline.config import STEPS, DiscoverConfig

__all__ = ["STEPS", "DiscoverConfig", "discover"]


def __getattr__(name: str) -> Any:
    if name == "discover":
        from wildcircuits.pipeline.runner import discover

        return discover
    raise AttributeError(f"module 'wildcircuits.pipeline' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from wildcircuits.pipeline.runner import discover as discover
