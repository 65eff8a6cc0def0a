"""Executors: how the cells of a catalogue are run. Each yields (job, error message or None) as
cells finish; the driver rereads the cell's folder, it never writes a cell's results itself.

- `LocalExecutor` (the default, embedded): cells one after another in this process.
- `RayExecutor`: one Ray task per cell (the steps of a cell stay in order inside it), with its
  resources declared (`num_cpus`, `num_gpus`: 1 on a CUDA device); Ray is imported only here,
  and a missing Ray names `pip install wildcircuits[ray]`. The cell folders must be on a file
  system every worker sees (one machine, or a shared mount on a cluster).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wildcircuits.catalogue.plan import CellSpec
from wildcircuits.errors import WildcircuitsError
from wildcircuits.pipeline.config import DiscoverConfig

EXECUTORS = ("local", "ray")


class RayMissingError(WildcircuitsError):
    """`--executor ray` without Ray installed."""


@dataclass(frozen=True)
class Job:
    """One cell to run: its spec, its folder and its full config."""

    spec: CellSpec
    folder: Path
    config: DiscoverConfig


class LocalExecutor:
    """Run cells one after another in this process."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, str | None]]:
        from wildcircuits.catalogue.cells import run_cell

        for job in jobs:
            yield job, run_cell(job.folder, job.config, progress=self.verbose)


def _ray_cell(folder: str, config: dict[str, Any], verbose: bool) -> str | None:
    """The body of one Ray task: the worker runs the cell and writes its files."""
    from wildcircuits.catalogue.cells import run_cell

    return run_cell(Path(folder), DiscoverConfig.from_dict(config), progress=verbose)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissingError(
            "--executor ray needs Ray, which is not installed; run `pip install "
            "wildcircuits[ray]` (or use the default --executor local)"
        ) from None
    return ray


class RayExecutor:
    """One Ray task per cell. Connects to `address` (None: the running cluster if this process
    has one, else a local one started here and shut down afterwards)."""

    def __init__(self, address: str | None = None, num_cpus: float = 1, verbose: bool = False):
        self.ray = import_ray()
        self.address, self.num_cpus, self.verbose = address, num_cpus, verbose

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, str | None]]:
        ray = self.ray
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, log_to_driver=self.verbose)
        try:
            yield from self._submit(jobs)
        finally:
            if started:
                ray.shutdown()

    def _submit(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, str | None]]:
        ray, pending = self.ray, {}
        for job in jobs:
            gpus = 1 if job.config.device.startswith("cuda") else 0
            task = ray.remote(num_cpus=self.num_cpus, num_gpus=gpus, max_retries=0)(_ray_cell)
            ref = task.remote(str(job.folder.resolve()), job.config.to_dict(), self.verbose)
            pending[ref] = job
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready)
            try:
                yield job, ray.get(ready)
            except Exception as error:  # a lost worker: the cell stays resumable on disk
                yield job, f"the Ray task failed ({type(error).__name__}: {error})"


def make_executor(name: str, ray_address: str | None = None, verbose: bool = False):
    if name == "local":
        if ray_address:
            raise WildcircuitsError("--ray-address needs --executor ray")
        return LocalExecutor(verbose)
    if name == "ray":
        return RayExecutor(ray_address, verbose=verbose)
    raise WildcircuitsError(f"unknown executor {name!r}; executors are {', '.join(EXECUTORS)}")
