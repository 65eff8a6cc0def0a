"""The input boundary (`wildcircuits.inputs`): bad values raise one-line `InputError`s."""

from __future__ import annotations

import pytest
import torch

from wildcircuits.errors import InputError
from wildcircuits.inputs import available_devices, check_device

NO_CUDA = not torch.cuda.is_available()


def test_cpu_is_always_available():
    assert check_device("cpu") == torch.device("cpu")
    assert "cpu" in available_devices()


# Where CUDA exists, ask for a device index it does not have instead (no case is skipped).
CUDA_CASES = (
    [("cuda", "CUDA is not available"), ("cuda:3", "CUDA is not available")]
    if NO_CUDA
    else [(f"cuda:{torch.cuda.device_count()}", "CUDA device(s)")]
)


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("banana", "is not a torch device"),
        ("", "is not a torch device"),
        ("meta", "hold shapes, not numbers"),
        ("xpu", "is not available"),
        *CUDA_CASES,
    ],
)
def test_bad_devices_name_the_value_and_what_is_available(device, expected):
    with pytest.raises(InputError) as raised:
        check_device(device, "--device")
    message = str(raised.value)
    assert expected in message and repr(device) in message and "\n" not in message
    assert "use one of cpu" in message  # names what is available


def test_load_model_checks_the_device_before_loading(tmp_path):
    from wildcircuits.models import load_model

    with pytest.raises(InputError, match="'banana' is not a torch device"):
        load_model("does-not-matter", device="banana")
