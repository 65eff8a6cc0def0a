"""`verify_model` and the `verify-model` CLI on tiny models."""

from __future__ import annotations

import json

import pytest

from tests.tiny_models import FAMILIES, CharTokenizer, tiny_model
from wildcircuits.models.verify import verify_model


@pytest.mark.parametrize("family", FAMILIES)
def test_verify_model_passes_on_every_family(family):
    model = tiny_model(family)
    model.tokenizer = CharTokenizer()
    report = verify_model(model)
    data = report.to_dict()
    assert data["passed"], data["checks"]
    assert {c["name"] for c in data["checks"]} >= {
        "logits_equal_hf_eager",
        "clean_into_clean_changes_nothing",
        "later_tokens_never_change_earlier_positions",
    }
    json.dumps(data)


def test_verify_model_fails_when_the_instrumentation_is_wrong(monkeypatch):
    model = tiny_model("llama")
    model.tokenizer = CharTokenizer()
    for block in model.blocks:
        original = block.feed_forward
        monkeypatch.setattr(block, "feed_forward", lambda mlp_in, f=original: f(mlp_in) * 1.01)
    report = verify_model(model)
    parity = next(c for c in report.checks if c.name == "logits_equal_hf_eager")
    assert not parity.passed and not report.passed


def test_verify_model_cli_prints_json_and_exits_zero(tmp_path, tmp_cache, write_tiny_gguf, capsys):
    from wildcircuits.cli.main import main

    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    status = main(["verify-model", str(path), "--prompt", "hello world", "--prompt", "a b"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["passed"]
    assert report["max_abs_logit_diff"] <= 1e-5
    assert report["model"]["source"] == "gguf"


def test_unsupported_family_names_itself_and_the_supported_ones():
    import transformers as hf

    from wildcircuits.errors import UnsupportedArchitectureError
    from wildcircuits.models import wrap_hf_model

    config = hf.BertConfig(
        num_hidden_layers=1,
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=16,
        vocab_size=50,
    )
    with pytest.raises(UnsupportedArchitectureError, match="'bert' is not supported.*llama"):
        wrap_hf_model(hf.BertLMHeadModel(config))


def test_verify_model_on_a_folder_without_tokenizer_uses_synthetic_ids(tmp_path, capsys):
    """A local folder holding only config + weights: the checks run on ids they make."""
    from wildcircuits.cli.main import main

    folder = tmp_path / "weights-only"
    tiny_model("llama").hf_model.save_pretrained(folder)
    assert not any(p.name.startswith("tokenizer") for p in folder.iterdir())
    status = main(["verify-model", str(folder)])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["passed"], report["checks"]
    assert report["inputs"] == "synthetic token ids (no tokenizer)"
    assert report["max_abs_logit_diff"] <= 1e-5


def test_verify_model_without_tokenizer_refuses_prompts_in_one_line(tmp_path, capsys):
    from wildcircuits.cli.main import main

    folder = tmp_path / "weights-only"
    tiny_model("llama").hf_model.save_pretrained(folder)
    capsys.readouterr()  # drop save_pretrained's progress bar
    status = main(["verify-model", str(folder), "--prompt", "hello"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1
    assert "has no tokenizer" in err and "tokenizer.save_pretrained" in err


def test_synthetic_tokens_pad_both_sides():
    from wildcircuits.models.verify import synthetic_tokens

    tokens = synthetic_tokens(50)
    assert tokens.attention_mask[0].all()
    assert tokens.attention_mask[1, -1] == 0 and tokens.attention_mask[2, 0] == 0
    assert int(tokens.input_ids.max()) < 50
