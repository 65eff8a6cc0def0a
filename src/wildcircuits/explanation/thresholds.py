"""The class rules' limits (`explain.classes` module doc), stated once; the class sentences
use the same path limit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassThresholds:
    """The rules' limits, stated once (module doc says where each is used).

    attention: mean attention weight (0..1) to a named position that counts as "attends to";
    direct: |direct effect| as a fraction of the mean clean logit difference;
    copying: the OV copying score (copy minus suppression fraction, -1..1);
    path: a normalized path effect (1 = the whole clean-vs-corrupted difference) that counts as
    "feeds"; backup: a head's rise in direct effect, as a fraction of the knocked-out class's
    direct effect, that makes it a backup head.
    """

    attention: float = 0.3
    direct: float = 0.05
    copying: float = 0.3
    path: float = 0.02
    backup: float = 0.05


THRESHOLDS = ClassThresholds()
