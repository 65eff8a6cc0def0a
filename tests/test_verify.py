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
