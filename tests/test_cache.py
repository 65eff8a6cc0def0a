"""The GGUF conversion cache: build, fast reload, corrupt entries rebuilt, corrupt GGUF files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from wildcircuits.errors import ModelFileError
from wildcircuits.models import cache
from wildcircuits.models.loading import load_pretrained


@pytest.fixture
def tiny_path(tmp_path: Path, write_tiny_gguf) -> Path:
    path = tmp_path / "source" / "tiny.gguf"
    path.parent.mkdir()
    write_tiny_gguf(path)
    return path


@pytest.fixture
def count_builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every call of `cache.build_entry` (which still runs for real)."""
    calls: list[Path] = []
    real_build = cache.build_entry

    def spy(gguf_path: Path, sha256: str, folder: Path) -> None:
        calls.append(folder)
        real_build(gguf_path, sha256, folder)

    monkeypatch.setattr(cache, "build_entry", spy)
    return calls


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WILDCIRCUITS_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_root() == tmp_path / "home" / ".cache" / "wildcircuits"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "wildcircuits"
    monkeypatch.setenv("WILDCIRCUITS_CACHE", str(tmp_path / "mine"))
    assert cache.cache_root() == tmp_path / "mine"


def test_first_load_builds_complete_entry(
    tmp_cache: Path, tiny_path: Path, write_tiny_gguf
) -> None:
    tensors = write_tiny_gguf(tiny_path)
    model, tokenizer, info = load_pretrained(tiny_path)

    sha = cache.file_sha256(tiny_path)
    folder = cache.entry_folder(tiny_path, sha, tmp_cache)
    assert cache.check_entry(folder, sha) is None
    record = json.loads((folder / cache.RECORD_NAME).read_text())
    assert record["source_sha256"] == sha
    assert record["source_size"] == tiny_path.stat().st_size
    assert record["source_path"] == str(tiny_path.resolve())
    assert record["gguf_file_type"] == "ALL_F32"
    assert "transformers_version" in record
    assert (folder / cache.MARKER_NAME).is_file()
    assert not list(folder.parent.glob(".tmp-*")), "temporary build folder left behind"
    assert (info.source, info.sha256, info.family) == ("gguf", sha, "llama")
    assert info.quantization == "GGUF ALL_F32 dequantized to float32"
    # The loaded weights are the ones written into the GGUF file.
    embedding = torch.from_numpy(tensors["token_embd.weight"])
    torch.testing.assert_close(model.get_input_embeddings().weight, embedding)
    torch.testing.assert_close(
        model.model.layers[1].mlp.down_proj.weight,
        torch.from_numpy(tensors["blk.1.ffn_down.weight"]),
    )
    assert tokenizer.decode(tokenizer("the cat")["input_ids"]) == "the cat"


def test_reload_uses_cache(tmp_cache: Path, tiny_path: Path, count_builds: list[Path]) -> None:
    first, _, _ = load_pretrained(tiny_path)
    assert len(count_builds) == 1
    started = time.perf_counter()
    second, _, _ = load_pretrained(tiny_path)
    elapsed = time.perf_counter() - started
    assert len(count_builds) == 1, "a valid entry was rebuilt"
    assert elapsed < 2.0
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def _delete_marker(folder: Path) -> None:
    (folder / cache.MARKER_NAME).unlink()


def _truncate_safetensors(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _garble_safetensors_keeping_size(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[:16] = b"\xff" * 16  # header length now absurd; size unchanged
    path.write_bytes(bytes(data))


def _change_recorded_sha(folder: Path) -> None:
    record_path = folder / cache.RECORD_NAME
    record = json.loads(record_path.read_text())
    record["source_sha256"] = "0" * 64
    record_path.write_text(json.dumps(record))


def _overwrite_weights_in_the_middle(folder: Path) -> None:
    """Same size, valid header, only tensor bytes changed (e.g. to NaN): what a size check and a
    header check both miss."""
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


def _drop_recorded_checksums(folder: Path) -> None:
    """An entry from before checksums were recorded."""
    record_path = folder / cache.RECORD_NAME
    record = json.loads(record_path.read_text())
    del record["crc32"]
    record_path.write_text(json.dumps(record))


def _delete_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").unlink()


def _garble_record(folder: Path) -> None:
    (folder / cache.RECORD_NAME).write_text("{not json")


CORRUPTIONS = [
    _delete_marker,
    _truncate_safetensors,
    _garble_safetensors_keeping_size,
    _overwrite_weights_in_the_middle,
    _drop_recorded_checksums,
    _change_recorded_sha,
    _delete_tokenizer,
    _garble_record,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_corrupt_entry_is_detected_and_rebuilt(
    tmp_cache: Path, tiny_path: Path, count_builds: list[Path], corrupt
) -> None:
    reference, _, _ = load_pretrained(tiny_path)
    sha = cache.file_sha256(tiny_path)
    folder = cache.entry_folder(tiny_path, sha, tmp_cache)
    corrupt(folder)

    assert cache.check_entry(folder, sha) is not None
    model, tokenizer, _ = load_pretrained(tiny_path)

    assert len(count_builds) == 2, "the corrupt entry was not rebuilt"
    assert cache.check_entry(folder, sha) is None
    torch.testing.assert_close(
        model.get_input_embeddings().weight, reference.get_input_embeddings().weight
    )
    assert tokenizer("the")["input_ids"] == [84, 72, 69]


def test_leftover_temporary_folder_is_ignored(
    tmp_cache: Path, tiny_path: Path, count_builds: list[Path]
) -> None:
    sha = cache.file_sha256(tiny_path)
    folder = cache.entry_folder(tiny_path, sha, tmp_cache)
    stale = folder.with_name(f".tmp-{folder.name}-crashed")
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    load_pretrained(tiny_path)
    assert len(count_builds) == 1
    assert cache.check_entry(folder, sha) is None
    assert not stale.exists(), "the leftover of an interrupted build was not cleaned up"


def test_changed_source_gets_its_own_entry(
    tmp_cache: Path, tiny_path: Path, write_tiny_gguf, count_builds: list[Path]
) -> None:
    first, _, first_info = load_pretrained(tiny_path)
    write_tiny_gguf(tiny_path, seed=1)
    second, _, second_info = load_pretrained(tiny_path)
    assert len(count_builds) == 2
    assert first_info.sha256 != second_info.sha256
    assert not torch.equal(
        first.get_input_embeddings().weight, second.get_input_embeddings().weight
    )


def test_garbage_gguf_raises_model_file_error(tmp_cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "garbage.gguf"
    path.write_bytes(b"this is not a model" * 100)
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        load_pretrained(path)
    assert not tmp_cache.exists() or not any((tmp_cache / "gguf").glob("*"))


def test_truncated_gguf_raises_model_file_error(tmp_cache: Path, tiny_path: Path) -> None:
    data = tiny_path.read_bytes()
    tiny_path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError, match="could not convert GGUF file"):
        load_pretrained(tiny_path)
    leftovers = [path for path in (tmp_cache / "gguf").iterdir() if not path.name.endswith(".lock")]
    assert leftovers == [], "a failed conversion left files in the cache"


def test_check_safetensors_accepts_valid_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"a": torch.zeros(3, 4), "b": torch.ones(5)}, str(path))
    assert cache.check_safetensors(path) is None
    path.write_bytes(path.read_bytes() + b"\x00")
    assert "expected" in cache.check_safetensors(path)
