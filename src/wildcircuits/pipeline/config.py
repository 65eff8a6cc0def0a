"""Settings of one `discover` run: everything needed to rerun it (saved as config.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from wildcircuits.errors import WildcircuitsError
from wildcircuits.patching.ablation_spec import EDGE_ABLATIONS, AblationSpec

STEPS = (
    "behaviour",
    "localise",
    "discover",
    "evaluate",
    "explain",
    "hypothesis",
    "verify",
    "redteam",
    "summarise",
    "report",
)

#: Clean accuracy below this (or a clean metric no better than the corrupted one) means the
#: model does not do the task: the run stops after the behaviour step and says so.
MIN_ACCURACY = 0.6
#: For the loss metric (many positions per prompt): the clean loss must be at least this many
#: nats below the corrupted prompts' loss (clean top-1 accuracy is reported, not gated).
MIN_LOSS_GAP = 1.0


@dataclass(frozen=True)
class DiscoverConfig:
    """Defaults are chosen so `make demo` finishes in minutes on 2 CPU cores: 16 examples
    (train split) and 16 held-out (test split); EAP-IG on inputs with 5 steps, the best method
    measured in benchmarks/ and docs/discovery.md at a cost of 2 forwards + 5 forward-backward
    passes; counterfactual (corrupted-run) ablation."""

    task: str = "ioi"
    model: str = "smollm2-135m-instruct"
    method: str = "eap-ig-inputs"
    n_examples: int = 16
    n_heldout: int = 16
    seed: int = 0
    device: str = "cpu"
    ablation: str = "counterfactual"
    steps: tuple[str, ...] = STEPS
    corruption: str | None = None
    method_settings: dict[str, Any] = field(default_factory=dict)
    verify_settings: dict[str, Any] = field(default_factory=dict)
    random_seeds: tuple[int, ...] = (1, 2, 3)
    min_accuracy: float = MIN_ACCURACY
    min_loss_gap: float = MIN_LOSS_GAP

    def __post_init__(self) -> None:
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown:
            raise WildcircuitsError(f"unknown step(s) {unknown}; steps are {', '.join(STEPS)}")
        spec = AblationSpec.parse(self.ablation).require(EDGE_ABLATIONS, "discover")
        object.__setattr__(self, "ablation", spec.format())
        if self.n_examples < 2:
            raise WildcircuitsError("--n-examples must be at least 2")
        check_verify_settings(self.verify_settings)
        object.__setattr__(self, "steps", tuple(s for s in STEPS if s in self.steps))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = list(self.steps)
        data["random_seeds"] = list(self.random_seeds)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscoverConfig:
        """Parse config.json; an unknown key raises, naming it and the valid keys."""
        unknown = sorted(k for k in data if k not in cls.__dataclass_fields__)
        if unknown:
            raise WildcircuitsError(
                f"config.json: unknown setting(s) {', '.join(unknown)}; valid settings are "
                f"{', '.join(cls.__dataclass_fields__)}"
            )
        known = dict(data)
        for key in ("steps", "random_seeds"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)

    def with_(self, **changes: Any) -> DiscoverConfig:
        return replace(self, **changes)


#: The verify step's effort in a `discover` run (`verification.run.VerifySettings` fields), sized
#: so that `make demo` stays within its budget; `verify_settings` overrides any of them. The
#: thresholds that decide a claim are not settings (`verification.run.thresholds`).
PIPELINE_VERIFY = {
    "n_random": 5,
    "greedy_steps": 1,
    "minimality_steps": 0,
    "budget_forwards": 64_000,
}


def check_verify_settings(settings: dict[str, Any]) -> None:
    """Unknown keys of `verify_settings` are an error naming the valid ones (no torch)."""
    valid = (
        "max_n", "max_width", "budget_forwards", "n_random", "greedy_steps", "minimality_steps",
        "minimality_candidates", "n_reference", "n_boot", "batch_size", "scrub", "max_tree",
        "checks",
    )  # fmt: skip
    if not isinstance(settings, dict):
        raise WildcircuitsError(
            f"verify_settings must be a JSON object, got {type(settings).__name__}; give e.g. "
            "'{\"greedy_steps\": 2}'"
        )
    if "budget_s" in settings:
        raise WildcircuitsError(
            "verify_settings: budget_s (seconds) was replaced by budget_forwards (token-forwards, "
            "so that the prompts a hypothesis is verified on do not depend on the machine's "
            "load; docs/verify.md): give budget_forwards instead"
        )
    unknown = sorted(k for k in settings if k not in valid)
    if unknown:
        raise WildcircuitsError(
            f"verify_settings: unknown setting(s) {', '.join(unknown)}; valid settings are "
            f"{', '.join(valid)}"
        )
