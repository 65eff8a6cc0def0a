"""Greater-than: 'The war lasted from the year 1732 to the year 17' -> a year after 32.

Python because its answer sets depend on how the tokenizer splits numbers:

- two-digit mode (every "00".."99" is one token, GPT-2 style): answers are the YY tokens > XX,
  distractors those <= XX; metric prob_diff = p(YY > XX) - p(YY <= XX).
- digit mode (digits split one by one, SmolLM2 and Gemma3): the next token is the tens digit of YY.
  We read the first differing digit: answers are digits d > X1 (tens digit of XX), distractors
  d < X1; d == X1 is undecided at this token and in neither set. XX is drawn with 1 <= X1 <= 8 so
  both sets are non-empty.

Corruption `01` (Hanna et al. 2023): the start year's XX becomes 01, same token length.

Resampling variables (causal scrubbing): NOUN, CC (the century, both years) and XX (the start
year's last two digits), so every token that differs between prompts of a template is held by one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from wildcircuits.errors import TaskError
from wildcircuits.tasks.base import Preview, Variation, task_problem
from wildcircuits.tasks.dataset import (
    AlignmentError,
    BuildReport,
    Dataset,
    Example,
    Span,
    check_aligned,
    in_split,
    require_size,
    single_token_id,
    tokenize_prompt,
    tokenizer_name,
)
from wildcircuits.tasks.spec import MetricKind, Split

NOUNS = (
    "war", "expedition", "drought", "siege", "reign", "journey", "project", "strike", "trial",
    "famine", "festival", "voyage", "dynasty", "rebellion", "occupation", "treaty", "crisis",
    "campaign", "exhibition", "plague",
)  # fmt: skip
TEMPLATES = {
    "lasted": "The {noun} lasted from the year {cc}{xx} to the year {cc}",
    "began": "The {noun} began in the year {cc}{xx} and ended in the year {cc}",
}
CENTURIES = tuple(range(11, 20))


@dataclass(frozen=True)
class GreaterThanTask:
    """Years within one century; the model should continue with a later year."""

    problem = task_problem

    name: str = "greater_than"
    description: str = "Greater-than: 'from the year 1732 to the year 17' -> YY > 32."
    metric: MetricKind = MetricKind.PROB_DIFF
    default_corruption: str = "01"
    corruption_names: tuple[str, ...] = ("01",)

    def max_examples(self) -> int:
        """Templates x nouns x centuries x start years (97 two-digit years at most)."""
        return len(TEMPLATES) * len(NOUNS) * len(CENTURIES) * 97

    def build(
        self,
        tokenizer: Any,
        n: int,
        seed: int = 0,
        split: Split = Split.ALL,
        min_n: int | None = None,
    ) -> Dataset:
        two_digit = _two_digit_mode(tokenizer)
        rng = random.Random(f"{self.name}\x00{seed}")
        examples, reasons, seen, attempts = [], {}, set(), 0
        while len(examples) < n and attempts < 40 * n + 100:
            template = list(TEMPLATES)[attempts % len(TEMPLATES)]
            attempts += 1
            noun, century = rng.choice(NOUNS), rng.choice(CENTURIES)
            xx = rng.randint(2, 98) if two_digit else rng.randint(10, 89)
            try:
                example = _example(tokenizer, template, noun, century, xx, two_digit)
            except AlignmentError as error:
                reasons[str(error)] = reasons.get(str(error), 0) + 1
                continue
            text = example.clean.text
            if text in seen or not in_split(text, seed, split):
                key = "duplicate, or prompt in the other split"
                reasons[key] = reasons.get(key, 0) + 1
                continue
            seen.add(text)
            examples.append(example)
        report = BuildReport(n, len(examples), attempts, (), reasons)
        dataset = Dataset(
            self.name, tokenizer_name(tokenizer), seed, split, self.metric,
            self.default_corruption, "END", tuple(examples), report,
        )  # fmt: skip
        return require_size(dataset, n if min_n is None else min_n)

    def variations(self) -> tuple[Variation, ...]:
        return (
            Variation("century", "the century CC of the years", group_by="century"),
            Variation("yy_range", "start year XX in 02-32, 33-65, 66-98", group_by="yy_range"),
            Variation("template", "each template", group_by="template"),
        )

    def preview(self, seed: int = 0) -> Preview:
        clean = TEMPLATES["lasted"].format(noun="war", cc=17, xx="32")
        corrupted = TEMPLATES["lasted"].format(noun="war", cc=17, xx="01")
        return Preview(clean, {"01": corrupted}, ("33..99",), ("00..32",))


def _two_digit_mode(tokenizer: Any) -> bool:
    if all(single_token_id(tokenizer, f"{y:02d}") is not None for y in range(100)):
        return True
    if all(single_token_id(tokenizer, str(d)) is not None for d in range(10)):
        return False
    raise TaskError(
        f"task 'greater_than': tokenizer {tokenizer_name(tokenizer)!r} encodes neither every "
        "two-digit number nor every digit as one token"
    )


def _render(template: str, noun: str, century: int, xx: str) -> tuple[str, list[Span]]:
    """The prompt and its spans: NOUN and YEAR (the start year; its position is its last digit)
    are named positions; CC1 / XX (the start year's century and last two digits) and CC2 (the
    end year's century, whose last token is END) only mark the tokens the resampling variables
    CC and XX hold."""
    head, _, _ = TEMPLATES[template].partition("{noun}")
    text = TEMPLATES[template].format(noun=noun, cc=century, xx=xx)
    noun_start = len(head)
    year = f"{century}{xx}"
    year_start = text.index(year, noun_start)
    end_century = len(text) - len(str(century))
    spans = [
        Span("NOUN", noun_start, noun_start + len(noun)),
        Span("YEAR", year_start, year_start + 4, single_token=False),
        Span("CC1", year_start, year_start + 2, single_token=False, named=False),
        Span("XX", year_start + 2, year_start + 4, single_token=False, named=False),
        Span("CC2", end_century, len(text), single_token=False, named=False),
    ]
    return text, spans


def _example(
    tokenizer: Any, template: str, noun: str, century: int, xx: int, two_digit: bool
) -> Example:
    clean = tokenize_prompt(tokenizer, *_render(template, noun, century, f"{xx:02d}"))
    corrupted = tokenize_prompt(tokenizer, *_render(template, noun, century, "01"))
    reason = check_aligned(clean, corrupted)
    if reason is not None:
        raise AlignmentError(f"corruption 01: {reason}")
    if two_digit:
        above = [f"{y:02d}" for y in range(xx + 1, 100)]
        below = [f"{y:02d}" for y in range(xx + 1)]
    else:
        above = [str(d) for d in range(xx // 10 + 1, 10)]
        below = [str(d) for d in range(xx // 10)]
    ids = {t: single_token_id(tokenizer, t) for t in above + below}
    low = 2 if two_digit else 10
    yy_range = "02-32" if xx <= 32 else ("33-65" if xx <= 65 else "66-98")
    return Example(
        clean=clean,
        corrupted={"01": corrupted},
        answers=tuple(ids[t] for t in above),
        distractors=tuple(ids[t] for t in below),
        template=template,
        answer_texts=tuple(above),
        distractor_texts=tuple(below),
        metadata={
            "NOUN.noun": noun,
            "CC.century": str(century),
            "XX.year": f"{xx:02d}",
            "century": str(century),
            "xx": f"{xx:02d}",
            "yy_range": yy_range if low == 2 else yy_range.replace("02", "10"),
            "mode": "two_digit" if two_digit else "digit",
        },
    )
