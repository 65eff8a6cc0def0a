"""Discovery methods by name: one signature, `method(model, problem, config) -> EdgeScores`.

Each method module registers itself with `register(name, config_type, description)`; its config
is a frozen dataclass whose fields are the method's settings. `get_method(name)` imports the
built-in method modules on first use (a module that is not present, such as a not-yet-written
`acdc.py`, is skipped), so `wildcircuits.discovery.acdc` can register "acdc" without editing
this file.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
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

    def config(self, settings: Mapping[str, Any] | None = None) -> Any:
        """The method's config with `settings` (field name -> value) over the defaults."""
        settings = dict(settings or {})
        fields = {f.name for f in dataclasses.fields(self.config_type)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise DiscoveryError(
                f"method {self.name!r} has no setting(s) {unknown}; its settings are "
                f"{sorted(fields)}"
            )
        return self.config_type(**settings)

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
    """Import every built-in method module that exists (each registers its methods)."""
    for module in BUILTIN_MODULES:
        full = f"wildcircuits.discovery.{module}"
        if importlib.util.find_spec(full) is not None:
            importlib.import_module(full)


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
