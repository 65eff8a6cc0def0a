"""The whole explain step on a model and a task: components at positions, classes, backup heads,
the class diagram's paths and the algorithm in words, as one `Explanation`.

Splits: the compact circuit is searched on `search` and its faithfulness reported on
`heldout` (`find_position_circuit`); the classes are formed from evidence on `search` (the
circuit's own split); the class paths and the backup are measurements of that fixed grouping,
taken on `heldout`. The provenance says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.names import Node
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.results.explain import Explanation

#: The ablation the compact circuit is searched under, and the others it is also reported under
#: (the IOI paper's mean over the ABC distribution, per template).
ABLATION = "counterfactual"
EXTRA_ABLATIONS = ("mean:template",)
#: Where each part of the explanation was measured (recorded in its provenance).
SPLITS = {
    "circuit_search": "search",
    "circuit_faithfulness": "heldout",
    "classes": "search",
    "paths": "heldout",
    "backup": "heldout",
}


def explain(
    model: InstrumentedModel,
    search: PatchingProblem,
    heldout: PatchingProblem,
    nodes: Sequence[str | Node] | None = None,
    progress: bool = True,
) -> Explanation:
    """Explain the model's behaviour on a task (issue #13, sections 1-3).

    `search` / `heldout`: the task's problems for the two splits (same task, same corruption);
    `nodes`: restrict the candidate components to these heads / MLPs (display names or
    `Node`s; e.g. a discovered circuit's nodes), None: every head and MLP."""
    from wildcircuits.explanation.backup import find_backup
    from wildcircuits.explanation.class_paths import class_paths, describe_algorithm
    from wildcircuits.explanation.classes import classify
    from wildcircuits.explanation.position_search import find_position_circuit
    from wildcircuits.explanation.sentences import with_arrows
    from wildcircuits.explanation.thresholds import THRESHOLDS

    start = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        seconds[name] = round(time.perf_counter() - start - sum(seconds.values()), 3)

    circuit = find_position_circuit(
        model,
        search,
        heldout,
        spec=ABLATION,
        extra_ablations=EXTRA_ABLATIONS,
        nodes=nodes,
        progress=progress,
    )
    lap("circuit")
    classes, unexplained = classify(model, search, circuit, progress=progress)
    lap("classes")
    backup = find_backup(model, heldout, classes)
    lap("backup")
    paths = class_paths(model, heldout, classes, progress=progress)
    classes = with_arrows(classes, paths, THRESHOLDS)
    lap("paths")
    return Explanation(
        provenance=_provenance(heldout, search, nodes, seconds),
        circuit=circuit,
        classes=tuple(classes),
        unexplained=tuple(unexplained),
        paths=tuple(paths),
        backup=backup,
        algorithm=tuple(describe_algorithm(classes, paths)),
    )


def _provenance(
    heldout: PatchingProblem,
    search: PatchingProblem,
    nodes: Sequence[str | Node] | None,
    seconds: dict[str, float],
) -> dict[str, Any]:
    """The held-out problem's provenance (model, quantization, metric, task, ...) and how each
    part of the explanation was obtained."""
    return {
        **dict(heldout.provenance),
        "ablation": ABLATION,
        "extra_ablations": list(EXTRA_ABLATIONS),
        "search_split": search.provenance.get("split", "search"),
        "search_prompts": search.batch,
        "heldout_prompts": heldout.batch,
        "splits": dict(SPLITS),
        "candidates": "all heads and MLPs" if nodes is None else f"{len(nodes)} given nodes",
        "seconds": seconds,
    }
