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
