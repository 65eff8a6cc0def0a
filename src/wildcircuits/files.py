"""Reading files from elsewhere: the checks and the wording of their errors, in one place.

`safe_torch_load` reads a `.pt` file with torch's weights-only unpickler: a pickle that would
import anything other than tensors and plain values is refused, never run. Every failure (missing,
a directory, empty, random bytes, truncated, hostile) becomes ONE line naming the file and what is
wrong, never torch's multi-line text (and never its advice to retry with `weights_only=False`).
`read_text_file` and `parse_json` do the same for text and JSON files.

`FileCheck` checks the structure of what was read (keys, types, bounded integers, tensor shapes
and dtypes), so a wrong-shape file fails at once, naming the key and the expected type, instead of
a KeyError or TypeError later. Each loader passes its own error class (GraphError, TaskFileError,
...), all subclasses of WildcircuitsError.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wildcircuits.errors import WildcircuitsError

ZIP_MAGIC = b"PK\x03\x04"
_LIMIT = 240  # characters of a quoted foreign message
_ADVICE = re.compile(r"weights.only|pytorch 2\.6|check the documentation|internal miniz", re.I)
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def one_line(text: object, limit: int = _LIMIT, foreign: bool = True) -> str:
    """`text` on one line (whitespace collapsed), capped at `limit` characters. `foreign` text
    (torch's, yaml's) also loses its sentences of advice, e.g. to retry with weights_only=False."""
    text = str(text)
    if foreign:
        sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
        text = " ".join(s for s in sentences if not _ADVICE.search(s))
    kept = re.sub(r"\s+", " ", text).strip()
    return kept if len(kept) <= limit else kept[: limit - 3] + "..."


@dataclass(frozen=True)
class FileCheck:
    """Checks on one file's content: every failure raises `error` naming `path`.

    `what` names the kind of file ("wildcircuits scores file", "MIB circuit file").
    """

    path: Path
    what: str
    error: type[WildcircuitsError]

    def problem(self, text: str) -> WildcircuitsError:
        """The error to raise: `<path>: <text>`, on one line."""
        return self.error(f"{self.path}: {one_line(text, limit=600, foreign=False)}")

    def regular_file(self) -> int:
        """The file's size; raises when it is missing, a directory or unreadable."""
        try:
            if not self.path.exists():
                raise self.problem(f"no such file (expected {article(self.what)})")
            if self.path.is_dir():
                raise self.problem(f"is a directory, not {article(self.what)}")
            return self.path.stat().st_size
        except OSError as error:
            raise self.problem(f"cannot read it: {error.strerror or error}") from None

    def mapping(self, value: Any, where: str, keys: tuple[str, ...] = ()) -> Mapping[str, Any]:
        """`value` as a mapping holding every key in `keys`."""
        if not isinstance(value, Mapping):
            expected = f"a mapping with keys {', '.join(keys)}" if keys else "a mapping"
            raise self.problem(
                f"not {article(self.what)}: {where} is {kind_of(value)}, expected {expected}"
            )
        missing = [key for key in keys if key not in value]
        if missing:
            raise self.problem(
                f"not {article(self.what)}: {where} lacks {', '.join(repr(k) for k in missing)}"
            )
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.problem(f"{where} is {kind_of(value)}, expected a string")
        return value

    def integer(self, value: Any, where: str, low: int = 0, high: int | None = None) -> int:
        """An int (not a bool) in [low, high]."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.problem(f"{where} is {kind_of(value)}, expected an integer")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise self.problem(f"{where} is {value}, expected an integer {bound}")
        return value

    def number(self, value: Any, where: str) -> float:
        """A finite int or float (not a bool)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.problem(f"{where} is {kind_of(value)}, expected a number")
        if value != value or value in (float("inf"), float("-inf")):
            raise self.problem(f"{where} is {value}, expected a finite number")
        return float(value)

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.problem(f"{where} is {kind_of(value)}, expected true or false")
        return value

    def tensor(self, value: Any, where: str, shape: tuple[int, ...], kind: str) -> torch.Tensor:
        """A tensor of `shape`; kind "float" (any floating dtype) or "bool"."""
        if not isinstance(value, torch.Tensor):
            raise self.problem(f"{where} is {kind_of(value)}, expected a {kind} tensor {shape}")
        ok = value.dtype == torch.bool if kind == "bool" else value.is_floating_point()
        if not ok:
            raise self.problem(f"{where} has dtype {value.dtype}, expected a {kind} tensor")
        if tuple(value.shape) != tuple(shape):
            raise self.problem(
                f"{where} has shape {tuple(value.shape)}, expected {tuple(shape)} for this graph"
            )
        return value


def kind_of(value: Any) -> str:
    """How a value's type reads in a message: 'a list', 'a str ('abc')', 'an int (3)'."""
    name = article(type(value).__name__)
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return f"{name} ({one_line(repr(value), 40)})"
    return "null" if value is None else name


def article(noun: str) -> str:
    """`noun` with 'a' or 'an' in front."""
    return f"{'an' if noun[:1].lower() in 'aeio' else 'a'} {noun}"


def describe_bytes(head: bytes) -> str:
    """What a file that is not a torch file looks like, from its first bytes."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "random bytes"
    if text.isprintable() or all(c.isprintable() or c.isspace() for c in text):
        return f"a text file (it starts with {one_line(repr(text[:24]), 40)})"
    return "random bytes"


def safe_torch_load(path: Path | str, what: str, error: type[WildcircuitsError]) -> Any:
    """Load a `.pt` file with `weights_only=True`; any failure raises `error` (one line)."""
    check = FileCheck(Path(path), what, error)
    if check.regular_file() == 0:
        raise check.problem(f"empty file (0 bytes), not {article(what)}")
    try:
        with check.path.open("rb") as handle:
            head = handle.read(64)
    except OSError as failure:
        raise check.problem(f"cannot read it: {failure.strerror or failure}") from None
    if head.startswith(ZIP_MAGIC):
        container = "zip archive"
    elif head[:1] == b"\x80":  # a pickle protocol opcode: torch's legacy format or a raw pickle
        container = "pickle"
    else:
        raise check.problem(f"not {article(what)}: {describe_bytes(head)}, not a torch file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(check.path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as failure:
        problem = _unpickling_problem(str(failure), container, what)
    except EOFError:
        problem = f"not a readable {what}: truncated (its data ends early)"
    except RuntimeError as failure:
        problem = f"not a readable {what}: {_zip_problem(str(failure))}"
    except Exception as failure:  # the unpickler raises many types on damaged data
        problem = f"not a readable {what}: damaged ({type(failure).__name__}: {one_line(failure)})"
    raise check.problem(problem) from None


def _unpickling_problem(message: str, container: str, what: str) -> str:
    found = _GLOBAL.search(message)
    if found:
        held = "a zip archive holding a pickle" if container == "zip archive" else "a pickle"
        return (
            f"not {article(what)} (it is {held} that would import {found.group(1)}; "
            "wildcircuits never runs pickled code)"
        )
    operand = re.search(r"Unsupported operand (\d+)", message)
    if operand:
        return (
            f"not a readable {what}: damaged or random bytes (unknown pickle opcode {operand[1]})"
        )
    if "truncated" in message or "ran out of input" in message.lower():
        return f"not a readable {what}: truncated (its data ends early)"
    return f"not a readable {what}: damaged pickle data ({one_line(message)})"


def _zip_problem(message: str) -> str:
    if "central directory" in message:
        return "truncated (zip central directory missing)"
    if "not a ZIP archive" in message:
        return "truncated or damaged (not a complete zip archive)"
    first = message.split(". This is an internal miniz error")[0]
    if "PytorchStreamReader" in first:
        return f"damaged zip archive ({one_line(first.replace('PytorchStreamReader ', ''))})"
    return f"damaged ({one_line(first)})"


def read_text_file(path: Path | str, what: str, error: type[WildcircuitsError]) -> str:
    """A UTF-8 text file's content; missing, directory, unreadable or not UTF-8 raise `error`."""
    check = FileCheck(Path(path), what, error)
    check.regular_file()
    try:
        data = check.path.read_bytes()
    except OSError as failure:
        raise check.problem(f"cannot read it: {failure.strerror or failure}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as failure:
        line = data[: failure.start].count(b"\n") + 1
        raise check.problem(
            f"not UTF-8 text (byte 0x{data[failure.start]:02x} on line {line}); "
            f"expected {article(what)}"
        ) from None


def parse_json(text: str, check: FileCheck, line: int | None = None) -> Any:
    """`json.loads(text)`; invalid JSON raises `check`'s error with its line and column."""
    if line is None and not text.strip():
        raise check.problem(f"empty file (no JSON), not {article(check.what)}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as failure:
        where = f"JSONL line {line}" if line is not None else f"JSON line {failure.lineno}"
        raise check.problem(
            f"{where}: invalid JSON ({failure.msg} at column {failure.colno})"
        ) from None
    except RecursionError:
        where = f"JSONL line {line}" if line is not None else "JSON"
        raise check.problem(f"{where}: nested too deeply to read") from None


#: Besides `yaml.YAMLError`, what reading YAML raises on hostile or odd input: deep nesting, and
#: values the safe constructor cannot build (e.g. a date like 2001-13-45).
YAML_VALUE_ERRORS = (RecursionError, ValueError, TypeError, OverflowError)


def yaml_failure(
    error: Exception, plain_data: str, line_word: str = "YAML line", fix: str = ""
) -> str:
    """One line saying why YAML did not read: for a `yaml.YAMLError` where (`line_word` and the
    1-based line), the problem and its context, then `fix`; a tag that would construct an
    object adds that `plain_data` (e.g. "task files") are plain data; otherwise (one of
    `YAML_VALUE_ERRORS`) what went wrong."""
    import yaml

    if isinstance(error, RecursionError):
        return "invalid YAML: nested too deeply to read"
    if not isinstance(error, yaml.YAMLError):
        return f"invalid YAML: a value cannot be read ({error})"
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    detail = f"{problem} ({context})" if context else problem
    if isinstance(error, yaml.constructor.ConstructorError) and "tag" in str(problem):
        detail += f"; {plain_data} are plain data, wildcircuits never constructs objects from tags"
    where = "YAML" if mark is None else f"{line_word} {mark.line + 1}"
    return f"{where}: invalid YAML: {detail}{fix}"
