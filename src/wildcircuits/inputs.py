"""The input boundary: checks of user-given values made before any model work starts.

Every check raises an `InputError` whose one-line message names the input, the bad value, what
is valid and how to fix it. The CLI prints it as `error: ...` (exit 2); the Python API raises it.
"""

from __future__ import annotations

from typing import Any

from wildcircuits.errors import InputError

#: Device types torch names that cannot hold a model's numbers here.
_NO_DATA_DEVICES = {"meta": "meta tensors hold shapes, not numbers"}


def available_devices() -> list[str]:
    """The devices a model can be put on in this process (`cpu` always)."""
    import torch

    found = ["cpu"]
    found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def check_device(device: Any, what: str = "--device") -> Any:
    """`device` as a `torch.device` that exists here, else an `InputError` naming what does."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(
            f"{what} {device!r} is not a torch device; use one of {_choices()}"
        ) from None
    if parsed.type in _NO_DATA_DEVICES:
        raise InputError(
            f"{what} {device!r}: {_NO_DATA_DEVICES[parsed.type]}; use one of {_choices()}"
        )
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        return _check_cuda(parsed, device, what)
    backend = getattr(torch, parsed.type, None) or getattr(torch.backends, parsed.type, None)
    is_available = getattr(backend, "is_available", None)
    if is_available is None or not is_available():
        raise InputError(
            f"{what} {device!r} is not available in this torch build or on this machine; "
            f"use one of {_choices()}"
        )
    return parsed


def _check_cuda(parsed: Any, device: Any, what: str) -> Any:
    import torch

    if not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise InputError(
            f"{what} {device!r}: CUDA is not available ({why}); use one of {_choices()}, or "
            "install a CUDA build of torch on a machine with an NVIDIA GPU"
        )
    count = torch.cuda.device_count()
    if parsed.index is not None and parsed.index >= count:
        raise InputError(
            f"{what} {device!r}: this machine has {count} CUDA device(s); use one of {_choices()}"
        )
    return parsed


def _choices() -> str:
    return ", ".join(available_devices())


# sizes, seeds, indices --------------------------------------------------------------------------
#: The largest `--n` / `n=` accepted: more examples than this is almost surely a typo.
MAX_EXAMPLES = 100_000
#: Seeds go to torch, numpy and random: 0 .. 2**32 - 1 suits all three.
MAX_SEED = 2**32 - 1


def check_int(
    what: str, value: Any, minimum: int | None = None, maximum: int | None = None, fix: str = ""
) -> int:
    """`value` as an int in [minimum, maximum], else an `InputError` naming `what` and the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{what} must be a whole number, got {value!r}{_fix(fix)}")
    low = minimum is not None and value < minimum
    if low or (maximum is not None and value > maximum):
        raise InputError(f"{what} {value!r} is out of range; {_range(minimum, maximum)}{_fix(fix)}")
    return value


def check_size(what: str, value: Any, maximum: int | None = None, fix: str = "") -> int:
    """A count or size: a whole number >= 1 (and <= maximum)."""
    return check_int(what, value, 1, maximum, fix)


def check_n(what: str, value: Any) -> int:
    """A number of examples: 1 .. MAX_EXAMPLES."""
    return check_size(what, value, MAX_EXAMPLES, "ask for fewer examples")


def check_seed(what: str, value: Any) -> int:
    """A random seed: 0 .. MAX_SEED."""
    return check_int(what, value, 0, MAX_SEED)


def check_index(what: str, value: Any, length: int, of: str) -> int:
    """An index into `length` items (`of` says what they are); negative counts from the end."""
    index = check_int(what, value)
    if not -length <= index < length:
        raise InputError(
            f"{what} {index} is out of range: there are {length} {of}; "
            f"{_range(-length, length - 1)}"
        )
    return index


def check_position(what: str, position: Any, seq_len: int) -> int | None:
    """A token position in a batch of `seq_len` (None: every position)."""
    if position is None:
        return None
    return check_index(what, position, seq_len, "token positions in the prompts")


def check_layers(what: str, layers: Any, n_layers: int) -> list[int]:
    """Layer numbers 0 .. n_layers - 1."""
    if isinstance(layers, str | bytes) or not hasattr(layers, "__iter__"):
        raise InputError(f"{what} must be a list of layer numbers, got {layers!r}")
    fix = f"the model has {n_layers} layers"
    return [check_int(what, layer, 0, n_layers - 1, fix) for layer in layers]


def check_choice(what: str, value: Any, choices: Any) -> Any:
    """`value` as a member of the enum `choices` (by value), else an `InputError` listing them."""
    try:
        return choices(value)
    except (ValueError, TypeError):
        from wildcircuits.errors import ChoiceError

        names = [member.value for member in choices]
        raise ChoiceError(f"{what} {value!r} is not one of {names}") from None


def _range(minimum: int | None, maximum: int | None) -> str:
    if maximum is None:
        return f"use a whole number >= {minimum}"
    if minimum is None:
        return f"use a whole number <= {maximum}"
    return f"use a whole number from {minimum} to {maximum}"


def _fix(fix: str) -> str:
    return f" ({fix})" if fix else ""


# sites and heads against a model ----------------------------------------------------------------
def check_sites(model: Any, sites: Any, seq_len: int, what: str = "site") -> list[Any]:
    """`sites` (Site or site strings) parsed and checked against `model`'s layers and heads and a
    batch of `seq_len` positions; a bad one raises a `SiteError` naming it and the valid range."""
    from wildcircuits.errors import SiteError
    from wildcircuits.patching.hooks import check_site
    from wildcircuits.patching.sites import parse_site

    checked = []
    for site in sites:
        parsed = parse_site(site) if isinstance(site, str) else site
        try:
            check_site(parsed, model.n_layers, model.n_heads, model.n_kv_heads, seq_len)
        except SiteError as error:
            raise SiteError(f"{what} {error}") from None
        checked.append(parsed)
    return checked


def check_heads(what: str, names: Any, model: Any) -> list[tuple[int, int]]:
    """Head names ('L12.H3,L14.H0' or a list) as (layer, head) pairs that exist in `model`."""
    from wildcircuits.errors import WildcircuitsError
    from wildcircuits.names import Shape, parse_head, split_names

    shape = Shape(model.n_layers, model.n_heads)
    listed = split_names(names) if isinstance(names, str) else list(names)
    pairs = []
    for name in listed:
        try:
            head = parse_head(str(name), shape)
        except WildcircuitsError as error:
            raise type(error)(f"{what} {name!r}: {error}") from None
        pairs.append((head.layer, head.head))
    return pairs


# output folders ---------------------------------------------------------------------------------
def check_out_folder(path: Any, what: str = "--out") -> Any:
    """Create the output folder `path` and test-write a file in it; return it as a `Path`.

    An existing file, a path under a file or a place that cannot be written raises an
    `InputError` naming the path and the reason, before any work starts."""
    import os
    import tempfile
    from pathlib import Path

    if not isinstance(path, str | os.PathLike) or str(path) == "":
        raise InputError(f"{what} must be a folder path, got {path!r}")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {str(folder)!r} is an existing file, not a folder; give a folder")
    for parent in folder.parents:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"{what} {str(folder)!r}: {str(parent)!r} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".wildcircuits-write-test-")
        os.close(fd)
        os.unlink(name)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(
            f"{what} {str(folder)!r} cannot be written ({reason}); give a folder you can write to"
        ) from None
    return folder


# settings against a dataclass's field types -----------------------------------------------------
#: Int settings that are sizes (>= 1) wherever a config has them; seeds are >= 0.
SIZE_SETTINGS = frozenset({"steps", "batch_size", "max_rows", "candidates", "prefilter_top"})


def parse_settings(config_type: type, settings: Any, what: str = "settings") -> Any:
    """`config_type(**settings)` with each value converted to and checked against its field's
    type hint (int, float, bool, str, enums, Literal, Optional, tuple[...]); a value of another
    type, an unknown key or a mapping that is not one raises an `InputError` naming the key."""
    import dataclasses
    from collections.abc import Mapping

    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise InputError(
            f"{what} must be a JSON object of name: value pairs, got {type(settings).__name__} "
            f"{_short(settings)}; e.g. '{{\"steps\": 5}}'"
        )
    fields = {f.name: f for f in dataclasses.fields(config_type) if f.init}
    unknown = sorted(str(key) for key in settings if key not in fields)
    if unknown:
        raise InputError(f"{what}: unknown setting(s) {unknown}; the settings are {sorted(fields)}")
    hints = _hints(config_type)
    values = {}
    for key, value in settings.items():
        label = f"{what} {key!r}"
        values[key] = _convert(label, value, hints.get(key, Any))
        if key in SIZE_SETTINGS and isinstance(values[key], int):
            check_size(label, values[key])
        if key == "seed" and isinstance(values[key], int):
            check_seed(label, values[key])
    try:
        return config_type(**values)
    except (TypeError, ValueError) as error:
        raise InputError(f"{what} {_short(dict(settings))}: {error}") from None


def _hints(config_type: type) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(config_type)
    except Exception:  # an unresolvable annotation: check nothing rather than fail
        return {}


def _convert(label: str, value: Any, hint: Any) -> Any:
    """`value` as `hint`'s type; types this does not know pass through unchecked."""
    import enum
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        return _convert_union(label, value, args)
    if origin is typing.Literal:
        if value not in args:
            raise InputError(f"{label} {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        return _convert_tuple(label, value, args)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            choices = [member.value for member in hint]
            raise InputError(f"{label} {value!r} is not one of {choices}") from None
    scalar = _SCALARS.get(hint)
    return value if scalar is None else scalar(label, value)


def _convert_union(label: str, value: Any, args: tuple) -> Any:
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    errors = []
    for option in options:
        try:
            return _convert(label, value, option)
        except InputError as error:
            errors.append(str(error))
    if not errors:
        raise InputError(f"{label} must be null, got {value!r}")
    raise InputError(errors[0] + (" or null" if type(None) in args else ""))


def _convert_tuple(label: str, value: Any, args: tuple) -> tuple:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise InputError(f"{label} must be a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(f"{label}[{i}]", v, args[0]) for i, v in enumerate(value))
    if args and len(args) != len(value):
        raise InputError(f"{label} must have {len(args)} items, got {len(value)}: {value!r}")
    hints = args or (Any,) * len(value)
    return tuple(
        _convert(f"{label}[{i}]", v, h) for i, (v, h) in enumerate(zip(value, hints, strict=True))
    )


def _as_int(label: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{label} must be a whole number, got {value!r}")
    return value


def _as_float(label: str, value: Any) -> float:
    import math

    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"{label} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{label} must be a finite number, got {value!r}")
    return float(value)


def _as_bool(label: str, value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise InputError(f"{label} must be true or false, got {value!r}")
    return value


def _as_str(label: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InputError(f"{label} must be a string, got {value!r}")
    return value


_SCALARS = {int: _as_int, float: _as_float, bool: _as_bool, str: _as_str}


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
