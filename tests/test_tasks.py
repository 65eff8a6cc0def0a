"""Built-in tasks on both real tokenizers: validation, alignment, determinism, splits."""

from __future__ import annotations

import pytest

from tests.tasks_fixtures import REAL_TOKENIZER_IDS, real_tokenizers  # noqa: F401
from wildcircuits.errors import TaskError
from wildcircuits.tasks import Split, builtin_names, load_task

N = 8


def test_at_least_sixteen_builtin_tasks() -> None:
    names = builtin_names()
    assert len(names) >= 16
    for required in ("ioi", "induction", "greater_than", "docstring", "entity_tracking"):
        assert required in names


@pytest.mark.parametrize("name", builtin_names())
@pytest.mark.parametrize("model_id", REAL_TOKENIZER_IDS)
def test_builtin_task_aligned(name: str, model_id: str, real_tokenizers: dict) -> None:  # noqa: F811
    """Every corruption has the clean prompt's token length and named positions; stored ids
    are what the tokenizer gives for the text; answers are single tokens."""
    tokenizer = real_tokenizers[model_id]
    task = load_task(name)
    data = task.build(tokenizer, N, seed=1)
    assert len(data) == N and set(data.corruptions) == set(task.corruption_names)
    assert task.default_corruption in data.corruptions
    for example in data.examples:
        ids = tuple(tokenizer(example.clean.text)["input_ids"])
        assert ids == example.clean.token_ids
        assert example.clean.positions["END"] == len(ids) - 1
        for prompt in example.corrupted.values():
            assert len(prompt) == len(example.clean)
            assert dict(prompt.positions) == dict(example.clean.positions)
            assert tuple(tokenizer(prompt.text)["input_ids"]) == prompt.token_ids
        for token, text in zip(example.answers, example.answer_texts, strict=True):
            assert tokenizer(text, add_special_tokens=False)["input_ids"] == [token]
        if example.loss_positions:
            targets = [example.clean.token_ids[p + 1] for p in example.loss_positions]
            assert targets == list(example.loss_targets)
        else:
            assert example.answers and example.distractors
            assert not set(example.answers) & set(example.distractors)


def test_named_positions_point_at_the_slot(real_tokenizers: dict) -> None:  # noqa: F811
    for tokenizer in real_tokenizers.values():
        data = load_task("ioi").build(tokenizer, 4)
        for e in data.examples:
            ids = e.clean.token_ids
            assert ids[e.clean.positions["IO"]] == e.answers[0]
            assert ids[e.clean.positions["S1"]] == ids[e.clean.positions["S2"]] == e.distractors[0]
            flip = e.corrupted["s2_io_flip"].token_ids
            assert flip[e.clean.positions["S2"]] == e.answers[0]


def test_deterministic_and_seeded(real_tokenizers: dict) -> None:  # noqa: F811
    tokenizer = real_tokenizers["gemma3-270m"]
    for name in ("ioi", "induction", "greater_than"):
        a = load_task(name).build(tokenizer, 6, seed=3)
        b = load_task(name).build(tokenizer, 6, seed=3)
        c = load_task(name).build(tokenizer, 6, seed=4)
        assert a.examples == b.examples
        assert a.texts() != c.texts()


def test_splits_are_disjoint(real_tokenizers: dict) -> None:  # noqa: F811
    tokenizer = real_tokenizers["smollm2-135m-instruct"]
    task = load_task("ioi")
    train = task.build(tokenizer, 20, seed=0, split=Split.TRAIN)
    test = task.build(tokenizer, 20, seed=0, split=Split.TEST)
    assert not set(train.texts()) & set(test.texts())
    assert train.split is Split.TRAIN and test.provenance()["split"] == "test"


def test_dropped_fillers_are_reported(real_tokenizers: dict) -> None:  # noqa: F811
    """' apricot' is two tokens in SmolLM2 but one in Gemma3."""
    smol = load_task("a_an").build(real_tokenizers["smollm2-135m-instruct"], 8)
    gemma = load_task("a_an").build(real_tokenizers["gemma3-270m"], 8)
    dropped = {(d.list_name, d.form, d.n_tokens) for d in smol.report.dropped_fillers}
    assert ("nouns", " apricot", 2) in dropped
    assert "apricot" in smol.report.summary()
    assert not gemma.report.dropped_fillers


def test_too_small_dataset_names_the_constraint(real_tokenizers: dict) -> None:  # noqa: F811
    with pytest.raises(TaskError, match="duplicate") as info:
        load_task("a_an").build(real_tokenizers["gemma3-270m"], 500)
    assert "only 60 examples (need 500)" in str(info.value)
    assert "vocab=262144" in str(info.value)


def test_greater_than_digit_mode(real_tokenizers: dict) -> None:  # noqa: F811
    """Both tokenizers split digits: answers are the tens digits above XX's, distractors below."""
    for tokenizer in real_tokenizers.values():
        for e in load_task("greater_than").build(tokenizer, 6).examples:
            tens = int(e.metadata["xx"][0])
            assert e.metadata["mode"] == "digit"
            assert e.answer_texts == tuple(str(d) for d in range(tens + 1, 10))
            assert e.distractor_texts == tuple(str(d) for d in range(tens))
            assert (
                e.corrupted["01"].text.count("01 to") + e.corrupted["01"].text.count("01 and") == 1
            )


def test_unknown_task_lists_known() -> None:
    with pytest.raises(TaskError, match="ioi"):
        load_task("no_such_task")


def test_every_task_has_preview_and_variations() -> None:
    for name in builtin_names():
        task = load_task(name)
        preview = task.preview()
        assert preview.clean and task.default_corruption in preview.corrupted
        assert task.variations(), name


@pytest.mark.parametrize("name", ["a_an", "successor", "capital_of_country", "hypernymy"])
def test_max_examples_bounds_what_the_builder_makes(name, real_tokenizers) -> None:  # noqa: F811
    """Asking for every prompt the bound allows builds at most that many distinct ones."""
    from wildcircuits.tasks.base import max_examples

    task = load_task(name)
    bound = max_examples(task)
    assert bound is not None and 0 < bound < 1000
    data = task.build(real_tokenizers["smollm2-135m-instruct"], n=bound, min_n=1)
    texts = [e.clean.text for e in data.examples]
    assert len(set(texts)) == len(texts) <= bound
