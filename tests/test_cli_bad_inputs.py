"""Every bad CLI input is one `error: ...` line, exit 2, naming the input; no model work first."""

from __future__ import annotations

import pytest

from tests.discovery_fixtures import tiny_problem
from tests.tiny_models import tiny_model
from wildcircuits.cli.main import main


@pytest.fixture
def spy(monkeypatch):
    """A tiny model and problem for every command; `calls` counts model loads."""
    model = tiny_model("llama")
    problem = tiny_problem(model)
    calls = []

    def load(args):
        calls.append(args.command)
        return model, problem

    monkeypatch.setattr("wildcircuits.cli.attribute.load_problem", load)
    monkeypatch.setattr("wildcircuits.models.load_model", lambda *a, **k: calls.append(1) or model)
    task = type("Task", (), {"build": lambda self, *a, **k: type("Data", (), {"examples": []})})
    monkeypatch.setattr("wildcircuits.tasks.load_task", lambda name: task())
    monkeypatch.setattr(
        "wildcircuits.patching.problem.problem_from_dataset", lambda *a, **k: problem
    )
    return calls


# (argv after the command's own required arguments, words the message must hold, before work?)
CASES = [
    (["ablate", "ioi", "--heads", "L0.H99"], ["--heads", "L0.H99"], False),
    (["ablate", "ioi", "--heads", "L0.H1", "--position", "999"], ["--position", "999"], False),
    (["ablate", "ioi", "--mlps", "99"], ["--mlps", "99"], False),
    (["ablate", "ioi", "--mlps", "x"], ["--mlps", "x"], True),
    (["ablate", "ioi"], ["no sites"], True),
    (["ablate", "ioi", "--heads", "L0.H1", "--ablation", "banana"], ["banana"], True),
    (["heads", "ioi", "--patterns", "L9.H0"], ["--patterns", "L9.H0"], False),
    (["heads", "ioi", "--prompt-index", "50"], ["--prompt-index", "50"], True),
    (["heads", "ioi", "--prompt-index", "-1"], ["--prompt-index", "-1"], True),
    (["path-patch", "ioi", "--receivers", "L9.H0:q"], ["--receivers", "L9.H0"], False),
    (["path-patch", "ioi", "--receivers", ""], ["--receivers"], True),
    (["attribute", "ioi", "--method", "dla", "--batch-size", "0"], ["--batch-size", "0"], True),
    (["attribute", "ioi", "--method", "dla", "--batch-size", "-3"], ["--batch-size", "-3"], True),
    (["attribute", "ioi", "--method", "dla", "--n", "0"], ["--n", "0"], True),
    (["attribute", "ioi", "--method", "dla", "--n", "100000000"], ["--n", "100000000"], True),
    (["attribute", "ioi", "--method", "dla", "--seed", "-1"], ["--seed", "-1"], True),
    (["attribute", "ioi", "--method", "dla", "--device", "banana"], ["--device", "banana"], True),
    (["attribute", "ioi", "--method", "dla", "--device", "meta"], ["--device", "meta"], True),
    (["probe", "ioi", "--model", "m", "--device", "xpu"], ["--device", "xpu"], True),
    (["patch", "ioi", "--max-rows", "0"], ["--max-rows", "0"], True),
    (["patch", "ioi", "--device", "banana"], ["--device", "banana"], True),
    (["evaluate", "c.pt", "--task", "ioi", "--random-seeds", "-1"], ["--random-seeds", "-1"], True),
    (["evaluate", "c.pt", "--task", "ioi", "--ablation", "resample"], ["resample"], True),
    (["discover-edges", "ioi", "--steps", "0"], ["steps", "0"], True),
    (["discover-edges", "ioi", "--set", "steps=abc"], ["steps", "abc"], True),
    (["discover-edges", "ioi", "--set", "riemann=up"], ["riemann", "up"], True),
    (["discover-edges", "ioi", "--set", "nope=1"], ["nope"], True),
    (["discover", "ioi", "--method-settings", '{"steps": "abc"}'], ["steps", "abc"], True),
    (["discover", "ioi", "--method-settings", "[1, 2]"], ["--method-settings", "list"], True),
    (["discover", "ioi", "--method-settings", "{"], ["--method-settings", "not JSON"], True),
    (["discover", "ioi", "--steps", ""], ["--steps", "no step"], True),
    (["discover", "ioi", "--steps", "dance"], ["--steps", "dance"], True),
    (["discover", "ioi", "--n-examples", "0"], ["--n-examples", "0"], True),
    (["verify-model", "m", "--device", "banana"], ["--device", "banana"], True),
]
NO_OUT = {"verify-model"}


@pytest.mark.parametrize(("argv", "words", "before_model"), CASES, ids=lambda v: str(v)[:40])
def test_bad_input_is_one_line_exit_2(spy, tmp_path, capsys, argv, words, before_model):
    extra = [] if argv[0] in NO_OUT else ["--out", str(tmp_path / "out")]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    if before_model:
        assert spy == []  # no model was loaded


@pytest.mark.parametrize("kind", ["file", "under-file", "read-only"])
def test_bad_out_folders_fail_before_any_work(spy, tmp_path, capsys, kind, monkeypatch):
    import os
    import tempfile

    target = tmp_path / "f"
    target.write_text("x")
    if kind == "read-only":
        target = tmp_path / "ro"
        target.mkdir(mode=0o500)
        if os.geteuid() == 0:  # root writes anywhere: the write test fails as it would for a user

            def refuse(*args, **kwargs):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = {"file": target, "under-file": target / "sub", "read-only": target / "x"}[kind]
    assert main(["attribute", "ioi", "--method", "dla", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and str(out) in err and spy == []


def test_run_folder_files_get_the_users_umask(tmp_path):
    import os

    from wildcircuits.results.io import atomic_write_bytes

    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["probe", "a_an", "--model", "m", "--n", "61"], "--n 61"),
        (["discover", "successor", "--n-examples", "71"], "--n-examples 71"),
    ],
)
def test_more_examples_than_the_task_can_build_is_refused_before_work(
    argv, option, tmp_path, capsys, monkeypatch
):
    """a_an makes at most 60 distinct prompts, successor 70: asking for more is an input error
    naming the bound, before any model loads (not minutes of failed draws)."""
    loads = []
    monkeypatch.setattr("wildcircuits.models.load_model", lambda *a, **k: loads.append(1))
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option} is more than task") and "at most" in err
    assert loads == []


def test_the_api_checks_the_task_size_before_building():
    from wildcircuits.errors import InputError
    from wildcircuits.tasks import load_task

    task = load_task("a_an")
    with pytest.raises(InputError, match="at most 60 distinct prompts"):
        task.problem(object(), n=61)  # the model is never touched
