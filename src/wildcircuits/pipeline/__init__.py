"""The main job: `wildcircuits discover`, from a behaviour to a verified circuit and a report."""

from wildcircuits.pipeline.config import STEPS, DiscoverConfig
from wildcircuits.pipeline.runner import discover

__all__ = ["STEPS", "DiscoverConfig", "discover"]
