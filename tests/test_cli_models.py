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


def _buggy(args) -> int:
    return {}["missing"]  # a KeyError: a bug, not bad input


def test_unexpected_exception_is_one_line_and_a_trace_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    monkeypatch.setattr(cli_models, "run", _buggy)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert cli_main.main(["models"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "internal error (a bug in wildcircuits): KeyError: 'missing'" in err
    trace = next(tmp_path.glob("wildcircuits-error-*.txt"))
    assert str(trace) in err and "--debug" in err
    text = trace.read_text()
    assert "Traceback" in text and "_buggy" in text and "KeyError" in text


def test_unexpected_exception_trace_goes_to_the_output_folder(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    import argparse

    monkeypatch.setattr(cli_models, "run", _buggy)
    real_parse = argparse.ArgumentParser.parse_args

    def with_out(self, argv=None, namespace=None):  # as if the command had --out
        args = real_parse(self, argv, namespace)
        args.out = str(tmp_path)
        return args

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", with_out)
    assert cli_main.main(["models"]) == 1
    assert (tmp_path / "wildcircuits-error.txt").is_file()
    assert str(tmp_path / "wildcircuits-error.txt") in capsys.readouterr().err


def test_debug_prints_the_traceback_inline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_models, "run", _buggy)
    assert cli_main.main(["--debug", "models"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "_buggy" in err
    assert err.strip().splitlines()[-1].startswith("error: internal error")


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
