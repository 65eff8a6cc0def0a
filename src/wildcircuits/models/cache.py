"""Cache of GGUF models converted to safetensors.

The first load of a GGUF file dequantizes it with transformers (slow: 15-45 s) and saves the result
as a Hugging Face model folder (safetensors weights + tokenizer) with a JSON record of where it came
from. Later loads read that folder (about a second).

Layout, under `cache_root()`:
    gguf/<file stem>-<sha256[:16]>/   one converted model: config.json, model.safetensors,
                                      tokenizer files, record.json, then COMPLETE (written last)
    gguf/<same>.lock                  serializes conversions of one file across processes
    sources/                          GGUF files assembled from chunk packages (Gemma3)

An entry is built in a temporary sibling folder and renamed into place, so a crash leaves either no
entry or a complete one. Every load re-checks the entry (marker, record, source sha256, file sizes,
safetensors headers, and each file's CRC-32 against the one recorded at conversion) and rebuilds it
when anything is off, instead of loading it. The CRC catches bytes changed in place at the same
size (which a size check cannot); it costs ~0.17 s for SmolLM2's 538 MB and ~0.36 s for Gemma3's
1.07 GB on this 2-core CPU (sha256 would cost 0.43 s / 1.08 s), once per process and file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wildcircuits.errors import ModelFileError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FORMAT_VERSION = 2  # 2: the record holds a CRC-32 of every file
RECORD_NAME = "record.json"
MARKER_NAME = "COMPLETE"
GGUF_MAGIC = b"GGUF"

logger = logging.getLogger(__name__)

_HASH_MEMO: dict[tuple[str, int, int, int], str] = {}
_CRC_MEMO: dict[tuple[str, int, int, int], int] = {}


@dataclass(frozen=True)
class CacheEntry:
    """A checked, complete cache entry for one GGUF file."""

    folder: Path
    source_sha256: str
    gguf_file_type: str | None  # e.g. "Q4_1", read from the GGUF metadata at conversion time


def cache_root() -> Path:
    """The cache folder: `$WILDCIRCUITS_CACHE`, else `$XDG_CACHE_HOME/wildcircuits`, else
    `~/.cache/wildcircuits`."""
    override = os.environ.get("WILDCIRCUITS_CACHE")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "wildcircuits"


def file_sha256(path: Path) -> str:
    """The sha256 of a file, remembered in-process while its size and mtime stay the same."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _HASH_MEMO:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(4 * 1024 * 1024):
                digest.update(block)
        _HASH_MEMO[key] = digest.hexdigest()
    return _HASH_MEMO[key]


def file_crc32(path: Path) -> int:
    """The CRC-32 of a file, remembered in-process while its size, mtime and inode stay the same."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _CRC_MEMO:
        crc = 0
        with path.open("rb") as handle:
            while block := handle.read(8 * 1024 * 1024):
                crc = zlib.crc32(block, crc)
        _CRC_MEMO[key] = crc
    return _CRC_MEMO[key]


def entry_folder(gguf_path: Path, sha256: str, root: Path | None = None) -> Path:
    """Where the converted copy of `gguf_path` (with content hash `sha256`) lives."""
    root = cache_root() if root is None else root
    return root / "gguf" / f"{gguf_path.stem}-{sha256[:16]}"


def ensure_converted(gguf_path: Path, root: Path | None = None) -> CacheEntry:
    """Return a complete, checked cache entry for `gguf_path`, converting it if needed.

    Raises `ModelFileError` when the file is not a readable GGUF model.
    """
    gguf_path = Path(gguf_path)
    check_gguf_header(gguf_path)
    sha256 = file_sha256(gguf_path)
    folder = entry_folder(gguf_path, sha256, root)
    problem = check_entry(folder, sha256)
    if problem is None:
        return _entry_from_folder(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(folder.with_name(folder.name + ".lock")):
        # Another process may have built it while we waited for the lock.
        problem = check_entry(folder, sha256)
        if problem is not None:
            if folder.exists():
                logger.warning("rebuilding cache entry %s: %s", folder, problem)
            build_entry(gguf_path, sha256, folder)
    return _entry_from_folder(folder)


def invalidate(folder: Path) -> None:
    """Remove a cache entry (e.g. one that passed the checks but failed to load)."""
    _remove_tree(folder)


def check_gguf_header(path: Path) -> None:
    """Raise `ModelFileError` unless `path` is a file that starts like a GGUF file."""
    if not path.is_file():
        raise ModelFileError(f"GGUF file {path} does not exist")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r}); "
            "the file is corrupt or in another format"
        )


def check_entry(folder: Path, source_sha256: str) -> str | None:
    """Return why the entry in `folder` cannot be used, or None when it is complete and intact."""
    if not folder.is_dir():
        return "no entry"
    if not (folder / MARKER_NAME).is_file():
        return f"completion marker {MARKER_NAME} is missing (half-written entry)"
    record = read_record(folder)
    if isinstance(record, str):
        return record
    if record.get("format_version") != FORMAT_VERSION:
        return f"format version {record.get('format_version')!r} is not {FORMAT_VERSION}"
    if record.get("source_sha256") != source_sha256:
        return "recorded source sha256 does not match the GGUF file"
    files, crcs = record.get("files"), record.get("crc32")
    if not isinstance(files, dict) or "config.json" not in files:
        return "record lists no files"
    if not isinstance(crcs, dict) or set(crcs) != set(files):
        return "record has no checksum for every file"
    for name, size in files.items():
        if not _plain_name(name) or not _is_int(size) or not _is_int(crcs[name]):
            return f"record entry {name!r} is malformed (expected a file name, size and CRC)"
    for name, size in files.items():
        problem = _check_file(folder / name, size, crcs[name])
        if problem is not None:
            return f"file {name}: {problem}"
    return None


def read_record(folder: Path) -> dict[str, Any] | str:
    """An entry's record.json as a dict, or why it cannot be read (never raises)."""
    try:
        record = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        return f"record {RECORD_NAME} is unreadable: {error}"
    if not isinstance(record, dict):
        return f"record {RECORD_NAME} is not a JSON object"
    return record


def _plain_name(name: Any) -> bool:
    """A file name inside the entry folder (never a path that leaves it)."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and ("\\" not in name and "\x00" not in name)
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_file(path: Path, size: int, crc: int) -> str | None:
    if not path.is_file():
        return "missing"
    if path.stat().st_size != size:
        return f"has {path.stat().st_size} bytes, recorded {size}"
    if path.name.endswith(".safetensors"):
        problem = check_safetensors(path)
        if problem is not None:
            return problem
    if file_crc32(path) != crc:
        return "its bytes changed since conversion (CRC-32 differs from the record)"
    return None


def check_safetensors(path: Path) -> str | None:
    """Return why a safetensors file is unreadable (bad header, truncated data), or None."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            if header_size > size - 8:
                return "header is longer than the file"
            header = json.loads(handle.read(header_size))
        if not isinstance(header, dict):
            return "header is not a JSON object"
        ends = [
            tensor["data_offsets"][1] for name, tensor in header.items() if name != "__metadata__"
        ]
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as error:
        return f"header is unreadable ({error})"
    except RecursionError:
        return "header is unreadable (nested too deeply)"
    if not all(_is_int(end) for end in ends):
        return "header gives a data offset that is not a whole number"
    expected = 8 + header_size + max(ends, default=0)
    if expected != size:
        return f"expected {expected} bytes from its header, found {size}"
    return None


def build_entry(gguf_path: Path, sha256: str, folder: Path) -> None:
    """Convert `gguf_path` and atomically put the result at `folder` (replacing what is there)."""
    started = time.perf_counter()
    logger.warning("converting %s (first load only; this takes up to a minute)", gguf_path)
    _remove_leftovers(folder)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    os.chmod(temporary, 0o755)  # mkdtemp makes it private; the entry is an ordinary folder
    try:
        record = _convert_into(gguf_path, sha256, temporary)
        (temporary / RECORD_NAME).write_text(json.dumps(record, indent=2))
        _fsync_folder_files(temporary)
        (temporary / MARKER_NAME).write_text(f"{sha256}\n")  # last: marks the entry complete
        _remove_tree(folder)
        os.replace(temporary, folder)
    finally:
        _remove_tree(temporary)
    logger.warning("converted in %.1f s, cached at %s", time.perf_counter() - started, folder)


def _convert_into(gguf_path: Path, sha256: str, target: Path) -> dict[str, Any]:
    """Dequantize the GGUF model and tokenizer into `target`; return the entry's record."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as error:  # transformers and gguf raise many types for a bad file
        raise ModelFileError(
            f"could not convert GGUF file {gguf_path}: {type(error).__name__}: {error}; "
            "the file may be corrupt, truncated, or of an architecture transformers cannot read"
        ) from error
    # The converted weights are plain float tensors: forget the GGUF quantizer, or saving and
    # reloading would try to de-quantize them again.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return {
        "format_version": FORMAT_VERSION,
        "source_path": str(gguf_path.resolve()),
        "source_sha256": sha256,
        "source_size": gguf_path.stat().st_size,
        "gguf_file_type": read_gguf_file_type(gguf_path),
        "transformers_version": transformers.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": {path.name: path.stat().st_size for path in sorted(target.iterdir())},
        "crc32": {path.name: file_crc32(path) for path in sorted(target.iterdir())},
    }


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved in a cache entry straight from its tokenizer.json.

    Equivalent to `AutoTokenizer.from_pretrained(folder)` for our own entries (tested), but about
    3x faster for Gemma3's 262k-token vocabulary, which keeps cached loads under 2 s.
    """
    from transformers import PreTrainedTokenizerFast

    settings = _tokenizer_settings(folder / "tokenizer_config.json")
    special = {
        name: settings[name]
        for name in ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token")
        if isinstance(settings.get(name), str)
    }
    # tokenizer_file, not tokenizer_object: the latter deep-copies the backend (~1 s for Gemma3).
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **special)
    template = folder / "chat_template.jinja"
    if template.is_file():
        tokenizer.chat_template = template.read_text()
    return tokenizer


def _tokenizer_settings(path: Path) -> dict[str, Any]:
    """A cache entry's tokenizer_config.json; ModelFileError (one line) when unreadable."""
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        problem = f"unreadable ({type(error).__name__}: {str(error).splitlines()[0][:160]})"
    else:
        if isinstance(settings, dict):
            return settings
        problem = "not a JSON object"
    raise ModelFileError(f"{path}: tokenizer settings {problem}; the cache entry is rebuilt")


def read_gguf_file_type(gguf_path: Path) -> str | None:
    """The quantization named in a GGUF file's `general.file_type` (e.g. "Q4_1"), if present."""
    import gguf

    try:
        field = gguf.GGUFReader(gguf_path).get_field("general.file_type")
        if field is None:
            return None
        value = int(field.parts[field.data[0]][0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        return gguf.LlamaFileType(value).name.removeprefix("MOSTLY_")
    except ValueError:
        return f"file type {value}"


def _entry_from_folder(folder: Path) -> CacheEntry:
    """The entry of a folder that passed `check_entry`; ModelFileError if its record vanished."""
    record = read_record(folder)
    if isinstance(record, str) or not isinstance(record.get("source_sha256"), str):
        problem = record if isinstance(record, str) else "record has no source sha256"
        raise ModelFileError(f"cache entry {folder}: {problem}; delete the folder to rebuild it")
    file_type = record.get("gguf_file_type")
    return CacheEntry(
        folder, record["source_sha256"], file_type if isinstance(file_type, str) else None
    )


def _remove_leftovers(folder: Path) -> None:
    """Delete temporary and trash folders of earlier, interrupted builds of this entry.

    Called with the entry's lock held, so no other process is building into them."""
    for pattern in (f".tmp-{folder.name}-*", f".trash-{folder.name}-*"):
        for leftover in folder.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _fsync_folder_files(folder: Path) -> None:
    for path in folder.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())


def _remove_tree(folder: Path) -> None:
    """Delete `folder` if present, renaming it aside first so no half-deleted entry stays."""
    if not folder.exists():
        return
    doomed = folder.with_name(f".trash-{folder.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (no-op where fcntl is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
