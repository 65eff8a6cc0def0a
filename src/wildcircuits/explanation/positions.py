"""Named positions of a problem, as one index per token (the position axis of a pair).

A (component, position) pair acts at one of the problem's named positions (`IO`, `S1`, `S2`,
`END`, ...), at `S1+1` (the token after S1, as the IOI paper uses) where `S1` exists, at `LOSS`
(a loss task's metric tokens: every loss position, e.g. induction's repeated half; they take
precedence over any other name they have), or at `other` (every unnamed real token, pooled).
`position_index` maps every token to one of them.

`PairSpace` turns a set of kept pairs into the edge engine's node-position mask (every other
pair's output replaced by its ablation value at its tokens). `score_pairs` ranks pairs by a
first-order attribution; `pair_evaluator` evaluates sets of pairs exactly.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from wildcircuits.discovery.common import loss_objective, masked_diff
from wildcircuits.errors import GraphError, WildcircuitsError
from wildcircuits.graph.graph import Graph
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.names import Node, NodeKind, Shape, parse_display_node
from wildcircuits.patching.ablation_spec import AblationKind, AblationSpec
from wildcircuits.patching.edge_ablation import AblationCache
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.results.explain import Pair, PairScore

OTHER = "other"
AFTER_S1 = "S1+1"
#: A loss task's metric tokens (every valid loss position), one position group.
LOSS = "LOSS"


def position_names(problem: PatchingProblem) -> tuple[str, ...]:
    """Named positions in prompt order (mean token index over rows, then name), with `LOSS`
    (a loss task's metric tokens) among them, then `S1+1` where `S1` exists, then `other`."""
    named = {k: v.float().mean() for k, v in problem.named_positions.items()}
    if problem.multi_position:
        valid = problem.position_mask.to(problem.positions.device)
        named[LOSS] = problem.positions[valid].float().mean()
    order = sorted(named, key=lambda name: (float(named[name]), name))
    after = (AFTER_S1,) if "S1" in named and AFTER_S1 not in named else ()
    return (*order, *after, OTHER)


def metric_share(problem: PatchingProblem, mask: torch.Tensor) -> torch.Tensor:
    """(batch,) float: the share of each row's metric tokens (one, or a loss task's valid loss
    positions) at which `mask` (batch, pos) is True."""
    metric = problem.metric_tokens().to(mask.device)  # (batch, pos)
    return (mask & metric).sum(1).float() / metric.sum(1).clamp(min=1).float()


def position_index(problem: PatchingProblem) -> tuple[tuple[str, ...], torch.Tensor]:
    """names (see `position_names`) and a (batch, pos) long tensor giving each token's index
    into names: padding -1, unnamed real tokens `other`. A token two names share goes to the
    one that comes first in names; `S1+1` yields to any named position."""
    names = position_names(problem)
    real = problem.clean.attention_mask.bool()  # (batch, pos)
    index = torch.where(real, len(names) - 1, -1).long()  # (batch, pos)
    rows = torch.arange(problem.batch, device=index.device)
    width = index.shape[1]
    if AFTER_S1 in names:
        after = problem.named_positions["S1"].to(index.device) + 1  # (batch,)
        ok = after < width
        index[rows[ok], after[ok]] = names.index(AFTER_S1)
    for slot in reversed(range(len(names) - 1)):
        name = names[slot]
        if name in problem.named_positions:
            index[rows, problem.named_positions[name].to(index.device)] = slot
    if LOSS in names:  # every metric token of a loss task is LOSS, whatever else it is named
        index[problem.metric_tokens().to(index.device)] = names.index(LOSS)
    return names, torch.where(real, index, -1)


# candidate pairs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairSpace:
    """The (component, position) pairs of one problem on the edge graph.

    names: position names (`position_names`); index: (batch, pos) each token's slot in names
    (padding -1); graph: the edge graph (senders are its columns); present: the slots at least
    one real token has. A pair is (slot, sender column); `input` is always kept."""

    graph: Graph
    names: tuple[str, ...]
    index: torch.Tensor
    present: tuple[int, ...]

    def all_pairs(self, nodes: Iterable[Node] | None = None) -> tuple[Pair, ...]:
        """Every head / MLP (or those in `nodes`) at every present position, layer order."""
        allowed = None if nodes is None else set(nodes)
        return tuple(
            Pair(node.display, self.names[slot])
            for node in self.graph.senders[1:]
            if allowed is None or node in allowed
            for slot in self.present
        )

    def cell(self, pair: Pair) -> tuple[int, int]:
        """(position slot, sender column) of a pair; unknown component or position raises."""
        node = parse_display_node(pair.node, self.graph.shape)
        if node.kind not in (NodeKind.HEAD, NodeKind.MLP):
            raise GraphError(f"pair {pair.name}: only heads and MLPs act at positions")
        if pair.position not in self.names:
            raise GraphError(
                f"pair {pair.name}: unknown position {pair.position!r}; this problem's positions "
                f"are {', '.join(self.names)}"
            )
        return self.names.index(pair.position), self.graph.sender_index[node]

    def kept(self, pairs: Iterable[Pair] | None) -> torch.Tensor:
        """(slot, sender) bool: the kept pairs (None: every pair), `input` always."""
        if pairs is None:
            return torch.ones(len(self.names), self.graph.n_senders, dtype=torch.bool)
        kept = torch.zeros(len(self.names), self.graph.n_senders, dtype=torch.bool)
        kept[:, 0] = True
        for pair in pairs:
            kept[self.cell(pair)] = True
        return kept

    def mask(self, kept: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """(rows, pos, sender) bool node-position mask (`EdgeForward.run(node_ablated=)`):
        True where a token's pair is not kept; padding never."""
        index = self.index if rows is None else self.index[rows]  # (rows, pos)
        kept = kept.to(index.device)
        ablated = ~kept[index.clamp(min=0)]  # (rows, pos, sender)
        return ablated & (index >= 0)[:, :, None]


def pair_space(graph: Graph, problem: PatchingProblem) -> PairSpace:
    """The pairs of `problem` (its named positions) on `graph`."""
    names, index = position_index(problem)
    present = tuple(sorted(int(s) for s in index.unique().tolist() if s >= 0))
    return PairSpace(graph, names, index, present)


def parse_pair(text: str, shape: Shape | None = None) -> Pair:
    """`L3.H2@END` -> Pair("L3.H2", "END"); the component must be a head or an MLP."""
    node, at, position = text.partition("@")
    if not at or not position:
        raise GraphError(f"pair {text!r}: expected COMPONENT@POSITION, e.g. L3.H2@END")
    parsed = parse_display_node(node.strip(), shape)
    if parsed.kind not in (NodeKind.HEAD, NodeKind.MLP):
        raise GraphError(f"pair {text!r}: only heads and MLPs act at positions")
    return Pair(parsed.display, position.strip())


def candidate_nodes(graph: Graph, nodes: Iterable[Node | str] | None) -> frozenset[Node] | None:
    """Heads / MLPs to restrict the candidates to (display names or Nodes); None: all."""
    if nodes is None:
        return None
    parsed = frozenset(
        node if isinstance(node, Node) else parse_display_node(node, graph.shape) for node in nodes
    )
    bad = [node.display for node in parsed if node.kind not in (NodeKind.HEAD, NodeKind.MLP)]
    if bad:
        raise GraphError(f"nodes {', '.join(bad)}: candidates are heads and MLPs only")
    return parsed


# attribution ------------------------------------------------------------------------------------
def score_pairs(
    model: InstrumentedModel,
    problem: PatchingProblem,
    spec: AblationSpec | str = "counterfactual",
    nodes: Iterable[Node | str] | None = None,
    batch_size: int = 16,
    engine: EdgeForward | None = None,
    progress: bool = False,
    steps: int = 1,
) -> tuple[PairScore, ...]:
    """First-order estimate of removing each (component, position) pair, sorted by |score|.

    score(u, P) = sum over rows and the tokens t at position P of (a_u - z_u) . dL/dz_u, on
    the clean run, with dL/dz_u = sum over u's receivers v of dL/dx_v (one forward-backward
    per chunk of rows, `EdgeForward.receiver_gradients`); L is the batch-mean loss, so a
    positive score means removing the pair hurts the metric (`discovery.common`'s sign).
    steps > 1 (counterfactual only): dL/dz_u averaged over `steps` runs whose input
    embeddings interpolate from the corrupted to the clean prompt (alpha = k / steps, k = 0 ..
    steps - 1, as `eap-ig-inputs`), `steps` forward-backwards per chunk."""
    engine = engine or EdgeForward(model)
    graph, space = engine.graph, pair_space(engine.graph, problem)
    cache = AblationCache(engine, problem, spec, batch_size)
    if steps < 1 or (steps > 1 and cache.spec.kind is not AblationKind.COUNTERFACTUAL):
        raise WildcircuitsError(
            f"attribution steps={steps}: give 1, or more than 1 with counterfactual ablation "
            "only (the integrated path runs from the corrupted prompt's embeddings)"
        )
    valid = graph.valid.to(device=model.device, dtype=model.dtype)  # (receiver, sender)
    totals = torch.zeros(len(space.names), graph.n_senders, dtype=torch.float64)
    parts = problem.chunks(batch_size)
    for rows, part in tqdm(parts, desc="pair attribution", disable=not progress, file=sys.stderr):
        # counterfactual: the columns every clean and corrupted prompt share have a zero
        # difference, so the runs cover the later columns only (`edge_prefix`), the corrupted
        # one too (the same computation as the clean run's: equal outputs stay equal)
        prefix = cache.prefix(part)
        if prefix is None:
            values = cache.values(part)  # (batch | 1, pos | 1, sender, d_model)
        else:
            values = engine.outputs(part.clean, model.embed(part.corrupted), prefix)
        skip = 0 if prefix is None else prefix.length
        clean, receiver_grads = _gradients(engine, part, problem.batch, steps, prefix)
        diff = masked_diff(values, clean, part.clean.attention_mask[:, skip:])
        del values, clean
        grads = torch.einsum("bprd,rs->bpsd", receiver_grads, valid)  # dL/dz_u
        per_token = (diff * grads).sum(-1)  # (batch, pos, sender)
        index = space.index[rows][:, skip:].to(per_token.device)
        one_hot = torch.nn.functional.one_hot(index.clamp(min=0), len(space.names))
        one_hot = one_hot * (index >= 0)[:, :, None]  # padding counts nowhere
        totals += torch.einsum("bpn,bps->ns", one_hot.to(per_token.dtype), per_token).cpu()
    allowed = candidate_nodes(graph, nodes)
    scores = [PairScore(pair, float(totals[space.cell(pair)])) for pair in space.all_pairs(allowed)]
    return tuple(sorted(scores, key=lambda s: -abs(s.attribution)))


def _gradients(engine: EdgeForward, part: PatchingProblem, total_rows: int, steps: int, prefix):
    """(clean sender outputs, receiver gradients (batch, pos, receiver, d_model) at the clean
    run, or averaged over the interpolated runs when steps > 1); with a prefix, both at the
    columns after it only."""
    objective = loss_objective(part, total_rows)
    if steps == 1:
        run = engine.receiver_gradients(
            part.clean, part.positions, objective, keep_outputs=True, prefix=prefix
        )
        return run.outputs, run.receiver_grads
    model = engine.model
    clean_embeds, corrupted_embeds = model.embed(part.clean), model.embed(part.corrupted)
    batch, pos = part.clean.input_ids.shape
    pos -= 0 if prefix is None else prefix.length
    grads = clean_embeds.new_zeros(batch, pos, engine.graph.n_receivers, model.d_model)
    for k in range(steps):
        embeds = corrupted_embeds + (k / steps) * (clean_embeds - corrupted_embeds)
        engine.receiver_gradients(
            part.clean, part.positions, objective, input_embeds=embeds, accumulate=grads,
            prefix=prefix,
        )  # fmt: skip
    return engine.outputs(part.clean, prefix=prefix), grads / steps
