"""Discovery methods by name: one signature, `method(model, problem, config) -> EdgeScores`.

Each method module registers itself with `register(name, config_type, description)`; its config
is a frozen dataclass whose fields are the method's settings (a method that ablates derives it
from `discovery.common.AblatingConfig`, which names the ablations it supports). `get_method(name)`
imports the built-in method modules on first use; a built-in module that is missing or fails to
import raises, naming the module and the import error (a broken method is never silently absent).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wildcircuits.errors import WildcircuitsError

BUILTIN_MODULES = (
    "eap",
    "eap_ig",
    "eap_ig_activations",
    "random_scores",
    "node_attribution",
    "acdc",
)


class DiscoveryError(WildcircuitsError):
    """An unknown discovery method, a bad setting, or a problem a method cannot score."""


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its function, its config type and a one-line description."""

    name: str
    function: Callable[..., Any]
    config_type: type
    description: str = ""

    @property
    def ablations(self) -> tuple[Any, ...]:
        """The ablation kinds the method supports (none: it ablates nothing, e.g. random)."""
        return tuple(getattr(self.config_type, "ABLATIONS", ()))

    def config(self, settings: Mapping[str, Any] | None = None) -> Any:
        """The method's config with `settings` (field name -> value) over the defaults, each
        value converted to and checked against its field's type (`inputs.parse_settings`)."""
        from wildcircuits.inputs import parse_settings

        if settings is not None and not isinstance(settings, Mapping):
            return parse_settings(self.config_type, settings, f"method {self.name!r} settings")
        settings = dict(settings or {})
        fields = {f.name for f in dataclasses.fields(self.config_type)}
        if "ablation" in settings and "ablation" not in fields:
            raise DiscoveryError(
                f"method {self.name!r} runs no ablation, so it takes no ablation setting "
                f"(got {settings['ablation']!r}); its ablations: none"
            )
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise DiscoveryError(
                f"method {self.name!r} has no setting(s) {unknown}; its settings are "
                f"{sorted(fields)}"
            )
        return parse_settings(self.config_type, settings, f"method {self.name!r} setting")

    def __call__(self, model, problem, config=None):
        return self.function(model, problem, self.config() if config is None else config)


METHODS: dict[str, MethodSpec] = {}


def register(name: str, config_type: type, description: str = "") -> Callable:
    """Decorator: register `function(model, problem, config) -> EdgeScores` under `name`."""
    if not (dataclasses.is_dataclass(config_type) and config_type.__dataclass_params__.frozen):
        raise DiscoveryError(f"method {name!r}: the config type must be a frozen dataclass")

    def decorate(function: Callable) -> Callable:
        existing = METHODS.get(name)
        if existing is not None and existing.function is not function:
            same = existing.function.__qualname__ == function.__qualname__
            if not (same and existing.function.__module__ == function.__module__):
                raise DiscoveryError(f"discovery method {name!r} is already registered")
        METHODS[name] = MethodSpec(name, function, config_type, description)
        return function

    return decorate


def load_builtin_methods() -> None:
    """Import every built-in method module (each registers its methods); one that fails raises
    a `DiscoveryError` naming the module and the import error."""
    for module in BUILTIN_MODULES:
        full = f"wildcircuits.discovery.{module}"
        try:
            importlib.import_module(full)
        except Exception as error:
            raise DiscoveryError(
                f"discovery method module {full} failed to import: {type(error).__name__}: {error}"
            ) from error


def get_method(name: str) -> MethodSpec:
    """The registered method `name`; an unknown name raises, listing the known ones."""
    load_builtin_methods()
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(sorted(METHODS)) or "(none)"
        raise DiscoveryError(f"unknown discovery method {name!r}; known methods: {known}") from None


def method_names() -> list[str]:
    load_builtin_methods()
    return sorted(METHODS)
