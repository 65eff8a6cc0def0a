"""Causal scrubbing (Chan et al. 2022, Redwood Research) of a hypothesis file.

The hypothesis's claims become resampling rules (docs/scrubbing.md; `CONVENTION` says them in
one paragraph). For a reference prompt x, with x_rand a random other prompt of x's layout:
- a class C is computed on its own resample x'_C, which agrees with its reference on the tokens
  at C's `depends_on.positions` (`resampling.Resampler.agreeing`); in that run the members'
  inputs get the embeddings of x'_C, the outputs of C's own earlier members (at their member
  tokens: the class computes as one unit), the outputs of every claimed sender class D (through the
  claimed slot, at D's member tokens) as D computed on *its* resample, which agrees with x'_C on
  D's positions (recursively: the treeification is as deep as the class graph; D enters with
  only its members computed before C's last member, so a cycle of class paths unrolls member by
  member and ends), and every other sender output from x_rand;
- the logits read the classes with a claimed path into them, as computed on their resamples,
  and everything else from x_rand.
`scrub` reports loss recovered = (L_random - L_scrubbed) / (L_random - L_model) for the whole
hypothesis and for each claim alone (the rest of the model clean: see `CONVENTION`), each with
a paired bootstrap interval over prompts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from wildcircuits.errors import WildcircuitsError
from wildcircuits.evaluation.bootstrap import N_BOOT, bootstrap
from wildcircuits.explanation.hypothesis import LOGITS, ClaimedClass, ClaimedPath, Hypothesis
from wildcircuits.models.tokens import tokens_from_ids
from wildcircuits.names import NodeKind, parse_display_node
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.results.verify import Estimate, Scrubbing, ScrubClaim
from wildcircuits.verification.resampling import ResamplePool, Resampler, Sample
from wildcircuits.verification.scrub_runs import Chunk, Runs, members_of

#: The most class runs the whole hypothesis's tree may need by default (a class reached by many
#: claimed paths is computed once per path into it, treeified, and identical subtrees once;
#: each run costs about one forward per chunk of prompts); a bigger tree is reported as not
#: scrubbable, with the runs it needs.
MAX_TREE = 64
#: Trees with more nodes than this many times max_tree are not built: drawing one node's
#: resample costs about 27 ms on 32 prompts (entity_tracking SmolLM2: 1,225 nodes in 33 s), so
#: induction SmolLM2's 82,980-node tree would take over half an hour only to be refused.
NODES_PER_RUN = 16

CONVENTION = (
    "causal scrubbing (Chan et al. 2022), treeified to the full depth of the claimed class "
    "graph (a sender class entering a receiver's run with only its members computed before "
    "the receiver's last member, so a cycle of class paths unrolls member by member): each "
    "class is computed on a resample x' of its reference that keeps the tokens at "
    "its depends_on positions (same layout; the variables holding them transplanted into a "
    "random other prompt of the layout, skipping candidates where two variables of one list "
    "would share a value), its members' inputs taking x''s embeddings, the class's own "
    "earlier members' outputs from the same run (at their member tokens), each claimed sender "
    "class's output (at that class's member tokens; for q / in only at the path's positions) "
    "as computed on the sender's own resample of x', and every other sender output from x_rand "
    "(one random other prompt of x's layout per reference, shared by every unclaimed edge of a "
    "scrub and by every scrub); the logits read the classes with a path into them and x_rand "
    "for the rest; unexplained pairs and everything outside the classes are x_rand. "
    "Claims alone, the rest of the model clean on x: a class (its members' outputs from the "
    "class run on x' with claimed inputs held at x's clean values), a path (the receiver's "
    "slot reads the sender class's clean output on the sender's resample of x, the receiver "
    "nodes' other tokens held clean), the logits (claimed classes clean, everything else into "
    "the logits from x_rand). loss recovered = (L_random - L_scrubbed) / (L_random - L_model) "
    "with L = -metric (higher metric is better; the ratio is the same for either sign), L_model "
    "the clean run, L_random x_rand's run scored on x's targets, means over the rows with a "
    "valid resample; interval: paired percentile bootstrap over prompts."
)


@dataclass(frozen=True)
class TreeNode:
    """A class computed on `sample`, with its claimed in-paths' senders as children."""

    claimed: ClaimedClass
    sample: Sample
    children: tuple[tuple[ClaimedPath, TreeNode], ...]

    def ok(self) -> torch.Tensor:
        ok = self.sample.ok.clone()
        for _, child in self.children:
            ok &= child.ok()
        return ok

    def key(self, rows: slice) -> tuple:
        ids = self.sample.ids[rows].numpy().tobytes()
        children = tuple(child.key(rows) for _, child in self.children)
        return (self.claimed.name, self.claimed.members, ids, children)

    def reasons(self) -> set[str]:
        out = {self.sample.reason} if self.sample.reason else set()
        for _, child in self.children:
            out |= child.reasons()
        return out


def build_tree(
    h: Hypothesis, claimed: ClaimedClass, reference: Sample, draw: Resampler, label: str
) -> TreeNode:
    """The treeified resamples of `claimed` relative to `reference` (module doc), with a child
    per `tree_children` entry."""
    sample = draw.agreeing(reference, claimed.depends_on.positions, f"{label}/{claimed.name}")
    children = tuple(
        (path, build_tree(h, sender, sample, draw, f"{label}/{claimed.name}<{path.sender}"))
        for path, sender in tree_children(h, claimed)
    )
    return TreeNode(claimed, sample, children)


def tree_children(h: Hypothesis, claimed: ClaimedClass) -> list[tuple[ClaimedPath, ClaimedClass]]:
    """(path, sender) for each claimed path into `claimed` whose sender keeps a member: a
    sender class enters a receiver's run only through its members upstream of some receiver
    member (`upstream_members`; the others cannot reach it), so a cycle of claimed class paths
    (classes at one position spanning many layers, e.g. MLPs and duplicate-token heads at S2)
    unrolls member by member and ends: each turn round it keeps only earlier members."""
    out = []
    for path in h.paths_into(claimed.name):
        sender = upstream_members(h.class_named(path.sender), claimed)
        if sender.members:
            out.append((path, sender))
    return out


def _order(pair) -> int:
    """Where a member computes in the forward: 2 * layer, + 1 for an MLP (after the heads)."""
    node = parse_display_node(pair.node)
    return 2 * node.layer + (1 if node.kind is NodeKind.MLP else 0)


def upstream_members(sender: ClaimedClass, receiver: ClaimedClass) -> ClaimedClass:
    """`sender` with only the members computed before the receiver's last member (a head
    before an MLP of its own layer): the only ones whose output a receiver member can read."""
    last = max(_order(p) for p in receiver.members)
    return replace(sender, members=tuple(p for p in sender.members if _order(p) < last))


# one claim's plan ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """One scrub: its claim text and kind, rows with a valid resample, and how to compute the
    scrubbed logits of a chunk (None with `note` when it cannot be scrubbed)."""

    claim: str
    kind: str
    ok: torch.Tensor | None
    logits: Callable[[Runs, Chunk], torch.Tensor] | None
    note: str = ""


def _positions_needed(h: Hypothesis, names) -> list[str]:
    return list(dict.fromkeys(p for n in names for p in h.class_named(n).depends_on.positions))


def _whole(h: Hypothesis, draw: Resampler, free: Sample, max_tree: int = MAX_TREE) -> Plan:
    claim = "the whole hypothesis"
    why = draw.unscrubbable(_positions_needed(h, [c.name for c in h.classes]))
    if why:
        return Plan(claim, "whole", None, None, why)
    nodes = sum(tree_nodes(h, h.class_named(p.sender)) for p in h.paths_into(LOGITS))
    if nodes > NODES_PER_RUN * max_tree:
        note = (f"the treeified hypothesis has {nodes} tree nodes, more than {NODES_PER_RUN} x "
                f"max_tree = {NODES_PER_RUN * max_tree}, so it was not built (verify settings "
                "max_tree raises it)")  # fmt: skip
        return Plan(claim, "whole", None, None, note)
    reference = draw.pool.reference()
    top = tuple(
        (p, build_tree(h, h.class_named(p.sender), reference, draw, "whole"))
        for p in h.paths_into(LOGITS)
    )
    runs = distinct_runs(node for _, node in top)
    if runs > max_tree:
        note = (f"the treeified hypothesis needs {runs} class runs, more than max_tree = "
                f"{max_tree} ({nodes} tree nodes, identical subtrees run once; each run "
                "is about one forward per chunk; verify settings max_tree raises it)")  # fmt: skip
        return Plan(claim, "whole", None, None, note)
    ok = free.ok.clone()
    for _, node in top:
        ok &= node.ok()

    def logits(runs: Runs, chunk: Chunk) -> torch.Tensor:
        memo: dict[tuple, dict[int, torch.Tensor]] = {}
        base = chunk.r_state.outputs
        extra: dict[int, torch.Tensor] = {}
        for path, node in top:
            outs = _node_outputs(runs, node, chunk, memo)
            _add(extra, runs.path_extra(path, node.claimed, None, chunk.rows, outs, base))
        return runs.logits(chunk.r_state, chunk.tokens, chunk.positions, extra)

    reasons = set().union(*(n.reasons() for _, n in top)) if top else set()
    return Plan(claim, "whole", ok, logits, "; ".join(sorted(reasons)))


def tree_nodes(h: Hypothesis, claimed: ClaimedClass, memo: dict | None = None) -> int:
    """The nodes `build_tree` makes for `claimed`, counted from the class graph alone (the
    tree's shape does not depend on the resamples; `memo` keeps each (class, members) count, so
    a big tree is counted without walking it)."""
    memo = {} if memo is None else memo
    key = (claimed.name, claimed.members)
    if key not in memo:
        memo[key] = 1 + sum(tree_nodes(h, sender, memo) for _, sender in tree_children(h, claimed))
    return memo[key]


def distinct_runs(nodes) -> int:
    """The class runs a tree needs: its nodes, identical subtrees (the same class on the same
    resampled ids for every row, with identical children) counted once, as `_node_outputs`
    runs them (its memo is per chunk, so a chunk may need fewer)."""
    seen: set[tuple] = set()
    todo = list(nodes)
    while todo:
        node = todo.pop()
        key = node.key(slice(None))
        if key not in seen:
            seen.add(key)
            todo.extend(child for _, child in node.children)
    return len(seen)


def _node_outputs(runs: Runs, node: TreeNode, chunk: Chunk, memo) -> dict[int, torch.Tensor]:
    """sender column -> (rows, pos, d_model): the class's members' outputs in its class run
    (children first; identical subtrees, e.g. a resample equal to its reference, run once)."""
    key = node.key(chunk.rows)
    if key in memo:
        return memo[key]
    base = chunk.r_state.outputs
    extra: dict[int, torch.Tensor] = {}
    for path, child in node.children:
        outs = _node_outputs(runs, child, chunk, memo)
        _add(extra, runs.path_extra(path, child.claimed, node.claimed, chunk.rows, outs, base))
    full = runs.class_run(node.claimed, chunk.tokens_of(node.sample.ids), chunk, extra)
    columns = runs.member_tokens(node.claimed, chunk.rows)
    memo[key] = {col: full[:, :, col].clone() for col in columns}
    return memo[key]


def _class_alone(h: Hypothesis, claimed: ClaimedClass, draw: Resampler, free: Sample) -> Plan:
    claim = f"class {claimed.name}"
    why = draw.unscrubbable(claimed.depends_on.positions)
    if why:
        return Plan(claim, "class", None, None, why)
    sample = draw.agreeing(draw.pool.reference(), claimed.depends_on.positions, claim)
    into = h.paths_into(claimed.name)

    def logits(runs: Runs, chunk: Chunk) -> torch.Tensor:
        clean, base = chunk.x_state.outputs, chunk.r_state.outputs
        extra: dict[int, torch.Tensor] = {}
        for path in into:
            sender = h.class_named(path.sender)
            outs = members_of(clean, runs.member_tokens(sender, chunk.rows))
            _add(extra, runs.path_extra(path, sender, claimed, chunk.rows, outs, base))
        full = runs.class_run(claimed, chunk.tokens_of(sample.ids), chunk, extra)
        return runs.splice(chunk, runs.node_mask(claimed, chunk.rows, members=True), full)

    return Plan(claim, "class", sample.ok & free.ok, logits, sample.reason)


def path_label(path: ClaimedPath) -> str:
    """`path name mover -> logits (logits) at END` (the verdicts' claim text)."""
    at = ", ".join(path.positions)
    return f"path {path.sender} -> {path.receiver} ({path.slot.value}) at {at}"


def _path_alone(h: Hypothesis, path: ClaimedPath, draw: Resampler, free: Sample) -> Plan:
    claim = path_label(path)
    sender = h.class_named(path.sender)
    why = draw.unscrubbable((*sender.depends_on.positions, *path.positions))
    if why:
        return Plan(claim, "path", None, None, why)
    sample = draw.agreeing(draw.pool.reference(), sender.depends_on.positions, claim)
    receiver = None if path.receiver == LOGITS else h.class_named(path.receiver)

    def logits(runs: Runs, chunk: Chunk) -> torch.Tensor:
        state = runs.state(chunk.tokens_of(sample.ids))
        outs = members_of(state.outputs, runs.member_tokens(sender, chunk.rows))
        clean = chunk.x_state.outputs
        extra = runs.path_extra(path, sender, receiver, chunk.rows, outs, clean)
        if receiver is None:
            return runs.logits(chunk.x_state, chunk.tokens, chunk.positions, extra)
        mask = runs.node_mask(receiver, chunk.rows, members=False)
        return runs.splice(chunk, mask, clean, extra)

    return Plan(claim, "path", sample.ok & free.ok, logits, sample.reason)


def _logits_alone(h: Hypothesis, free: Sample) -> Plan:
    """The logits read only the claimed classes' members (everything else from x_rand)."""
    senders = [h.class_named(p.sender) for p in h.paths_into(LOGITS)]

    def logits(runs: Runs, chunk: Chunk) -> torch.Tensor:
        clean, base = chunk.x_state.outputs, chunk.r_state.outputs
        delta = base - clean  # (rows, pos, sender, d_model)
        keep = torch.zeros(delta.shape[:3], dtype=torch.bool, device=delta.device)
        for sender in senders:
            for col, hit in runs.member_tokens(sender, chunk.rows).items():
                keep[:, :, col] |= hit.to(delta.device)
        extra = (delta * (~keep)[..., None].to(delta.dtype)).sum(dim=2)
        row = runs.graph.logits_receiver
        return runs.logits(chunk.x_state, chunk.tokens, chunk.positions, {row: extra})

    return Plan("logits", "class", free.ok.clone(), logits)


def _add(into: dict[int, torch.Tensor], more: dict[int, torch.Tensor]) -> None:
    for row, value in more.items():
        into[row] = into[row] + value if row in into else value


def plans(h: Hypothesis, draw: Resampler, free: Sample, max_tree: int = MAX_TREE) -> list[Plan]:
    """The whole hypothesis (at most `max_tree` class runs), each class alone, each path alone,
    the logits alone."""
    out = [_whole(h, draw, free, max_tree)]
    out += [_class_alone(h, c, draw, free) for c in h.classes]
    out += [_path_alone(h, p, draw, free) for p in h.paths]
    out.append(_logits_alone(h, free))
    return out


# the scrub ----------------------------------------------------------------------------------
def scrub(
    model,
    pool: ResamplePool,
    hypothesis: Hypothesis,
    seed: int = 0,
    n_boot: int = N_BOOT,
    batch_size: int = 16,
    engine: EdgeForward | None = None,
    progress: bool = True,
    max_tree: int = MAX_TREE,
) -> Scrubbing:
    """Causal scrubbing of `hypothesis` on `pool` (module doc; `CONVENTION`); `max_tree`: the
    most class runs the whole hypothesis's treeified scrub may take."""
    if batch_size < 1:
        raise WildcircuitsError(f"batch_size must be >= 1, got {batch_size}")
    engine = engine or EdgeForward(model)
    draw = Resampler(pool, seed)
    free = draw.free("x_rand")
    todo = plans(hypothesis, draw, free, max_tree)
    metrics = measure(engine, pool, todo, free, batch_size, progress)
    m_model, m_random, scrubbed, forwards = metrics
    claims = tuple(
        _claim(plan, m_model, m_random, scrubbed[i], n_boot, seed) for i, plan in enumerate(todo)
    )
    ok = free.ok
    return Scrubbing(
        convention=CONVENTION,
        m_model=float(m_model[ok].mean()) if bool(ok.any()) else float("nan"),
        m_random=float(m_random[ok].mean()) if bool(ok.any()) else float("nan"),
        claims=claims, seed=seed, forwards=forwards,
    )  # fmt: skip


def measure(engine, pool: ResamplePool, todo: list[Plan], free: Sample, batch_size: int,
            progress: bool = False):  # fmt: skip
    """Per-row metrics (float64, (rows,)): the model, x_rand, and each plan's scrub (NaN where
    the plan cannot run), and the number of forwards."""
    problem = pool.problem
    runs = Runs(engine, pool.position_names, pool.position_slots)
    n = problem.batch
    m_model, m_random = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    scrubbed = torch.full((len(todo), n), float("nan"), dtype=torch.float64)
    parts = problem.chunks(batch_size)
    bar = tqdm(parts, desc="causal scrubbing", disable=not progress, file=sys.stderr)
    for rows, part in bar:
        x_state = runs.state(part.clean)
        mask = part.clean.attention_mask
        r_tokens = tokens_from_ids(free.ids[rows].to(mask.device), mask)
        chunk = Chunk(rows, part.clean, part.positions, x_state, runs.state(r_tokens))
        m_model[rows] = _score(problem, runs.logits(x_state, part.clean, part.positions), rows)
        logits = runs.logits(chunk.r_state, r_tokens, part.positions)
        m_random[rows] = _score(problem, logits, rows)
        for i, plan in enumerate(todo):
            if plan.logits is not None and bool(plan.ok[rows].any()):
                scrubbed[i, rows] = _score(problem, plan.logits(runs, chunk), rows)
    return m_model, m_random, scrubbed, runs.forwards


def _score(problem, logits: torch.Tensor, rows: slice) -> torch.Tensor:
    return problem.score(logits, rows).double().cpu()


def loss_recovered(rows: torch.Tensor) -> float:
    """rows (3, b): model, random, scrubbed metrics -> (m_s - m_r) / (m_m - m_r) of the means
    (= (L_random - L_scrubbed) / (L_random - L_model) with L = -m, and with L = m)."""
    model, random, scrubbed = rows.mean(dim=1)
    return float((scrubbed - random) / (model - random))


def _claim(plan: Plan, m_model, m_random, scrubbed, n_boot: int, seed: int) -> ScrubClaim:
    if plan.logits is None:
        return ScrubClaim(plan.claim, plan.kind, None, None, 0, f"not scrubbable: {plan.note}")
    ok = plan.ok & torch.isfinite(scrubbed)
    n_ok, n = int(ok.sum()), len(ok)
    note = plan.note
    if n_ok < n:
        note = f"{n - n_ok} of {n} prompts had no valid resample ({note or 'x_rand'})"
    if n_ok == 0:
        return ScrubClaim(plan.claim, plan.kind, None, None, 0, note)
    rows = torch.stack([m_model[ok], m_random[ok], scrubbed[ok]])
    estimate: Estimate = bootstrap(rows, loss_recovered, n_boot=n_boot, seed=seed)
    return ScrubClaim(plan.claim, plan.kind, estimate, float(scrubbed[ok].mean()), n_ok, note)
