"""The Binder tour, `notebooks/00_start.ipynb`: its committed outputs still hold, and it runs in a
fresh environment made from `binder/requirements.txt` alone, as Binder would make it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
TOUR = REPO / "notebooks" / "00_start.ipynb"


def _cells_with(nb, text: str) -> list[int]:
    return [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and text in cell.source]


def test_the_tour_is_committed_with_the_outputs_of_a_real_run():
    nb = nbformat.read(TOUR, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("outputs") for c in code[:-1]), "every cell but the clean-up shows its output"
    text = json.dumps([c.get("outputs") for c in code])
    for seen in (
        "(exit 3)",
        "review approved by bob",
        "succeeded",
        "8 passed, 0 failed",
        "regressed",
        "self-contained: True",
    ):
        assert seen in text, seen


def test_the_tour_reproduces_its_stored_outputs(kit_nb_regression):
    """pytest-notebook through kit's diff defaults; the explorer's cell shows times and is left out."""
    from kit.verification.nbregression import DIFF_IGNORE

    nb = nbformat.read(TOUR, as_version=4)
    volatile = tuple(f"/cells/{i}/outputs" for i in _cells_with(nb, "kit.explore("))
    kit_nb_regression.diff_ignore = DIFF_IGNORE + volatile
    kit_nb_regression.exec_timeout = 600
    kit_nb_regression.check(str(TOUR))


def test_the_tour_runs_in_a_fresh_environment_made_from_binder_requirements(tmp_path):
    venv = tmp_path / "binder-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", "binder/requirements.txt"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if pip.returncode != 0:
        pytest.fail(f"pip install -r binder/requirements.txt failed:\n{pip.stdout[-2000:]}\n{pip.stderr[-2000:]}")
    executed = tmp_path / "tour.ipynb"
    run = subprocess.run(
        [
            str(venv / "bin" / "jupyter"),
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            str(TOUR),
            "--output",
            str(executed),
            "--ExecutePreprocessor.timeout=600",
            "--ExecutePreprocessor.kernel_name=python3",
        ],
        cwd=TOUR.parent,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    text = json.dumps([c.get("outputs") for c in nb.cells])
    assert "8 passed, 0 failed" in text and "regressed" in text
