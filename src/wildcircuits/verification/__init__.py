"""Test a hypothesis file (docs/verify.md): the pipeline's verify step.

- `criteria`: the IOI paper's faithfulness, completeness and minimality;
- `stat_tests`: Shi et al.'s equivalence, independence and minimality tests;
- `resampling`, `scrub_runs`, `scrubbing`: causal scrubbing (docs/scrubbing.md);
- `redteam`: other corruptions, held-out templates, a simpler story;
- `verdicts`: one verdict per claim and the opening sentence;
- `run`: `verify(model, task, hypothesis)`, every part in order (`wc.verify` calls it).
"""
