"""The bundled casework example, run the way a new user runs it."""

from __future__ import annotations

import shutil

import pytest

from conftest import EXAMPLE
from kit.manifest import load_workflow


@pytest.fixture(scope="module")
def casework(tmp_path_factory):
    from conftest import Project

    project = Project(tmp_path_factory.mktemp("casework"))
    shutil.copytree(EXAMPLE, project.root / "notebooks" / "casework",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return project


def test_the_example_runs_and_records_every_declared_output(casework):
    result = casework.kit("run", "notebooks/casework", "-p", "case_id=C-1001")
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[1]

    workflow = load_workflow(casework.root / "notebooks" / "casework" / "workflow.yaml")
    assert len(workflow.steps) >= 5

    shown = casework.kit("show", run_id)
    assert shown.returncode == 0
    for step_id in workflow.steps:
        assert any(line.startswith(step_id) and "succeeded" in line for line in shown.stdout.splitlines()), shown.stdout

    steps = casework.sql(f"select step_id, status, duration_ms from steps where run_id = '{run_id}'")
    assert {s["step_id"] for s in steps} == set(workflow.steps)
    assert {s["status"] for s in steps} == {"succeeded"}

    recorded = {(o["step_id"], o["name"]): o["type"] for o in casework.sql(f"select * from outputs where run_id = '{run_id}'")}
    declared = {(sid, name): spec for sid, step in workflow.steps.items() for name, spec in step.spec.outputs.items()}
    assert set(recorded) == set(declared)
    kinds = set(recorded.values())
    assert "table" in kinds and ("object" in kinds or "schema" in kinds)

    by_name = {s["step_id"]: s for s in casework.sql(
        f"select step_id, started_at, ended_at from spans where run_id = '{run_id}' and kind = 'step'")}
    a, b = by_name["check_policy"], by_name["retrieve_similar"]
    assert a["started_at"] < b["ended_at"] and b["started_at"] < a["ended_at"], "the fan-out steps did not overlap"

    decision = casework.sql(f"select value from outputs where run_id = '{run_id}' and name = 'decision'")[0]["value"]
    assert decision["action"] == "apply_discount"


def test_an_unknown_case_fails_the_first_step_and_skips_the_rest(casework):
    result = casework.kit("run", "notebooks/casework", "-p", "case_id=C-0000")
    assert result.returncode == 1
    run_id = result.stdout.split()[1]
    statuses = {s["step_id"]: s["status"] for s in casework.sql(f"select step_id, status from steps where run_id = '{run_id}'")}
    assert statuses["fetch_case"] == "failed"
    assert {s for k, s in statuses.items() if k != "fetch_case"} == {"skipped"}
