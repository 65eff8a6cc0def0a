"""The one ablation spec: what an ablated activation or edge is replaced by.

Every ablation in wildcircuits (site ablation, edge patching, ACDC, evaluation, the CLI and the
run folder) is an `AblationSpec`:
- counterfactual: row i gets the value on the corrupted prompt of the same example (patching, as
  in MIB / ACDC); the empty circuit is then the corrupted run.
- resample: row i gets the value on another row's prompt of the reference distribution (a seeded
  derangement; causal scrubbing / resample ablation). It is the counterfactual with the rows
  shuffled, so it is a variant of the same spec, not a type of its own: it draws from a named
  distribution (`over`) and has a `seed`. Site ablation offers it; the edge engine does not
  (shuffled rows would carry other rows' padding).
- mean: the mean over the real tokens of a named distribution (`over`: the problem's corrupted or
  clean prompts), per position (position p: the rows with a real token at p) or pooled over every
  real token (`per_position=False`); with `per_template` ("mean:template"), the mean over the
  rows of the same template only (the problem's per-row `groups`, from the dataset's template
  ids): the IOI paper's knockout, the mean over the ABC distribution per template.
- zero: the value is 0.

Strings (CLI options, config files, provenance) are `KIND[:OPTION]...`, parsed by
`AblationSpec.parse` and written by `AblationSpec.format` (options equal to the defaults are
left out): "counterfactual", "zero", "mean", "mean:clean", "mean:pooled", "mean:clean:pooled",
"mean:template", "mean:template:pooled", "resample", "resample:clean:seed=3".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from wildcircuits.errors import WildcircuitsError

if TYPE_CHECKING:  # torch-free at import: the CLI parses ablation strings before loading torch
    from torch import Tensor

    from wildcircuits.models.tokens import Tokens
    from wildcircuits.patching.problem import PatchingProblem

POOLED = "pooled"
PER_POSITION = "per-position"
TEMPLATE = "template"
SEED = "seed="


class AblationError(WildcircuitsError):
    """An unknown ablation, an option it does not take, or one a method does not support."""


class AblationKind(StrEnum):
    """What an ablated value becomes."""

    COUNTERFACTUAL = "counterfactual"
    RESAMPLE = "resample"
    MEAN = "mean"
    ZERO = "zero"


#: What an ablated edge can carry; resample is for sites only (shuffled rows would carry other
#: rows' padding into the edge engine).
EDGE_ABLATIONS = (AblationKind.COUNTERFACTUAL, AblationKind.MEAN, AblationKind.ZERO)


class Distribution(StrEnum):
    """The prompts of a problem that a mean or a resample draws from."""

    CORRUPTED = "corrupted"
    CLEAN = "clean"


#: The kinds that take each option.
DRAWN = (AblationKind.MEAN, AblationKind.RESAMPLE)


@dataclass(frozen=True)
class AblationSpec:
    """One ablation: its kind and, where they apply, the distribution, positions and seed.

    over: mean / resample only; per_position: mean only (False: one mean over every real token);
    per_template: mean only (one mean per template: the problem's `groups`); seed: resample
    only. An option given to a kind that does not take it raises.
    """

    kind: AblationKind = AblationKind.COUNTERFACTUAL
    over: Distribution = Distribution.CORRUPTED
    per_position: bool = True
    seed: int = 0
    per_template: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _enum(AblationKind, self.kind, "ablation"))
        object.__setattr__(self, "over", _enum(Distribution, self.over, "distribution"))
        unused = []
        if self.over is not Distribution.CORRUPTED and self.kind not in DRAWN:
            unused.append(f"distribution {self.over.value!r}")
        if not self.per_position and self.kind is not AblationKind.MEAN:
            unused.append(POOLED)
        if self.per_template and self.kind is not AblationKind.MEAN:
            unused.append(TEMPLATE)
        if self.seed != 0 and self.kind is not AblationKind.RESAMPLE:
            unused.append(f"seed {self.seed}")
        if unused:
            raise AblationError(
                f"{self.kind.value} ablation takes no {', '.join(unused)}; a distribution is "
                "for mean / resample, pooled and template for mean, a seed for resample"
            )

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> AblationSpec:
        """'mean:clean:pooled' -> AblationSpec(MEAN, CLEAN, per_position=False); `seed` is the
        resample seed when the text names none."""
        kind, *options = [part.strip() for part in str(text).strip().split(":")]
        fields: dict[str, Any] = {"kind": _enum(AblationKind, kind, "ablation")}
        if fields["kind"] is AblationKind.RESAMPLE:
            fields["seed"] = seed
        for option in options:
            if option in tuple(Distribution):
                fields["over"] = Distribution(option)
            elif option in (POOLED, PER_POSITION):
                fields["per_position"] = option == PER_POSITION
            elif option == TEMPLATE:
                fields["per_template"] = True
            elif option.startswith(SEED) and option[len(SEED) :].lstrip("-").isdigit():
                fields["seed"] = int(option[len(SEED) :])
            else:
                raise AblationError(
                    f"ablation {text!r}: unknown option {option!r}; options are "
                    f"{', '.join(Distribution)} (mean / resample), {POOLED} or {PER_POSITION} "
                    f"and {TEMPLATE} (mean), seed=N (resample)"
                )
        return cls(**fields)

    @classmethod
    def coerce(cls, value: AblationSpec | str | None) -> AblationSpec:
        """A spec from a spec, its string (or a bare kind), or None (the default)."""
        if value is None:
            return cls()
        return value if isinstance(value, AblationSpec) else cls.parse(value)

    def format(self) -> str:
        """The string `parse` reads back; options at their defaults are left out."""
        parts = [self.kind.value]
        if self.over is not Distribution.CORRUPTED:
            parts.append(self.over.value)
        if self.per_template:
            parts.append(TEMPLATE)
        if not self.per_position:
            parts.append(POOLED)
        if self.seed != 0:
            parts.append(f"{SEED}{self.seed}")
        return ":".join(parts)

    def __str__(self) -> str:
        return self.format()

    def describe(self) -> dict[str, Any]:
        """Provenance entries for results computed with this ablation."""
        info: dict[str, Any] = {"ablation": self.format()}
        if self.kind is AblationKind.MEAN:
            info["mean_reference"] = self.over.value
            info["mean_per_position"] = self.per_position
            if self.per_template:
                info["mean_per_template"] = True
        elif self.kind is AblationKind.RESAMPLE:
            info["resample_reference"] = self.over.value
            info["resample_seed"] = self.seed
        return info

    def require(self, kinds: Iterable[AblationKind], user: str) -> AblationSpec:
        """This spec if its kind is one of `kinds`, else an error naming `user` and the choices."""
        kinds = tuple(kinds)
        if self.kind not in kinds:
            choices = ", ".join(k.value for k in kinds) or "none"
            raise AblationError(
                f"{user} does not support {self.format()!r} ablation; its ablations: {choices}"
            )
        return self

    def reference(self, problem: PatchingProblem) -> Tokens:
        """The problem's prompts this ablation draws from (counterfactual: the corrupted ones)."""
        return problem.clean if self.over is Distribution.CLEAN else problem.corrupted


def _enum(kind: type[StrEnum], value: Any, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise AblationError(f"unknown {what} {value!r}; choose one of {choices}") from None


def masked_totals(
    value: Tensor, attention_mask: Tensor, per_position: bool = True
) -> tuple[Tensor, Tensor]:
    """(sum, count) of `value` over the rows (and positions, unless per_position) of real tokens.

    value: (rows, pos, ...); attention_mask: (rows, pos) -> sums (1, pos, ...) or (1, 1, ...) and
    the matching token counts, broadcastable to them. Summing both over chunks of rows and
    dividing (`masked_mean`) gives the mean over real tokens that every mean ablation uses.
    """
    weight = attention_mask.to(dtype=value.dtype, device=value.device)
    weight = weight.reshape(*weight.shape, *([1] * (value.ndim - 2)))  # (rows, pos, 1, ...)
    dims = (0,) if per_position else (0, 1)
    return (value * weight).sum(dims, keepdim=True), weight.sum(dims, keepdim=True)


def masked_mean(total: Tensor, count: Tensor) -> Tensor:
    """The mean from `masked_totals` (positions no row has a real token at stay 0)."""
    return total / count.clamp(min=1)


def mean_over_tokens(value: Tensor, attention_mask: Tensor, per_position: bool = True) -> Tensor:
    """Mean of value (rows, pos, ...) over real tokens: (1, pos, ...) or (1, 1, ...)."""
    return masked_mean(*masked_totals(value, attention_mask, per_position))
