"""The Ray executor on a local cluster (`ray.init(num_cpus=2)`): two tiny cells, one Ray task
each, give the same catalogue as the embedded local executor (states and numbers)."""

from __future__ import annotations

import math

from tests.catalogue_fixtures import tiny_config, write_inputs
from wildcircuits.catalogue.run import catalogue
from wildcircuits.results.catalogue import CellState


def _numbers(cell) -> list[float | None]:
    f = cell.faithfulness
    b = cell.behaviour
    return [
        b.accuracy,
        b.clean_mean,
        cell.edge_faithfulness,
        cell.random_faithfulness,
        cell.cpr,
        cell.cmd,
        f.value if f else None,
        f.low if f else None,
    ]


def test_ray_cells_equal_local_cells(tmp_path, tmp_cache):
    import ray  # the ray extra; `make setup` installs it, so no skip

    inputs = write_inputs(tmp_path / "inputs")
    tasks, models = [inputs["copy"], inputs["swapped"]], [inputs["model"]]
    local = catalogue(tasks, models, tmp_path / "local", config=tiny_config(), progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = catalogue(
            tasks, models, tmp_path / "ray", config=tiny_config(), executor="ray", progress=False
        )
    finally:
        ray.shutdown()
    assert [c.state for c in remote.cells] == [c.state for c in local.cells]
    assert [c.state for c in local.cells][1] is CellState.NO_BEHAVIOUR
    for a, b in zip(local.cells, remote.cells, strict=True):
        assert (a.n_edges, a.n_heads, a.classes) == (b.n_edges, b.n_heads, b.classes)
        assert [f.name for f in a.failed_criteria] == [f.name for f in b.failed_criteria]
        # the cost in forward passes does not depend on where a cell ran (seconds do)
        assert [(s.step, s.token_forwards) for s in a.steps] == [
            (s.step, s.token_forwards) for s in b.steps
        ]
        for x, y in zip(_numbers(a), _numbers(b), strict=True):
            assert (x is None) == (y is None)
            if x is not None:
                assert math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-6), (a.task, x, y)
    assert (tmp_path / "ray" / remote.cells[0].folder / "report.html").exists()
