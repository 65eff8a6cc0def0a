"""Errors raised by wildcircuits. Every message names the problem and the fix."""

from __future__ import annotations


class WildcircuitsError(Exception):
    """Base class of every error wildcircuits raises on purpose."""


class InputError(WildcircuitsError):
    """A user-given value (argument, setting, device, size, path) that is not valid; checked
    before any work starts (`wildcircuits.inputs`)."""


class ModelNotFoundError(WildcircuitsError):
    """An unknown built-in id, or a hub id / path that cannot be found or reached."""


class ModelNotInstalledError(WildcircuitsError):
    """A built-in model whose PyPI package is not installed."""


class ModelFileError(WildcircuitsError):
    """A model file (GGUF, cache entry) that is corrupt or unreadable."""


class UnsupportedArchitectureError(WildcircuitsError):
    """A model whose architecture family has no adapter."""


class SiteError(WildcircuitsError):
    """A site that does not exist: bad name, layer, head or position out of range."""


class GraphError(WildcircuitsError):
    """An unknown node / edge name, or a graph that does not match the model."""


class NotScoresFileError(GraphError):
    """A readable `.pt` file that holds something other than wildcircuits edge scores (e.g. a
    MIB-style PT circuit): `wildcircuits evaluate` then reads it as a circuit instead."""


class UnknownNameError(GraphError, SiteError):
    """A head / node / receiver / edge name that is malformed, unknown or out of range."""


class InterventionError(WildcircuitsError):
    """An intervention that cannot be applied (wrong shape, bad mode)."""


class TaskError(WildcircuitsError):
    """An unknown task, or a dataset that cannot be built (e.g. empty after filtering)."""


class TaskFileError(TaskError):
    """A malformed user task file (YAML or JSONL)."""


class MetricError(WildcircuitsError):
    """A metric that cannot be computed on the given inputs."""


class ChoiceError(InputError, ValueError):
    """A value that is not one of a fixed set of choices (also a `ValueError`, as the enum
    conversion it replaces raised)."""
