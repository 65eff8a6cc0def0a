"""Resampling pools of the built-in tasks on the two real tokenizers (no weights): which tokens
each variable holds, and what a draw that agrees on a position keeps.

Causal scrubbing can only keep a token that a variable holds (`verification.resampling`). A
token that differs between prompts of one layout and that no variable holds makes every claim
reading it unscrubbable, so the tests below ask for none, on greater-than and induction (whose
variables were added) and on tasks with multi-token entities (a variable holds the whole span).
"""

from __future__ import annotations

import types
from dataclasses import replace

import pytest
import torch

from tests import tasks_fixtures
from wildcircuits.errors import TaskError
from wildcircuits.tasks import load_task
from wildcircuits.tasks.dataset import Prompt, Span, tokenize_prompt
from wildcircuits.tasks.library.induction import word_variable
from wildcircuits.verification.resampling import Resampler, pool_from_dataset

N = 32
REAL_TOKENIZER_IDS = tasks_fixtures.REAL_TOKENIZER_IDS
real_tokenizers = tasks_fixtures.real_tokenizers  # the session fixture, used here by name


def _model(model_id: str):
    """What `pool_from_dataset` reads of a model: its device and provenance."""
    info = types.SimpleNamespace(model_id=model_id, quantization="test")
    return types.SimpleNamespace(device=torch.device("cpu"), info=info)


def _pool(tokenizers, model_id: str, task: str, n: int = N):
    dataset = load_task(task).build(tokenizers[model_id], n, seed=0)
    return dataset, pool_from_dataset(_model(model_id), dataset)


def _held(pool, row: int, variable: str) -> list[int]:
    return (pool.slots[row] == pool.variables.index(variable)).nonzero().squeeze(1).tolist()


@pytest.mark.parametrize("model_id", REAL_TOKENIZER_IDS)
@pytest.mark.parametrize(
    "task", ["greater_than", "induction", "capital_of_country", "country_of_capital", "ioi"]
)
def test_every_token_that_varies_within_a_layout_is_held_by_a_variable(
    real_tokenizers, model_id, task
):
    _, pool = _pool(real_tokenizers, model_id, task)
    assert pool.variables
    assert not bool(pool.varying.any()), pool.varying.nonzero()[:5]


@pytest.mark.parametrize("model_id", REAL_TOKENIZER_IDS)
def test_greater_than_variables_hold_both_centuries_and_the_start_years_digits(
    real_tokenizers, model_id
):
    dataset, pool = _pool(real_tokenizers, model_id, "greater_than")
    assert pool.variables == ("NOUN", "CC", "XX")
    assert len(set(pool.lists)) == 3  # a century of 17 and a year of 17 are not one list
    decode = real_tokenizers[model_id].decode
    for row, example in enumerate(dataset.examples):
        ids, end = example.clean.token_ids, example.clean.positions["END"]
        century = _held(pool, row, "CC")
        assert end in century  # END is the end year's last century digit
        text = decode([ids[t] for t in century])
        assert text.replace(" ", "") == example.metadata["century"] * 2
        year = _held(pool, row, "XX")
        assert year[-1] == example.clean.positions["YEAR"]
        assert decode([ids[t] for t in year]).strip() == example.metadata["xx"]


@pytest.mark.parametrize("model_id", REAL_TOKENIZER_IDS)
def test_a_greater_than_draw_agreeing_on_end_keeps_the_century_and_changes_the_year(
    real_tokenizers, model_id
):
    _, pool = _pool(real_tokenizers, model_id, "greater_than")
    draw = Resampler(pool, seed=0)
    reference = pool.reference()
    sample = draw.agreeing(reference, ["END"], "end")
    assert bool(sample.ok.all()), sample.reason
    cc, xx = pool.variables.index("CC"), pool.variables.index("XX")
    assert torch.equal(sample.values[:, cc], reference.values[:, cc])
    held = pool.slots == cc
    assert torch.equal(sample.ids[held], reference.ids[held])  # both occurrences move together
    assert bool((sample.values[:, xx] != reference.values[:, xx]).any())


@pytest.mark.parametrize("model_id", REAL_TOKENIZER_IDS)
def test_an_induction_word_variable_holds_both_occurrences(real_tokenizers, model_id):
    dataset, pool = _pool(real_tokenizers, model_id, "induction")
    length = int(dataset.examples[0].metadata["seq_len"])
    assert pool.variables == tuple(word_variable(i) for i in range(length))
    assert len(set(pool.lists)) == 1  # stated by the task: one word list, no repeats
    end = pool.problem.named_positions["END"]  # the last word's repeat (not a loss token)
    for row in range(pool.n_rows):
        last = _held(pool, row, word_variable(length - 1))
        assert last == [int(end[row]) - length, int(end[row])]
    sample = Resampler(pool, seed=1).agreeing(pool.reference(), ["END"], "end")
    assert bool(sample.ok.all()), sample.reason
    ids, reference = sample.ids, pool.ids
    rows = torch.arange(pool.n_rows)
    assert torch.equal(ids[rows, end], reference[rows, end])
    assert torch.equal(ids[rows, end - length], reference[rows, end - length])
    assert bool((ids != reference).any())
    for row in range(pool.n_rows):  # a transplant never repeats a word within a half
        half = ids[row, int(end[row]) - length + 1 : int(end[row]) + 1]
        assert len(set(half.tolist())) == length
        first = ids[row, int(end[row]) - 2 * length + 1 : int(end[row]) - length + 1]
        assert torch.equal(half, first)


def test_word_variables_are_distinct_names_whose_occurrences_end_in_a_digit():
    names = [word_variable(i) for i in range(60)]
    assert len(set(names)) == 60 and names[:3] == ["Wa", "Wb", "Wc"] and names[26] == "Wba"
    assert all(n[1:].isalpha() for n in names)


@pytest.mark.parametrize("model_id", REAL_TOKENIZER_IDS)
def test_a_multi_token_entity_is_held_whole(real_tokenizers, model_id):
    dataset, pool = _pool(real_tokenizers, model_id, "country_of_capital")
    spans = [e.clean.spans for e in dataset.examples]
    multi = [(row, name, r) for row, s in enumerate(spans) for name, r in s.items()
             if r[1] - r[0] > 1]  # fmt: skip
    assert multi, "the dataset has no multi-token entity to test"
    for row, name, (first, stop) in multi:
        assert set(pool.slots[row, first:stop].tolist()) == {pool.variables.index("C")}, name


def test_tokenize_prompt_keeps_every_spans_token_range_and_names_only_named_spans(
    real_tokenizers,
):
    tokenizer = real_tokenizers["smollm2-135m-instruct"]
    text = "The year 1732 to 17"
    spans = [Span("YEAR", 9, 13, single_token=False), Span("CC", 17, 19, False, named=False)]
    prompt = tokenize_prompt(tokenizer, text, spans)
    assert set(prompt.positions) == {"YEAR", "END"}
    first, stop = prompt.spans["YEAR"]
    assert prompt.positions["YEAR"] == stop - 1
    assert tokenizer.decode(list(prompt.token_ids[first:stop])).strip() == "1732"
    assert prompt.spans["CC"][1] - 1 == prompt.positions["END"]


def test_overlapping_variable_spans_and_a_partly_stated_list_are_clear_errors(real_tokenizers):
    tokenizer = real_tokenizers["smollm2-135m-instruct"]
    dataset = load_task("induction").build(tokenizer, 4, seed=0)
    model = _model("smollm2-135m-instruct")
    example = dataset.examples[0]
    spans = dict(example.clean.spans)
    spans["Wb1"] = spans["Wa1"]  # Wb claims Wa's token
    clean = Prompt(example.clean.text, example.clean.token_ids, example.clean.positions, spans)
    bad = replace(dataset, examples=(replace(example, clean=clean),))
    with pytest.raises(TaskError, match="another variable already holds"):
        pool_from_dataset(model, bad)
    partial = replace(dataset, lists={"Wa": "words"})
    with pytest.raises(TaskError, match="state every variable's list"):
        pool_from_dataset(model, partial)
