"""Template tasks: sample bindings, apply corruption rules, tokenize and validate."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from wildcircuits.tasks.base import Preview, Variation, task_problem
from wildcircuits.tasks.dataset import (
    AlignmentError,
    BuildReport,
    Dataset,
    Example,
    Prompt,
    build_bar,
    check_aligned,
    in_split,
    require_size,
    single_token_id,
    tokenize_prompt,
    tokenizer_name,
)
from wildcircuits.tasks.fillers import filter_lists
from wildcircuits.tasks.spec import (
    Corruption,
    MetricKind,
    RuleKind,
    Split,
    TemplateTaskSpec,
    VariationKind,
    WordList,
)
from wildcircuits.tasks.template import (
    ParsedTemplate,
    Record,
    field_value,
    parse_differ,
    parse_template,
    render,
    render_plain,
)
from wildcircuits.tasks.validate import TEMPLATE_VARIABLE, validate_spec

RETRIES = 5  # re-draws of one corruption before a candidate is dropped


class Reject(Exception):
    """A candidate example that fails a constraint; the message is the (generic) reason."""


@dataclass(frozen=True)
class Draw:
    """Sampled values for one candidate: occurrence -> record, per prompt."""

    template: str
    clean: Mapping[str, Record]
    clean_vars: Mapping[str, Record]
    corrupted: Mapping[str, Mapping[str, Record]]
    corrupted_vars: Mapping[str, Mapping[str, Record]]


class TemplateTask:
    """A task defined by a `TemplateTaskSpec` (every YAML task)."""

    problem = task_problem

    def __init__(self, spec: TemplateTaskSpec) -> None:
        validate_spec(spec)
        self.spec = spec
        self._parsed = {t.id: parse_template(t.text, f"template {t.id!r}") for t in spec.templates}
        self._answers = tuple(parse_template(a, "answers") for a in spec.answers)
        self._distractors = tuple(parse_template(d, "distractors") for d in spec.distractors)

    name = property(lambda self: self.spec.name)
    description = property(lambda self: self.spec.description)
    corruption_names = property(lambda self: self.spec.corruption_names)
    default_corruption = property(lambda self: self.spec.default)

    @property
    def metric(self) -> MetricKind:
        return self.spec.metric

    def __repr__(self) -> str:
        return f"TemplateTask({self.name!r})"

    def max_examples(self) -> int:
        """Distinct clean prompts: per template, the product of its variables' list sizes."""
        total = 0
        for template in self.spec.templates:
            count = 1
            for variable in self._parsed[template.id].variables:
                count *= len(self.spec.lists[self.spec.variables[variable]].records)
            total += count
        return total

    def build(
        self,
        tokenizer: Any,
        n: int,
        seed: int = 0,
        split: Split = Split.ALL,
        min_n: int | None = None,
    ) -> Dataset:
        """Sample candidates round-robin over templates until `n` pass every check."""
        lists, dropped = filter_lists(self.spec, tokenizer, self._all_parsed())
        rng = random.Random(f"{self.name}\x00{seed}")
        reasons: Counter[str] = Counter()
        examples: list[Example] = []
        seen: set[str] = set()
        attempts, max_attempts = 0, 40 * n + 200
        templates = list(self.spec.templates)
        bar = build_bar(self.name, n)
        while len(examples) < n and attempts < max_attempts:
            template = templates[attempts % len(templates)]
            attempts += 1
            try:
                example = self._candidate(template.id, lists, rng, tokenizer)
            except Reject as reject:
                reasons[str(reject)] += 1
                continue
            text = example.clean.text
            if text in seen:
                reasons["duplicate of an earlier prompt"] += 1
            elif not in_split(text, seed, split):
                reasons[f"prompt belongs to the other split than {split.value}"] += 1
            else:
                seen.add(text)
                examples.append(example)
                bar.update()
        bar.close()
        report = BuildReport(n, len(examples), attempts, tuple(dropped), dict(reasons))
        dataset = Dataset(
            task=self.name,
            tokenizer=tokenizer_name(tokenizer),
            seed=seed,
            split=split,
            metric=self.metric,
            default_corruption=self.default_corruption,
            position=self.spec.position,
            examples=tuple(examples),
            report=report,
        )
        return require_size(dataset, n if min_n is None else min_n)

    def variations(self) -> tuple[Variation, ...]:
        out = []
        for v in self.spec.variations:
            if v.kind is VariationKind.GROUP_BY:
                out.append(Variation(v.name, v.description, group_by=v.key))
                continue
            if v.kind is VariationKind.TEMPLATES:
                derived = replace(self.spec, templates=v.templates, variations=())
            else:
                derived = replace(self.spec, lists={**self.spec.lists, **v.lists}, variations=())
            out.append(Variation(v.name, v.description, task=TemplateTask(derived)))
        return tuple(out)

    def preview(self, seed: int = 0) -> Preview:
        """The first candidate of `seed` as text (no tokenizer checks)."""
        rng = random.Random(f"{self.name}\x00{seed}")
        draw = self._draw(self.spec.templates[0].id, self.spec.lists, rng)
        parsed = self._parsed[draw.template]
        flags = self._single_token_flags(self.spec.lists)
        corrupted = {k: render(parsed, v, flags)[0] for k, v in draw.corrupted.items()}
        answers = self._answer_texts(draw)
        return Preview(
            render(parsed, draw.clean, flags)[0], corrupted, answers, self._distractor_texts(draw)
        )

    # -- internals -------------------------------------------------------------------------

    def _all_parsed(self) -> list[ParsedTemplate]:
        return [*self._parsed.values(), *self._answers, *self._distractors]

    def _single_token_flags(self, lists: Mapping[str, WordList]) -> dict[str, bool]:
        return {v: lists[name].single_token for v, name in self.spec.variables.items()}

    def _candidate(
        self, template_id: str, lists: Mapping[str, WordList], rng: random.Random, tokenizer: Any
    ) -> Example:
        draw = self._draw(template_id, lists, rng)
        parsed = self._parsed[template_id]
        flags = self._single_token_flags(lists)
        clean = _tokenize(tokenizer, *render(parsed, draw.clean, flags), "clean prompt")
        corrupted: dict[str, Prompt] = {}
        accepted_vars = dict(draw.corrupted_vars)
        for corruption in self.spec.corruptions:
            values = draw.corrupted[corruption.name]
            for _ in range(RETRIES):
                prompt = _tokenize(tokenizer, *render(parsed, values, flags), corruption.name)
                reason = check_aligned(clean, prompt)
                if reason is None:
                    corrupted[corruption.name] = prompt
                    break
                values, accepted_vars[corruption.name] = self._corrupt(
                    corruption, template_id, draw, lists, rng
                )
            else:
                raise Reject(f"corruption {corruption.name}: {reason}")
        draw = replace(draw, corrupted_vars=accepted_vars)
        answers = self._answer_texts(draw)
        distractors = self._distractor_texts(draw)
        if set(answers) & set(distractors):
            raise Reject("a distractor equals an answer")
        template = self._template(template_id)
        return Example(
            clean=clean,
            corrupted=corrupted,
            answers=_token_ids(tokenizer, answers, "answer"),
            distractors=_token_ids(tokenizer, distractors, "distractor"),
            template=template_id,
            answer_texts=answers,
            distractor_texts=distractors,
            metadata={**template.metadata, **_binding_metadata(draw.clean_vars)},
        )

    def _template(self, template_id: str) -> Any:
        return next(t for t in self.spec.templates if t.id == template_id)

    def _answer_vars(self, draw: Draw, variables: Mapping[str, Record]) -> dict[str, Record]:
        """Variables for answer templates, plus `template`: the template's metadata."""
        return {**variables, TEMPLATE_VARIABLE: self._template(draw.template).metadata}

    def _answer_texts(self, draw: Draw) -> tuple[str, ...]:
        variables = self._answer_vars(draw, draw.clean_vars)
        return tuple(render_plain(a, variables, "answers") for a in self._answers)

    def _distractor_texts(self, draw: Draw) -> tuple[str, ...]:
        if self._distractors:
            variables = self._answer_vars(draw, draw.clean_vars)
            return tuple(render_plain(d, variables, "distractors") for d in self._distractors)
        counter = self._answer_vars(draw, draw.corrupted_vars[self.default_corruption])
        return tuple(render_plain(a, counter, "answers") for a in self._answers)

    def _draw(self, template_id: str, lists: Mapping[str, WordList], rng: random.Random) -> Draw:
        by_list: dict[str, list[int]] = {}
        clean_vars: dict[str, Record] = {}
        for variable, list_name in self.spec.variables.items():
            taken = by_list.setdefault(list_name, [])
            free = [i for i in range(len(lists[list_name].records)) if i not in taken]
            if not free:
                raise Reject(f"list {list_name} has too few fillers for its variables")
            taken.append(rng.choice(free))
            clean_vars[variable] = lists[list_name].records[taken[-1]]
        parsed = self._parsed[template_id]
        clean = {p.occurrence: clean_vars[p.variable] for p in parsed.placeholders}
        draw = Draw(template_id, clean, clean_vars, {}, {})
        corrupted, corrupted_vars = {}, {}
        for corruption in self.spec.corruptions:
            values, variables = self._corrupt(corruption, template_id, draw, lists, rng)
            corrupted[corruption.name], corrupted_vars[corruption.name] = values, variables
        return replace(draw, corrupted=corrupted, corrupted_vars=corrupted_vars)

    def _corrupt(
        self,
        corruption: Corruption,
        template_id: str,
        draw: Draw,
        lists: Mapping[str, WordList],
        rng: random.Random,
    ) -> tuple[dict[str, Record], dict[str, Record]]:
        """Occurrence values and variable values of one corruption of `draw`."""
        parsed = self._parsed[template_id]
        values, variables = dict(draw.clean), dict(draw.clean_vars)
        if corruption.kind is RuleKind.COPY:
            for target, source in corruption.copies.items():
                values[target] = variables.get(source) or draw.clean[source]
        else:
            self._resample(corruption, parsed, draw, lists, rng, values, variables)
        for variable in parsed.variables:  # a variable's value is that of its first occurrence
            first = next(p for p in parsed.placeholders if p.variable == variable)
            variables[variable] = values[first.occurrence]
        return values, variables

    def _resample(
        self,
        corruption: Corruption,
        parsed: ParsedTemplate,
        draw: Draw,
        lists: Mapping[str, WordList],
        rng: random.Random,
        values: dict[str, Record],
        variables: dict[str, Record],
    ) -> None:
        used = {id(r) for r in draw.clean_vars.values()}
        differ = parse_differ(corruption.differ, f"corruption {corruption.name}")
        for target in corruption.targets:
            is_var = target in self.spec.variables
            variable = target if is_var else parsed.occurrences[target].variable
            occurrences = [
                p.occurrence
                for p in parsed.placeholders
                if (p.variable == target if is_var else p.occurrence == target)
            ]
            old = values[occurrences[0]] if occurrences else variables[variable]
            records = lists[self.spec.variables[variable]].records
            free = [r for r in records if id(r) not in used and _differs(r, old, differ)]
            if not free:
                raise Reject(f"corruption {corruption.name}: no filler left to resample {target}")
            new = rng.choice(free)
            used.add(id(new))
            for occurrence in occurrences:
                values[occurrence] = new
            if is_var:
                variables[variable] = new


def _differs(new: Record, old: Record, differ: tuple[Any, Any] | None) -> bool:
    if differ is None:
        return True
    field, filter_ = differ
    where = "corruption differ"
    return field_value(new, field, filter_, where) != field_value(old, field, filter_, where)


def _tokenize(tokenizer: Any, text: str, spans: Any, what: str) -> Prompt:
    try:
        return tokenize_prompt(tokenizer, text, spans)
    except AlignmentError as error:
        raise Reject(f"{what}: {error}") from None


def _token_ids(tokenizer: Any, texts: tuple[str, ...], what: str) -> tuple[int, ...]:
    ids = []
    for text in texts:
        token = single_token_id(tokenizer, text)
        if token is None:
            raise Reject(f"{what} is not a single token")
        ids.append(token)
    return tuple(ids)


def _binding_metadata(variables: Mapping[str, Record]) -> dict[str, str]:
    return {f"{v}.{k}": value for v, record in variables.items() for k, value in record.items()}
