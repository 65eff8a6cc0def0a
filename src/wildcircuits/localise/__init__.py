"""Localisation: which parts of the model matter for a task.

from wildcircuits.localise import direct_logit_attribution, logit_lens, head_roles
dla = direct_logit_attribution(model, problem)     # LogitAttribution; .head_grid(), .save(dir)
lens = logit_lens(model, problem)                  # LogitLens; .grid(), .save(dir)
roles = head_roles(model, problem)                 # HeadRoles; .table(), .save(dir)
"""

from __future__ import annotations

from wildcircuits.localise.dla import LogitAttribution, direct_logit_attribution
from wildcircuits.localise.head_roles import (
    HeadRoles,
    RandomSequences,
    RoleThresholds,
    head_roles,
    save_patterns,
)
from wildcircuits.localise.logit_lens import LogitLens, logit_lens
from wildcircuits.localise.norms import FrozenNorm, freeze_norm

__all__ = [
    "FrozenNorm",
    "HeadRoles",
    "LogitAttribution",
    "LogitLens",
    "RandomSequences",
    "RoleThresholds",
    "direct_logit_attribution",
    "freeze_norm",
    "head_roles",
    "logit_lens",
    "save_patterns",
]
