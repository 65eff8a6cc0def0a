"""Every ```python block of the README and docs/ runs here, so examples cannot rot.

The rule (for whoever writes docs): a block fenced as ```python is code that runs. Each listed
file's blocks run in order in one namespace, like a notebook (a later block may use the names an
earlier one made), in a fresh temporary working directory, so a block that needs a file writes it
in an earlier block, visibly. A file that loads a real model is marked `real_model` and runs on
the real built-in model: its blocks must stay cheap (small n, few sizes; say so in the prose when
it quotes numbers from a larger run). Signatures and pseudo-code are ```text blocks; shell
examples are ```sh / ```bash / plain ``` blocks and are not run. A new markdown file with Python
blocks gets a row in DOCS. The test never rewrites a block: it only makes `load_pretrained` reuse
one loaded copy of each built-in model for the whole test session.

A failure names the file and the first line of the failing block; the traceback's line numbers
are the markdown file's own.
"""

from __future__ import annotations

import inspect
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import SMOLLM2_ID

ROOT = Path(__file__).resolve().parents[1]
REWRITTEN = "integrator rewrites these blocks"

# file -> marks; every file here loads a real built-in model. An xfail mark has a row in
# tests/QUARANTINES.md.
DOCS: dict[str, tuple[pytest.MarkDecorator, ...]] = {
    "docs/tasks.md": (),
    "docs/localise.md": (),
    "docs/discovery.md": (),
    "docs/evaluation.md": (),
    "docs/circuits.md": (),
    "docs/hypothesis.md": (),
    "docs/verify.md": (),
    "README.md": (),
    "docs/run_folder.md": (pytest.mark.xfail(strict=False, reason=REWRITTEN),),
}

_FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced ```python block: its file, the line number of its first code line, its code."""

    path: str
    line: int
    code: str


def python_blocks(path: str, text: str) -> list[Block]:
    """The ```python blocks of a markdown text, in order (fences at the start of a line)."""
    blocks, lang, start, lines = [], None, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if lang is None and match:
            lang, start, lines = match.group("lang"), number + 1, []
        elif lang is not None and line.startswith("```"):
            if lang == "python":
                blocks.append(Block(path, start, "\n".join(lines) + "\n"))
            lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, f"{path}: unclosed ``` fence opened at line {start - 1}"
    return blocks


def run_blocks(blocks: list[Block]) -> dict[str, Any]:
    """Execute the blocks in order in one namespace; fail naming the file and block line."""
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for block in blocks:
        # Pad with newlines so the traceback's line numbers are the markdown file's own.
        code = compile("\n" * (block.line - 1) + block.code, block.path, "exec")
        try:
            exec(code, namespace)
        except Exception as error:
            trace = "".join(traceback.format_exception(error))
            pytest.fail(
                f"{block.path}: the python block at line {block.line} raised "
                f"{type(error).__name__}: {error}\n{trace}",
                pytrace=False,
            )
    return namespace


_LOADED: dict[tuple[str, str, str], Any] = {}


@pytest.fixture
def shared_models(smollm2: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `load_pretrained` (behind every `load_model`) load each built-in model once.

    SmolLM2 on CPU in float32 is the conftest's session fixture itself; other built-ins are
    loaded on first use and kept for the session. Anything else loads as usual.
    """
    from wildcircuits.models import loading, zoo

    original = loading.load_pretrained
    _LOADED.setdefault((SMOLLM2_ID, "cpu", str(torch.float32)), smollm2)
    signature = inspect.signature(original)

    def load_pretrained(*args: Any, **kwargs: Any):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        name, device, dtype = (bound.arguments[k] for k in ("name_or_path", "device", "dtype"))
        if str(name) not in zoo.BUILTINS:
            return original(*args, **kwargs)
        key = (str(name), str(device), str(dtype))
        if key not in _LOADED:
            _LOADED[key] = original(**bound.arguments)
        return _LOADED[key]

    monkeypatch.setattr(loading, "load_pretrained", load_pretrained)


def test_python_blocks_are_found() -> None:
    """The extractor sees only ```python fences and numbers their first code line."""
    fences = ["intro", "```python", "x = 1", "```", "```text", "f(x) -> y", "```"]
    text = "\n".join([*fences, "```", "shell", "```", "```python", "y = x", "```", ""])
    blocks = python_blocks("a.md", text)
    assert [(b.line, b.code) for b in blocks] == [(3, "x = 1\n"), (12, "y = x\n")]
    assert run_blocks(blocks)["y"] == 1


def test_a_failing_block_names_file_and_line() -> None:
    """A block that raises fails the test with the file and the block's first line."""
    text = "```python\nok = 1\n```\n\n```python\nraise ValueError('x')\n```\n"
    blocks = python_blocks("b.md", text)
    message = r"b\.md: the python block at line 6 raised ValueError: x"
    with pytest.raises(pytest.fail.Exception, match=message):
        run_blocks(blocks)


def test_every_doc_with_python_is_listed() -> None:
    """Every markdown file of the README and docs/ that has a ```python block is in DOCS."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    with_python = {
        str(f.relative_to(ROOT))
        for f in files
        if python_blocks(str(f), f.read_text(encoding="utf-8"))
    }
    assert with_python <= set(DOCS), f"add these files to DOCS: {sorted(with_python - set(DOCS))}"


@pytest.mark.real_model
@pytest.mark.parametrize("doc", [pytest.param(d, marks=m, id=d) for d, m in DOCS.items()])
def test_doc_python_blocks_run(
    doc: str, shared_models: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's python blocks run, in order, in one namespace, in a temporary folder."""
    blocks = python_blocks(doc, (ROOT / doc).read_text(encoding="utf-8"))
    assert blocks, f"{doc} has no python block; remove it from DOCS"
    monkeypatch.chdir(tmp_path)
    run_blocks(blocks)
