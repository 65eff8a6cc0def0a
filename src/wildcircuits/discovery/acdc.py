"""ACDC (Conmy et al. 2023): greedy edge pruning, made practical on a CPU.

Receivers are visited in reverse topological order (logits, then each layer's MLP, v, k and q
slots from the last layer down). For each incoming edge of a receiver (latest sender first) the
edge is ablated on top of the current circuit; it is removed for good if the loss worsens by
less than `threshold` (tau). Greedy, cumulative and order dependent, as in the original.

The loss is KL(clean || circuit) at the metric position (true KL summed over the vocabulary,
mean over the batch) by default, or the task metric's loss (-metric when higher is better).

Speed-ups, none of which change the result:
- every candidate forward starts at the receiver's layer from a cached state (edges into that
  receiver change nothing before it; removals so far only touch later receivers);
- candidates of one receiver are evaluated `candidates` at a time in one batched forward,
  speculating that each is removed (copy j removes the first j candidates, cumulatively); a
  rejected candidate invalidates the later copies, which are evaluated again;
- logits are computed at the metric position only;
- rows are grouped by their padding (`PatchingProblem.by_length`) and each group runs without
  the padding columns it shares (IOI on Gemma3: 14% fewer token positions);
- copies share the senders before the resume layer (`EdgeForward.run_from(copies=...)`).
Optional pre-filtering (`prefilter_top`) keeps only the edges with the largest |EAP| scores as
candidates and removes the rest at the start; the filtered-out count is reported in the settings.

Scores: the loss increase measured when the edge was tested, so `score >= threshold` is exactly
the final ACDC circuit. Pre-filtered (never tested) edges score 0 when tau > 0: outside the
circuit, and last when edges are ranked by |score| (a large negative floor would put them first
there); with tau <= 0 they score below every tested edge.
Progress is saved to `checkpoint` (atomic) after every receiver; a rerun with the same problem and
settings resumes there.
"""

from __future__ import annotations

import hashlib
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from wildcircuits.discovery.common import AblatingConfig, edge_scores, settings_of
from wildcircuits.discovery.registry import DiscoveryError, get_method, register
from wildcircuits.patching.ablation_spec import EDGE_ABLATIONS, AblationKind
from wildcircuits.patching.edge_ablation import AblationCache
from wildcircuits.patching.edges import EdgeForward, Resume
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.results import atomic_write_bytes


@dataclass(frozen=True)
class AcdcConfig(AblatingConfig):
    """ablation (keyword): counterfactual (default), mean (e.g. "mean", "mean:clean:pooled") or
    zero; the other fields are ACDC's settings."""

    METHOD = "acdc"
    ABLATIONS = EDGE_ABLATIONS

    threshold: float = 0.01
    loss: str = "kl"  # "kl" or "metric"
    candidates: int = 8  # candidate edges per batched forward (bounded by max_rows)
    max_rows: int = 128  # batch rows per forward (candidates x examples)
    prefilter_top: int | None = None  # keep only this many edges (by |EAP|) as candidates
    checkpoint: str | None = None
    progress: bool = True


@register("acdc", AcdcConfig, "ACDC greedy edge pruning (KL or metric, threshold tau)")
def acdc(model, problem: PatchingProblem, config: AcdcConfig):
    """Run ACDC; returns EdgeScores whose `score >= config.threshold` edges form the circuit."""
    _check(config)
    search = _Search(model, problem, config)
    search.run()
    return edge_scores(
        search.graph, search.final_scores(), "acdc", config, problem, extra=search.facts(),
        ablation=search.cache.spec,
    )  # fmt: skip


def _check(config: AcdcConfig) -> None:
    if config.loss not in ("kl", "metric"):
        raise DiscoveryError(f"acdc loss must be 'kl' or 'metric', got {config.loss!r}")
    if config.candidates < 1 or config.max_rows < 1:
        raise DiscoveryError("acdc candidates and max_rows must be >= 1")


@dataclass
class _Part:
    """One padding group of the problem: ablation values, clean log-probs at the metric position,
    and (set during the search) the base run's sender outputs and the current resume state."""

    problem: PatchingProblem
    ablation: torch.Tensor  # (rows or 1, pos, sender, d_model)
    clean_logprobs: torch.Tensor  # (rows, [k,] vocab)
    clean_probs: torch.Tensor
    base_outputs: torch.Tensor | None = None  # (rows, pos, sender, d_model)
    state: Resume | None = None

    def edge_diff(self, sender: int) -> torch.Tensor:
        """a_u - z_u for sender u in the run every candidate starts from: (rows, pos, d)."""
        base = self.base_outputs[:, :, sender]
        return (self.ablation[:, :, sender] - base).expand_as(base)

    def losses(self, logits: torch.Tensor, loss: str) -> torch.Tensor:
        """(copy, rows, [k,] vocab) logits -> (copy, rows) per-example losses (KL: summed over
        the vocabulary, then averaged over a multi-position metric's valid positions)."""
        if loss == "kl":
            now = torch.log_softmax(logits, dim=-1)
            kl = (self.clean_probs * (self.clean_logprobs - now)).sum(-1)  # (copy, rows, [k])
            return self.problem.row_mean(kl)
        sign = -1.0 if self.problem.higher_is_better else 1.0
        return sign * torch.stack([self.problem.score(copy) for copy in logits])


class _Search:
    """The state of one ACDC run (current circuit, scores, counters), saved as it goes."""

    def __init__(self, model, problem: PatchingProblem, config: AcdcConfig):
        self.model, self.problem, self.config = model, problem, config
        self.engine = EdgeForward(model)
        self.graph = self.engine.graph
        self.clean, self.positions = problem.clean, problem.positions
        # means over the whole batch in chunks of max_rows (that order fixes their float sums)
        rows = max(1, config.max_rows)
        self.cache = AblationCache(self.engine, problem, config.ablation, rows)
        self.parts = self._parts()
        self.removed = torch.zeros_like(self.graph.valid)
        self.scores = torch.full(self.graph.valid.shape, float("nan"))
        self.done = 0  # receivers finished, in visiting order
        self.forwards = 0
        self.evaluations = 0
        self.filtered = 0
        self.seconds = 0.0
        self.fingerprint = self._fingerprint()

    # setup --------------------------------------------------------------------------------------
    def _parts(self) -> list[_Part]:
        """The problem split by padding (`PatchingProblem.by_length`), with each part's
        ablation values and clean log-probs; a mean is taken over the whole batch (real tokens
        only, as `evaluate` does), then cut to each part's columns (`AblationCache.values`)."""
        parts = []
        for group in self.problem.by_length():
            part = group.problem
            ablation = self.cache.values(part, group.start)
            logits = self.model.logits(part.clean, positions=part.positions).float()
            logprobs = torch.log_softmax(logits, dim=-1)  # (rows, [k,] vocab)
            parts.append(_Part(part, ablation, logprobs, logprobs.exp()))
        return parts

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for tensor in (self.clean.input_ids, self.problem.corrupted.input_ids, self.positions):
            digest.update(tensor.cpu().numpy().tobytes())
        # the ablation as its string, as the field was before it became a spec (old checkpoints)
        settings = {k: v for k, v in settings_of(self.config).items() if k != "checkpoint"}
        digest.update(repr(sorted(settings.items())).encode())
        if self.config.ablation.kind is AblationKind.MEAN:  # earlier: padding averaged too
            digest.update(b"mean over real tokens")
        digest.update(self.model.info.model_id.encode())
        return digest.hexdigest()

    def _prefilter(self) -> None:
        top = self.config.prefilter_top
        if top is None or top >= self.graph.n_edges:
            return
        eap = get_method("eap")
        scores = eap(self.model, self.problem, eap.config({"progress": self.config.progress}))
        magnitude = torch.where(self.graph.valid, scores.scores.abs(), -1.0)
        keep = torch.zeros(magnitude.numel(), dtype=torch.bool)
        keep[magnitude.flatten().argsort(descending=True)[:top]] = True
        keep = keep.reshape(magnitude.shape) & self.graph.valid
        self.removed = self.graph.valid & ~keep
        self.filtered = int(self.removed.sum())

    # the search -----------------------------------------------------------------------------------
    def run(self) -> None:
        if not self._resume():
            self._prefilter()
            self.initial = self.removed.clone()
        start = time.perf_counter() - self.seconds
        self.loss_now = float(self._loss_of(lambda part: self._run(part, self.removed), 1)[0])
        self.forwards += 1
        for part in self.parts:
            part.base_outputs = self.engine.run(
                part.problem.clean, part.problem.positions, self.initial, part.ablation,
                keep_outputs=True,
            ).outputs  # fmt: skip
        order = list(reversed(range(self.graph.n_receivers)))
        bar = self._bar(order)
        state_layer = None
        for index, row in enumerate(order):
            if index < self.done:
                continue
            layer = self.graph.receiver_layer(row)
            if layer != state_layer:
                for part in self.parts:
                    part.state = self.engine.state_at(
                        part.problem.clean, layer, self.initial, part.ablation
                    )
                state_layer = layer
            self._visit(row, bar)
            self.done = index + 1
            self.seconds = time.perf_counter() - start
            self._save()
        if bar is not None:
            bar.close()
        self.seconds = time.perf_counter() - start

    def _visit(self, row: int, bar) -> None:
        """Test every remaining incoming edge of receiver `row`."""
        n_up = self.graph.n_upstream(self.graph.receivers[row])
        senders = [s for s in reversed(range(n_up)) if not self.removed[row, s]]
        while senders:
            chunk = senders[: self._copies()]
            losses = self._evaluate(row, chunk)
            consumed = 0
            for sender, loss in zip(chunk, losses.tolist(), strict=True):
                self.scores[row, sender] = loss - self.loss_now
                self.evaluations += 1
                consumed += 1
                if bar is not None:
                    bar.update(1)
                if loss - self.loss_now >= self.config.threshold:
                    break  # kept: the later copies assumed it removed, so test them again
                self.removed[row, sender] = True
                self.loss_now = loss
            senders = senders[consumed:]

    def _evaluate(self, row: int, chunk: list[int]) -> torch.Tensor:
        """Loss of each copy j: the first j+1 candidates of `chunk` removed (cumulative)."""
        copies = len(chunk)

        def run(part: _Part) -> torch.Tensor:
            diffs = torch.stack([part.edge_diff(s) for s in chunk])  # (copy, rows, pos, d)
            extra = diffs.cumsum(0).flatten(0, 1)  # (copy * rows, pos, d_model)
            problem = part.problem
            return self.engine.run_from(
                part.state, problem.clean, problem.positions, self.removed, part.ablation,
                extra={row: extra}, copies=copies,
            )  # fmt: skip

        self.forwards += 1
        return self._loss_of(run, copies)

    def _run(self, part: _Part, removed: torch.Tensor) -> torch.Tensor:
        problem = part.problem
        return self.engine.run(problem.clean, problem.positions, removed, part.ablation).logits

    def _loss_of(self, run, copies: int) -> torch.Tensor:
        """(copies,) batch-mean losses, from `run(part)` -> (copies * rows, vocab) per part."""
        total = torch.zeros(copies, dtype=torch.float64)
        for part in self.parts:
            logits = run(part).float().unflatten(0, (copies, -1))  # (copy, rows, [k,] vocab)
            total += part.losses(logits, self.config.loss).sum(-1).double()
        return total / self.problem.batch

    def _copies(self) -> int:
        return max(1, min(self.config.candidates, self.config.max_rows // self.problem.batch))

    def _bar(self, order):
        if not self.config.progress:
            return None
        from tqdm import tqdm

        remaining = int((self.graph.valid & ~self.removed).sum())
        return tqdm(total=remaining, desc="acdc edges", unit="edge", file=sys.stderr)

    # results --------------------------------------------------------------------------------------
    def final_scores(self) -> torch.Tensor:
        scores = self.scores.clone()
        tested = ~torch.isnan(scores) & self.graph.valid
        if self.config.threshold > 0:
            floor = 0.0
        else:
            floor = float(scores[tested].min()) - 1.0 if bool(tested.any()) else -1.0
        return torch.where(tested, scores, floor).nan_to_num(floor)

    def facts(self) -> dict:
        kept = int((self.graph.valid & ~self.removed).sum())
        return {
            "edges_kept": kept,
            "edges_prefiltered": self.filtered,
            "edge_evaluations": self.evaluations,
            "batched_forwards": self.forwards,
            "padding_groups": len(self.parts),
            "seconds": round(self.seconds, 2),
            "order": "reverse topological; senders latest first",
            "loss_definition": "KL(clean || circuit) summed over vocab, mean over batch"
            if self.config.loss == "kl"
            else "-metric (higher is better) / metric, batch mean",
        }

    # checkpoints ----------------------------------------------------------------------------------
    def _save(self) -> None:
        if not self.config.checkpoint:
            return
        buffer = io.BytesIO()
        torch.save(
            {
                "fingerprint": self.fingerprint,
                "removed": self.removed,
                "initial": self.initial,
                "scores": self.scores,
                "done": self.done,
                "forwards": self.forwards,
                "evaluations": self.evaluations,
                "filtered": self.filtered,
                "seconds": self.seconds,
            },
            buffer,
        )
        atomic_write_bytes(self.config.checkpoint, buffer.getvalue())

    def _resume(self) -> bool:
        path = self.config.checkpoint
        if not path or not Path(path).exists():
            return False
        try:  # a corrupt or hostile checkpoint is rebuilt, never trusted (a pickle never runs)
            data = read_checkpoint(path, self.graph.valid.shape, len(self.graph.receivers))
        except DiscoveryError as error:
            print(f"acdc: ignoring checkpoint: {error}; starting afresh", file=sys.stderr)
            return False
        if data["fingerprint"] != self.fingerprint:
            print(
                f"acdc: checkpoint {path} is for other settings or data; starting afresh",
                file=sys.stderr,
            )
            return False
        for key in _CHECKPOINT_KEYS[1:]:
            setattr(self, key, data[key])
        return True


CHECKPOINT_FILE = "ACDC checkpoint"
_CHECKPOINT_KEYS = (
    "fingerprint", "removed", "initial", "scores", "done", "forwards", "evaluations", "filtered",
    "seconds",
)  # fmt: skip


def read_checkpoint(path: str | Path, shape: tuple[int, ...], n_receivers: int) -> dict:
    """An ACDC checkpoint for a graph whose (receiver, sender) matrices have `shape`, every field
    checked; DiscoveryError (one line naming the file) when it is unreadable, hostile or of the
    wrong structure."""
    from wildcircuits.files import FileCheck, safe_torch_load

    check = FileCheck(Path(path), CHECKPOINT_FILE, DiscoveryError)
    data = dict(
        check.mapping(
            safe_torch_load(path, CHECKPOINT_FILE, DiscoveryError), "its content", _CHECKPOINT_KEYS
        )
    )
    check.string(data["fingerprint"], "fingerprint")
    for key, kind in (("removed", "bool"), ("initial", "bool"), ("scores", "float")):
        data[key] = check.tensor(data[key], key, tuple(shape), kind)
    data["done"] = check.integer(data["done"], "done", 0, n_receivers)
    for key in ("forwards", "evaluations", "filtered"):
        data[key] = check.integer(data[key], key)
    data["seconds"] = check.number(data["seconds"], "seconds")
    return data
