"""What the steps of one run share: the model, the task, its datasets and problems (lazily)."""

from __future__ import annotations

import functools
import sys
from typing import Any

from wildcircuits.pipeline.config import DiscoverConfig
from wildcircuits.pipeline.run_folder import RunFolder


class StopRun(Exception):
    """The run stops early on purpose (e.g. the model does not do the task)."""


class Context:
    """Lazily loaded shared state; nothing is loaded that a step does not need."""

    def __init__(self, config: DiscoverConfig, folder: RunFolder, progress: bool = True):
        self.config, self.folder, self.progress = config, folder, progress
        self._forwards: Any = None  # models.counting.ForwardCount, once the model is loaded

    @property
    def token_forwards(self) -> int:
        """Token-forwards run through the model so far (0 before it is loaded)."""
        return 0 if self._forwards is None else round(self._forwards.token_forwards)

    def say(self, message: str) -> None:
        if self.progress:
            print(f"[wildcircuits] {message}", file=sys.stderr, flush=True)

    @functools.cached_property
    def model(self):
        from wildcircuits.models import load_model
        from wildcircuits.models.counting import ForwardCount, attach_counter

        self.say(f"loading {self.config.model} on {self.config.device}")
        model = load_model(self.config.model, device=self.config.device)
        self.folder.record_model(model.info.to_dict())
        self._forwards = ForwardCount(model.n_layers)
        attach_counter(model, self._forwards)  # each step's cost (`run_step`); this run's model
        return model

    @functools.cached_property
    def task(self):
        from wildcircuits.tasks import load_task

        return load_task(self.config.task)

    def dataset(self, split: str, seed: int | None = None, n: int | None = None):
        from wildcircuits.tasks import Split

        n = n or (self.config.n_examples if split == "train" else self.config.n_heldout)
        seed = self.config.seed if seed is None else seed
        return self.task.build(self.model.tokenizer, n, seed=seed, split=Split(split))

    def problem_of(self, dataset):
        from wildcircuits.patching.problem import problem_from_dataset

        return problem_from_dataset(self.model, dataset, self.config.corruption)

    @functools.cached_property
    def train_data(self):
        return self.dataset("train")

    @functools.cached_property
    def test_data(self):
        return self.dataset("test")

    @functools.cached_property
    def train(self):
        """The problem circuits are found on (train split)."""
        return self.problem_of(self.train_data)

    @functools.cached_property
    def test(self):
        """The held-out problem circuits are evaluated on (test split)."""
        return self.problem_of(self.test_data)

    @functools.cached_property
    def engine(self):
        from wildcircuits.patching.edges import EdgeForward

        return EdgeForward(self.model)

    @functools.cached_property
    def scores(self):
        from wildcircuits.graph.circuit import EdgeScores

        return EdgeScores.load(self.folder.path("scores.pt"), self.engine.graph)

    def method(self, progress: bool):
        """The configured discovery method and its config (user settings; progress as asked
        unless the user set it)."""
        from wildcircuits.discovery.registry import get_method

        spec = get_method(self.config.method)
        settings = dict(self.config.method_settings)
        if "progress" in spec.config_type.__dataclass_fields__:
            settings.setdefault("progress", progress)
        return spec, spec.config(settings)

    def provenance(self, problem=None, **extra: Any) -> dict[str, Any]:
        """Provenance for numbers computed on `problem` (default: the train problem)."""
        problem = problem if problem is not None else self.train
        return {
            **dict(problem.provenance),
            "method": self.config.method,
            "ablation": self.config.ablation,
            **extra,
        }
