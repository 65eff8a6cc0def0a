"""Explain a faithful circuit (issue #13): components at positions, functional classes, the
class diagram and a drafted hypothesis file.

Pipeline of this package, each module one stage:
- `positions`, `pair_evaluator`, `position_search`: score (component, named position) pairs,
  evaluate sets of them exactly, and find the smallest set of pairs whose circuit reaches a
  target faithfulness (attribution ranking, exact greedy, pruning);
- `classes`, `evidence`, `backup`: group the compact circuit's heads into functional classes from
  measured evidence, and find the backup heads;
- `class_paths`: path patching between classes (every arrow of the class diagram) and the
  algorithm in words;
- `hypothesis`: the hypothesis file a person edits (schema, writer, safe loader);
- `run`: the whole explain step on a model and a task problem (`wc.explain`).
Result types live in `wildcircuits.results.explain`.
"""
