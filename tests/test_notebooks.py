"""The committed example notebooks still produce their stored outputs (pytest-notebook).

Each notebook is executed with the defaults in its parameters cell, in its own
folder, and diffed against the outputs committed with it, ignoring only the noise
kit's defaults name (kit.verification.nbregression). The other tests show that those defaults
hide the noise and nothing else.
"""

from __future__ import annotations

import copy

import nbformat
import pytest
import pytest_notebook  # noqa: F401
from conftest import EXAMPLE
from pytest_notebook.diffing import diff_notebooks, filter_diff  # noqa: E402
from pytest_notebook.notebook import regex_replace_nb  # noqa: E402

from kit.verification.nbregression import DIFF_IGNORE, DIFF_REPLACE, regression_fixture  # noqa: E402

NOTEBOOKS = sorted(EXAMPLE.glob("*.ipynb"))


def test_there_are_example_notebooks():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_example_notebook_reproduces_its_stored_outputs(kit_nb_regression, path):
    kit_nb_regression.exec_cwd = str(path.parent)
    result = kit_nb_regression.check(str(path))
    stored = [o for c in result.nb_initial.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert stored, f"{path.name} is committed without outputs: nothing to compare"


def test_a_changed_output_is_still_caught(kit_nb_regression, tmp_path):
    source = EXAMPLE / "04_summarize.ipynb"
    nb = nbformat.read(source, as_version=4)
    output = next(
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "text/markdown" in o.get("data", {})
    )
    output.data["text/markdown"] += " TAMPERED"
    copy_path = tmp_path / source.name
    nbformat.write(nb, copy_path)

    kit_nb_regression.exec_cwd = str(EXAMPLE)  # the copy reads the example's data
    result = kit_nb_regression.check(str(copy_path), raise_errors=False)
    assert result.diff_filtered, "a changed output must fail the regression test"
    assert "TAMPERED" in result.diff_string
    assert "\x1b[" not in result.diff_string  # no colour codes in test reports


# ---- kit's defaults, without kernels ---------------------------------------------


def _notebook(outputs, **metadata):
    nb = nbformat.v4.new_notebook(metadata=metadata)
    cell = nbformat.v4.new_code_cell("x", execution_count=1, outputs=outputs, id="cell-0")
    nb.cells.append(cell)
    return nb


def _display(text):
    return nbformat.v4.new_output("display_data", data={"text/plain": text})


def _filtered(a, b):
    a, b = regex_replace_nb(a, DIFF_REPLACE), regex_replace_nb(b, DIFF_REPLACE)
    return filter_diff(diff_notebooks(a, b), list(DIFF_IGNORE))


def test_papermill_kernel_and_widget_noise_is_ignored():
    before = _notebook([_display("42")], language_info={"name": "python", "version": "3.11.7"})
    after = copy.deepcopy(before)
    after.metadata.language_info = {"name": "python", "version": "3.12.1"}
    after.metadata.papermill = {"start_time": "2026-11-03T10:22:33", "duration": 1.5}
    after.metadata.widgets = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    cell = after.cells[0]
    cell.execution_count = 7
    cell.metadata.papermill = {"duration": 0.1, "status": "completed"}
    cell.metadata.execution = {"iopub.execute_input": "2026-11-03T10:22:33.1Z"}
    cell.outputs.append(
        nbformat.v4.new_output(
            "display_data",
            data={"application/vnd.jupyter.widget-view+json": {"model_id": "abc123", "version_major": 2}},
        )
    )
    before.cells[0].outputs.append(
        nbformat.v4.new_output(
            "display_data",
            data={"application/vnd.jupyter.widget-view+json": {"model_id": "ffff00", "version_major": 2}},
        )
    )
    assert _filtered(before, after) == []


def test_volatile_values_are_replaced_and_data_is_not():
    digest_a, digest_b = "a" * 64, "b" * 64
    before = _notebook(
        [
            _display(
                f"ran at 2026-11-03 10:22:33.123456, run 20261103-102233-123-ab12, artifact:sha256:{digest_a}, "
                f"<Foo object at 0x7f3b2c1d0e50>, finished 2026-11-03T10:22:40Z"
            )
        ]
    )
    after = _notebook(
        [
            _display(
                f"ran at 2026-11-04 08:01:02.5, run 20261104-080102-500-c0de, artifact:sha256:{digest_b}, "
                f"<Foo object at 0x7f00deadbeef>, finished 2026-11-04T08:01:09+00:00"
            )
        ]
    )
    assert _filtered(before, after) == []

    # data: dates, times of day without fractions, amounts, ordinary ids
    for old, new in [
        ("ordered 2025-04-26 11:31:00", "ordered 2025-04-26 11:32:00"),
        ("due 2026-03-31", "due 2026-04-01"),
        ("total 342.28", "total 342.29"),
        ("O-50262", "O-50263"),
    ]:
        assert _filtered(_notebook([_display(old)]), _notebook([_display(new)])), (old, new)


def test_regression_fixture_overrides():
    fixture = regression_fixture(diff_ignore=[*DIFF_IGNORE, "/cells/0/outputs"], exec_timeout=30, exec_cwd=EXAMPLE)
    assert fixture.diff_ignore[-1] == "/cells/0/outputs"
    assert fixture.diff_replace == DIFF_REPLACE
    assert fixture.exec_timeout == 30 and fixture.exec_cwd == str(EXAMPLE)
    assert fixture.diff_use_color is False
