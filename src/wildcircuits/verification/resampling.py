"""Resampling pools for causal scrubbing: prompts, their resampling variables, and the rule for
drawing an input that agrees with a reference on what a claim says matters.

A `ResamplePool` holds token rows (a `PatchingProblem`: the reference prompts, their metric
targets and named positions) and, per row, its resampling variables: which variable holds each
token (`slots`) and each variable's value (`values`). Variables of one list (e.g. IOI's IO, S
and C, all drawn from `names`) never share a value within a prompt, as the task builder draws
them. Rows with the same `keys` have the same layout (template group, length, named positions,
the tokens each variable holds), so a token index means the same thing in all of them.

The rule (`Resampler.agreeing`): x' agrees with a reference x on positions P when it has the same
layout and the same token ids at every token of P. x' is made by transplanting: a random other
row of x's layout, with every variable that holds a token of P replaced by x's value, at every
token the variable holds (so S2's name moves with S1's: no prompt with S1 != S2 is made). The
transplant is in distribution only when the task's constraint still holds, so candidate rows
where it would put one value in two variables of a list (IO = S) are skipped; a row with no
valid candidate is counted, never silently dropped. Matching within the pool instead would
rarely find a row with the same IO, S and template (40 x 39 name pairs x 6 templates). Tokens
of P that vary between rows of a layout but that no variable holds (`varying`) cannot be kept
by transplanting: a claim depending on them is not scrubbable. `Resampler.free` draws x_rand:
a random other row of the same layout, unchanged.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from wildcircuits.errors import TaskError, WildcircuitsError
from wildcircuits.explanation.positions import position_index
from wildcircuits.patching.problem import PatchingProblem, problem_from_dataset


@dataclass(frozen=True)
class ResamplePool:
    """Prompts and their resampling variables (see the module doc).

    problem: the rows (clean tokens, targets, named positions); variables: names; lists: per
    variable, its list id (variables of one list differ within a row); values: (row, variable)
    long value ids, -1 where the row lacks it; slots: (row, pos) long, the variable holding each
    token, -1 for template text and padding; keys: (row,) long layout ids; varying: (row, pos)
    bool, tokens that differ within their layout but no variable holds; position_names and
    position_slots: `explanation.positions.position_index` of the problem; source: how the
    variables were obtained."""

    problem: PatchingProblem
    variables: tuple[str, ...]
    lists: tuple[int, ...]
    values: torch.Tensor
    slots: torch.Tensor
    keys: torch.Tensor
    varying: torch.Tensor
    position_names: tuple[str, ...]
    position_slots: torch.Tensor
    source: str = "by hand"

    @property
    def n_rows(self) -> int:
        return self.problem.batch

    @property
    def ids(self) -> torch.Tensor:
        """(row, pos) token ids of the pool's prompts (CPU)."""
        return self.problem.clean.input_ids.cpu()

    def reference(self) -> Sample:
        """Every row as itself: the references x."""
        return Sample(self.ids, self.values.clone(), torch.ones(self.n_rows, dtype=torch.bool))

    def describe(self) -> dict[str, object]:
        layouts = torch.bincount(self.keys)
        return {
            "pool": self.source,
            "pool_rows": self.n_rows,
            "variables": ", ".join(self.variables) or "none",
            "layouts": len(layouts),
            "rows_alone_in_layout": int((layouts[self.keys] < 2).sum()),
        }


@dataclass(frozen=True)
class Sample:
    """One resampled input per pool row: ids (row, pos), values (row, variable), ok (row,)
    False where no valid resample exists; reason says why for those rows."""

    ids: torch.Tensor
    values: torch.Tensor
    ok: torch.Tensor
    reason: str = ""


def make_pool(
    problem: PatchingProblem,
    slots: torch.Tensor,
    values: torch.Tensor,
    variables: Sequence[str],
    lists: Sequence[int] | None = None,
    source: str = "by hand",
) -> ResamplePool:
    """A pool from explicit variables: slots (row, pos) the variable index holding each token
    (-1 none), values (row, variable) value ids (-1 absent); lists default: variables whose
    values ever coincide in the pool form one list."""
    n, width = problem.clean.input_ids.shape
    slots, values = slots.long().cpu(), values.long().cpu()
    if tuple(slots.shape) != (n, width) or tuple(values.shape) != (n, len(variables)):
        raise WildcircuitsError(
            f"pool variables: slots must be (row, pos) = {(n, width)} and values (row, "
            f"variable) = {(n, len(variables))}; got {tuple(slots.shape)}, {tuple(values.shape)}"
        )
    lists = tuple(lists) if lists is not None else _infer_lists(values)
    keys = _layout_keys(problem, slots)
    names, index = position_index(problem)
    return ResamplePool(
        problem=problem, variables=tuple(variables), lists=lists, values=values, slots=slots,
        keys=keys, varying=_varying(problem.clean.input_ids.cpu(), slots, keys),
        position_names=names, position_slots=index.cpu(), source=source,
    )  # fmt: skip


def _infer_lists(values: torch.Tensor) -> tuple[int, ...]:
    """Union the variables whose value sets overlap (they were drawn from one list)."""
    n_vars = values.shape[1]
    parent = list(range(n_vars))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    sets = [set(values[:, v][values[:, v] >= 0].tolist()) for v in range(n_vars)]
    for a in range(n_vars):
        for b in range(a + 1, n_vars):
            if sets[a] & sets[b]:
                parent[root(b)] = root(a)
    return tuple(root(v) for v in range(n_vars))


def _layout_keys(problem: PatchingProblem, slots: torch.Tensor) -> torch.Tensor:
    """(row,) ids: rows share one when group, attention mask, named positions and the variable
    holding each token (`slots`: a multi-token entity's length) agree."""
    mask = problem.clean.attention_mask.cpu()
    named = [problem.named_positions[k].cpu() for k in sorted(problem.named_positions)]
    groups = problem.groups.cpu() if problem.groups is not None else torch.zeros(problem.batch)
    seen: dict[tuple, int] = {}
    keys = []
    for row in range(problem.batch):
        key = (
            int(groups[row]), tuple(mask[row].tolist()), tuple(int(p[row]) for p in named),
            tuple(slots[row].tolist()),
        )  # fmt: skip
        keys.append(seen.setdefault(key, len(seen)))
    return torch.tensor(keys)


def _varying(ids: torch.Tensor, slots: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(row, pos) bool: tokens that differ between rows of one layout and no variable holds."""
    varying = torch.zeros_like(ids, dtype=torch.bool)
    for key in keys.unique():
        rows = (keys == key).nonzero().squeeze(1)
        differs = (ids[rows] != ids[rows[0]]).any(dim=0)  # (pos,)
        varying[rows] = differs[None, :] & (slots[rows] < 0)
    return varying


def pool_from_dataset(model, dataset, corruption: str | None = None) -> ResamplePool:
    """The pool of a task `Dataset` built for `model`: its clean prompts (the problem of
    `problem_from_dataset`, `corruption` only for its provenance: scrubbing never reads the
    corrupted prompts) with the variables of `Example.metadata` (`{VAR}.{key}` entries): a
    variable holds every token of its occurrences (`IO`, `S1`, `S2` for S, ...): the token
    range of the occurrence's span (`Prompt.spans`, all of a multi-token entity) where the task
    marked one, else its named position. Its value is its metadata; values are compared by key
    and text, so variables drawn from one list (IO.name, S.name) share values and variables of
    different kinds (CC.century, XX.year) never do. Variables never in a prompt are left out; a
    token two variables claim is a TaskError (the task's spans overlap). The variables' lists
    are the task's (`Dataset.lists`) where it states them, else inferred from the values."""
    problem = problem_from_dataset(model, dataset, corruption)
    keys = (k for e in dataset.examples for k in e.metadata if "." in k)
    names = list(dict.fromkeys(k.split(".")[0] for k in keys))
    width = problem.clean.input_ids.shape[1]
    slots = torch.full((len(dataset), width), -1, dtype=torch.long)
    vocab: dict[str, int] = {}
    values = torch.full((len(dataset), len(names)), -1, dtype=torch.long)
    for row, example in enumerate(dataset.examples):
        for occurrence, (first, stop) in _occurrences(example.clean).items():
            variable = _variable_of(occurrence, names)
            if variable is None:
                continue
            index = names.index(variable)
            claimed = slots[row, first:stop]
            if bool(((claimed >= 0) & (claimed != index)).any()):
                raise TaskError(
                    f"task {dataset.task!r}: in example {row}, occurrence {occurrence!r} covers "
                    "a token another variable already holds; give each variable's spans their "
                    "own tokens"
                )
            slots[row, first:stop] = index
        for v, name in enumerate(names):
            fields = sorted(
                (k.split(".", 1)[1], x) for k, x in example.metadata.items()
                if k.split(".")[0] == name
            )  # fmt: skip
            if fields:
                values[row, v] = vocab.setdefault(repr(tuple(fields)), len(vocab))
    used = [v for v in range(len(names)) if bool((slots == v).any())]
    remap = torch.full((len(names) + 1,), -1, dtype=torch.long)
    remap[torch.tensor(used, dtype=torch.long)] = torch.arange(len(used))
    slots = remap[slots]  # -1 stays -1 (index -1 is the last, unused, entry)
    variables = [names[v] for v in used]
    return make_pool(
        problem, slots, values[:, used], variables, lists=_stated_lists(dataset, variables),
        source=f"task {dataset.task!r} metadata variables",
    )  # fmt: skip


def _stated_lists(dataset, variables: Sequence[str]) -> tuple[int, ...] | None:
    """The list ids of `variables` from `Dataset.lists`, or None (infer them) where the task
    states none; a task that states some must state every variable's."""
    if not dataset.lists:
        return None
    missing = [v for v in variables if v not in dataset.lists]
    if missing:
        raise TaskError(
            f"task {dataset.task!r} states the lists of its resampling variables but not of "
            f"{', '.join(missing)}; state every variable's list, or none"
        )
    order = list(dict.fromkeys(dataset.lists[v] for v in variables))
    return tuple(order.index(dataset.lists[v]) for v in variables)


def _occurrences(prompt) -> dict[str, tuple[int, int]]:
    """name -> (first token, stop) of a prompt's spans and, where a name has no span, its one
    named token."""
    out = {name: (token, token + 1) for name, token in prompt.positions.items()}
    out.update(prompt.spans)
    return out


def _variable_of(occurrence: str, variables: Sequence[str]) -> str | None:
    """`S2` -> `S`, `IO` -> `IO` (the task's occurrence names: VAR or VAR<n>); END -> None."""
    best = None
    for name in variables:
        rest = occurrence.removeprefix(name)
        fits = occurrence.startswith(name) and (rest == "" or rest.isdigit())
        if fits and (best is None or len(name) > len(best)):
            best = name
    return best


# drawing --------------------------------------------------------------------------------------
class Resampler:
    """Seeded draws from one pool (module doc). Every draw of one `label` uses its own
    generator, seeded from (seed, label): the same seed gives the same resamples."""

    def __init__(self, pool: ResamplePool, seed: int = 0):
        self.pool, self.seed = pool, seed

    def generator(self, label: str) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(label.encode()))

    def unscrubbable(self, positions: Sequence[str]) -> str | None:
        """Why claims depending on `positions` cannot be scrubbed on this pool, or None."""
        unknown = [p for p in positions if p not in self.pool.position_names]
        if unknown:
            return (
                f"the task does not name position {', '.join(unknown)} (its positions: "
                f"{', '.join(self.pool.position_names)})"
            )
        if not self.pool.variables:
            return "the task has no resampling variables (its examples carry no VAR.key metadata)"
        return None

    def free(self, label: str) -> Sample:
        """x_rand for every row: a random other row of its layout (ok False when alone)."""
        g, pool = self.generator(label), self.pool
        chosen = torch.full((pool.n_rows,), -1, dtype=torch.long)
        for row in range(pool.n_rows):
            others = self._layout(row)
            if len(others):
                chosen[row] = others[int(torch.randint(len(others), (1,), generator=g))]
        ok = chosen >= 0
        safe = chosen.clamp(min=0)
        return Sample(pool.ids[safe], pool.values[safe], ok, "" if bool(ok.all()) else
                      "no other prompt of the same layout in the pool")  # fmt: skip

    def agreeing(self, reference: Sample, positions: Sequence[str], label: str) -> Sample:
        """x' for every row: agrees with `reference` on the tokens at `positions` (module doc)."""
        g, pool = self.generator(label), self.pool
        wanted = torch.tensor([pool.position_names.index(p) for p in positions], dtype=torch.long)
        ids, values = reference.ids.clone(), reference.values.clone()
        ok = reference.ok.clone()
        reasons: set[str] = set()
        for row in range(pool.n_rows):
            if not ok[row]:
                continue
            at = torch.isin(pool.position_slots[row], wanted)  # (pos,) tokens of P
            if bool((pool.varying[row] & at).any()):
                ok[row] = False
                reasons.add(f"a token at {', '.join(positions)} varies but no variable holds it")
                continue
            held = pool.slots[row][at]
            held = held[held >= 0].unique()
            drawn = self._transplant(row, reference, held, g)
            if drawn is None:
                ok[row] = False
                reasons.add("no other prompt of the layout takes the kept values validly")
                continue
            if not bool((drawn[0][at] == reference.ids[row][at]).all()):
                ok[row] = False  # template text differs within a layout: never kept silently
                reasons.add(f"the prompts of a layout differ at {', '.join(positions)}")
                continue
            ids[row], values[row] = drawn
        return Sample(ids, values, ok, "; ".join(sorted(reasons)))

    def _layout(self, row: int) -> torch.Tensor:
        keys = self.pool.keys
        same = (keys == keys[row]).nonzero().squeeze(1)
        return same[same != row]

    def _transplant(self, row: int, reference: Sample, held: torch.Tensor, g):
        """(ids, values) of a random other row of the layout with `held` variables set to the
        reference's, among candidates where no list repeats a value; None if none."""
        pool = self.pool
        others = self._layout(row)
        if not len(others):
            return None
        values = pool.values[others].clone()  # (candidates, variable)
        values[:, held] = reference.values[row, held]
        valid = _distinct(values, pool.lists)
        candidates = others[valid]
        if not len(candidates):
            return None
        pick = int(candidates[int(torch.randint(len(candidates), (1,), generator=g))])
        ids = pool.ids[pick].clone()
        moved = torch.isin(pool.slots[row], held)
        ids[moved] = reference.ids[row][moved]
        new_values = pool.values[pick].clone()
        new_values[held] = reference.values[row, held]
        return ids, new_values


def _distinct(values: torch.Tensor, lists: Sequence[int]) -> torch.Tensor:
    """(candidates,) bool: no two present variables of one list share a value."""
    ok = torch.ones(values.shape[0], dtype=torch.bool)
    for a in range(values.shape[1]):
        for b in range(a + 1, values.shape[1]):
            if lists[a] == lists[b]:
                clash = (values[:, a] == values[:, b]) & (values[:, a] >= 0)
                ok &= ~clash
    return ok
