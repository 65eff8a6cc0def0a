"""Induction on repeated random tokens: a random word sequence A, then A again.

Python because its fillers are drawn from the tokenizer's own vocabulary. Tokens are whole words
with a leading space (e.g. " garden") that decode and re-encode to themselves, so every prompt is
plain text and `model.tokenize` sees exactly the sampled ids. Metric: mean next-token loss on the
second repeat (from its second token on). Corruption `unrelated_first_half`: the first half is
replaced by other random words, so the second half is no longer a repeat (same targets).
Token frequency is proxied by the token id rank (BPE merge order / SentencePiece score order).
Resampling variables (causal scrubbing): one per word of the sequence (`word_variable`), holding
both of its occurrences, so a kept token keeps its repeat too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from wildcircuits.errors import TaskError
from wildcircuits.tasks.base import Preview, Variation, task_problem
from wildcircuits.tasks.dataset import (
    BuildReport,
    Dataset,
    Example,
    Prompt,
    in_split,
    require_size,
    tokenizer_name,
)
from wildcircuits.tasks.spec import MetricKind, Split

MIN_POOL = 50
_PREVIEW_WORDS = (" garden", " silver", " market", " window", " planet", " letter", " orange")


@dataclass(frozen=True)
class InductionTask:
    """Repeated random word tokens; `band` selects a slice of the word pool by id rank."""

    problem = task_problem

    seq_len: int = 10
    band: tuple[float, float] = (0.0, 1.0)
    name: str = "induction"
    description: str = "Induction: a random word sequence repeated; predict the repeat."
    metric: MetricKind = MetricKind.LOSS
    default_corruption: str = "unrelated_first_half"
    corruption_names: tuple[str, ...] = ("unrelated_first_half",)

    def build(
        self,
        tokenizer: Any,
        n: int,
        seed: int = 0,
        split: Split = Split.ALL,
        min_n: int | None = None,
    ) -> Dataset:
        pool = self._pool(tokenizer)
        bos = _bos_count(tokenizer)
        rng = random.Random(f"{self.name}\x00{self.seq_len}\x00{seed}")
        examples, reasons, attempts = [], {}, 0
        while len(examples) < n and attempts < 20 * n + 50:
            attempts += 1
            words = rng.sample(pool, 2 * self.seq_len)
            first, other = words[: self.seq_len], words[self.seq_len :]
            text = "".join(w for _, w in first) * 2
            if not in_split(text, seed, split):
                key = f"prompt belongs to the other split than {split.value}"
                reasons[key] = reasons.get(key, 0) + 1
                continue
            examples.append(self._example(first, other, bos, tokenizer))
        report = BuildReport(n, len(examples), attempts, (), reasons)
        dataset = Dataset(
            self.name, tokenizer_name(tokenizer), seed, split, self.metric,
            self.default_corruption, "END", tuple(examples), report,
            lists={word_variable(i): "words" for i in range(self.seq_len)},
        )  # fmt: skip
        return require_size(dataset, n if min_n is None else min_n)

    def _pool(self, tokenizer: Any) -> list[tuple[int, str]]:
        pool = word_pool(tokenizer)
        lo, hi = (int(f * len(pool)) for f in self.band)
        band = pool[lo:hi]
        if len(band) < max(MIN_POOL, 2 * self.seq_len):
            raise TaskError(
                f"task {self.name!r}: only {len(band)} word tokens in band {self.band} of "
                f"tokenizer {tokenizer_name(tokenizer)!r} (need {max(MIN_POOL, 2 * self.seq_len)})"
            )
        return band

    def _example(self, first: list, other: list, bos: int, tokenizer: Any) -> Example:
        ids_a, ids_b = [i for i, _ in first], [i for i, _ in other]
        prefix = [tokenizer.bos_token_id] * bos
        length = self.seq_len
        positions = {"REPEAT": bos + length, "END": bos + 2 * length - 1}
        words = [word_variable(i) for i in range(length)]
        spans = {f"{w}{half + 1}": (bos + half * length + i, bos + half * length + i + 1)
                 for half in (0, 1) for i, w in enumerate(words)}  # fmt: skip
        clean = Prompt(
            "".join(w for _, w in first) * 2, tuple(prefix + ids_a * 2), positions, spans
        )
        corrupt_text = "".join(w for _, w in other) + "".join(w for _, w in first)
        corrupted = Prompt(corrupt_text, tuple(prefix + ids_b + ids_a), positions, spans)
        return Example(
            clean=clean,
            corrupted={self.default_corruption: corrupted},
            answers=(),
            distractors=(),
            template=f"len{length}",
            metadata={
                "seq_len": str(length),
                "band": f"{self.band[0]:.2f}-{self.band[1]:.2f}",
                **{f"{w}.word": str(i) for w, i in zip(words, ids_a, strict=True)},
            },
            loss_positions=tuple(range(bos + length, bos + 2 * length - 1)),
            loss_targets=tuple(ids_a[1:]),
        )

    def variations(self) -> tuple[Variation, ...]:
        return (
            Variation("seq_len_5", "5 random words repeated", task=replace(self, seq_len=5)),
            Variation("seq_len_20", "20 random words repeated", task=replace(self, seq_len=20)),
            Variation(
                "common_tokens",
                "words from the lowest third of ids (most frequent)",
                task=replace(self, band=(0.0, 1 / 3)),
            ),  # fmt: skip
            Variation(
                "rare_tokens",
                "words from the highest third of ids (least frequent)",
                task=replace(self, band=(2 / 3, 1.0)),
            ),  # fmt: skip
        )

    def preview(self, seed: int = 0) -> Preview:
        words = list(_PREVIEW_WORDS[:5])
        random.Random(seed).shuffle(words)
        text = "".join(words)
        return Preview(text * 2, {self.default_corruption: "".join(reversed(words)) + text}, (), ())


def word_variable(i: int) -> str:
    """The resampling variable of the sequence's word i: Wa, Wb, .., Wz, Wba, .. (letters, so
    its occurrences Wa1 and Wa2, in the first and the repeated half, end in a digit)."""
    letters = ""
    while True:
        letters = "abcdefghijklmnopqrstuvwxyz"[i % 26] + letters
        i //= 26
        if not i:
            return "W" + letters


def _bos_count(tokenizer: Any) -> int:
    ids = tokenizer(" garden")["input_ids"]
    bos = tokenizer.bos_token_id
    return 1 if bos is not None and ids and ids[0] == bos else 0


@lru_cache(maxsize=8)
def _pool_cached(key: str, tokenizer: Any) -> tuple[tuple[int, str], ...]:
    vocab = tokenizer.get_vocab()
    ids = sorted(vocab.values())
    texts = tokenizer.batch_decode([[i] for i in ids])
    candidates = [
        (i, t)
        for i, t in zip(ids, texts, strict=True)
        if len(t) >= 5 and t[0] == " " and t[1:].isascii() and t[1:].isalpha() and t[1:].islower()
    ]
    encoded = tokenizer([t for _, t in candidates], add_special_tokens=False)["input_ids"]
    return tuple(c for c, e in zip(candidates, encoded, strict=True) if e == [c[0]])


def word_pool(tokenizer: Any) -> list[tuple[int, str]]:
    """(id, text) of every lowercase word token with a leading space that round-trips, by id."""
    return list(_pool_cached(tokenizer_name(tokenizer) + str(len(tokenizer)), tokenizer))
