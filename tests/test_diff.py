"""`kit diff RUN_A RUN_B [STEP]`: real runs of the three-step `chain` workflow with different
parameters (and, for the third, a changed notebook), compared from the ledger, the objects and
the executed notebooks."""

from __future__ import annotations

import re

import nbformat
import pandas as pd
import pytest
from conftest import Project
from nbformat.v4 import new_code_cell

from kit.review.diff import table_changes, value_changes

FAST = ("--engine", "warm", "--workers", "1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three runs of `chain`: x=1; x=2 with another label; then x=2 again after c.ipynb gained a cell."""
    from conftest import chain as make_chain  # the fixture's body, for a module-wide project

    project = make_chain.__wrapped__(Project(tmp_path_factory.mktemp("diff")))
    ids = []
    for args in (("-p", "x=1"), ("-p", "x=2", "-p", "label=<b>fancy</b>")):
        result = project.kit("run", "wf", *args, *FAST)
        assert result.returncode == 0, result.stdout + result.stderr
        ids.append(project.sql("select max(run_id) as r from runs")[0]["r"])
    path = project.root / "wf" / "c.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nb.cells.append(new_code_cell("print('a new cell', n * 10)"))
    nbformat.write(nb, str(path))
    result = project.kit("run", "wf", "-p", "x=2", "-p", "label=<b>fancy</b>", *FAST)
    assert result.returncode == 0, result.stdout + result.stderr
    ids.append(project.sql("select max(run_id) as r from runs")[0]["r"])
    return project, ids


def test_diff_names_parameters_outputs_and_notebook_cells(runs):
    project, (a, b, _) = runs
    result = project.kit("diff", a, b)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "parameters: 2 changed" in out
    assert "changed  x: 1 -> 2" in out and 'changed  label: "plain" -> "<b>fancy</b>"' in out
    assert "bundle: the same" in out
    assert "changed  a.n (integer)" in out and "changed  $: 2 -> 3" in out
    assert "changed  b.m (schema)" in out and "changed  n: 2 -> 3" in out and "changed  total: 3 -> 5" in out
    # the table output, read from its objects: rows matched by its only column
    assert "changed  a.rows (table)" in out
    assert "rows 2 -> 2 (matched by column v): 1 added, 1 removed, 0 changed" in out
    assert '+ {"v": 3}' in out and '- {"v": 1}' in out
    # the executed notebooks through nbdime: the injected parameters cell, without run ids or timings
    assert re.search(r"a: changed\n\s+b: changed\n\s+c: changed", out)
    assert "## modified a.ipynb/cells/" in out and "-  x = 1" in out and "+  x = 2" in out
    assert "papermill" not in out and "execution_count" not in out and a not in out.split("\n", 2)[2]


def test_diff_of_one_step(runs):
    project, (a, b, _) = runs
    result = project.kit("diff", a, b, "b")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "outputs of step b: 1 changed, 0 unchanged" in out and "b.m" in out
    assert "a.n" not in out and "a.rows" not in out
    assert "notebooks of step b:\n  b: changed" in out and "a.ipynb" not in out and "b.ipynb" in out


def test_diff_names_bundle_files_and_new_cells(runs):
    project, (_, b, c) = runs
    out = project.kit("diff", b, c).stdout
    assert "parameters: unchanged" in out
    assert re.search(r"bundle: \w{12} -> \w{12}, 1 file\(s\) changed\n\s+changed\s+c\.ipynb", out)
    assert "outputs: 0 changed" in out
    assert "c: changed" in out and "a: unchanged" in out
    assert "a new cell" in out


def test_diff_as_a_self_contained_page(runs):
    project, (a, _, c) = runs
    result = project.kit("diff", a, c, "--format", "html")
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "&lt;b&gt;fancy&lt;/b&gt;" in page and "<b>fancy</b>" not in page
    assert "<h2>Parameters</h2>" in page and "<code>x</code>" in page
    assert "rows changed" in page or "rows added" in page
    assert "<b>added</b> code cell" in page and "a new cell" in page
    assert '<span class="add">+x = 2</span>' in page


def test_bad_references_exit_2(runs):
    project, (a, b, _) = runs
    for args in ((a, "nope"), ("nope", b), (a, b, "no_such_step"), (a,)):
        result = project.kit("diff", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "error:" in result.stderr or "Usage" in result.stderr


def test_value_changes_by_path():
    a = {"action": "refund", "scores": [0.5, 0.2], "meta": {"n": 1, "gone": True}}
    b = {"action": "escalate", "scores": [0.5, 0.3, 0.1], "meta": {"n": 1.0, "new": None}}
    changes = {(c.path, c.kind) for c in value_changes(a, b)}
    assert changes == {
        ("action", "changed"),
        ("scores.1", "changed"),
        ("scores.2", "added"),
        ("meta.gone", "removed"),
        ("meta.new", "added"),
    }
    assert value_changes([1, {"a": 1}], [1, {"a": 1}]) == []


def test_table_changes_by_key_position_and_whole_rows():
    a = pd.DataFrame({"id": ["x", "y", "z"], "amount": [1.0, 2.0, 3.0]})
    b = pd.DataFrame({"id": ["x", "y", "w"], "amount": [1.0, 2.5, 9.0], "note": ["", "", ""]})
    keyed = table_changes(a, b)
    assert keyed.matched_by == "column id" and keyed.columns_added == ["note"]
    assert keyed.counts == {"added": 1, "removed": 1, "changed": 1}
    assert keyed.changed == [{"row": "y", "columns": {"amount": [2.0, 2.5]}}]
    same_length = table_changes(pd.DataFrame({"v": [1, 1]}), pd.DataFrame({"v": [1, 2]}))
    assert same_length.matched_by == "position" and same_length.changed == [{"row": 1, "columns": {"v": [1, 2]}}]
    rows = table_changes(pd.DataFrame({"v": [1, 1, 2]}), pd.DataFrame({"v": [1, 3]}))
    assert rows.matched_by == "whole rows" and rows.counts == {"added": 1, "removed": 2, "changed": 0}
    assert table_changes(a, a.copy()).same
