"""Runs for real: kernels through papermill, a DuckDB ledger, concurrency read from the ledger."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import nbformat


def overlap(a: dict, b: dict) -> bool:
    start = lambda s: datetime.fromisoformat(s["started_at"])  # noqa: E731
    end = lambda s: datetime.fromisoformat(s["ended_at"])  # noqa: E731
    return start(a) < end(b) and start(b) < end(a)


def test_a_run_records_steps_spans_and_outputs(chain):
    result = chain.kit("run", "wf", "-p", "x=5", "--workers", "2")
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[1]

    steps = chain.sql(
        f"select step_id, status, duration_ms, attempts from steps where run_id = '{run_id}' order by step_id"
    )
    assert [(s["step_id"], s["status"], s["attempts"]) for s in steps] == [
        ("a", "succeeded", 1),
        ("b", "succeeded", 1),
        ("c", "succeeded", 1),
    ]
    assert all(s["duration_ms"] > 0 for s in steps)

    outputs = {(o["step_id"], o["name"]): o for o in chain.sql(f"select * from outputs where run_id = '{run_id}'")}
    assert outputs[("a", "n")]["value"] == 6 and outputs[("a", "n")]["type"] == "integer"
    assert outputs[("a", "rows")]["type"] == "table" and outputs[("a", "rows")]["artifact"].startswith(
        "artifact:sha256:"
    )
    assert outputs[("b", "m")]["value"] == {"n": 6, "total": 11}  # 5 + 6, read back from the table artifact
    assert outputs[("c", "s")]["value"] == "6"

    digest = outputs[("a", "rows")]["artifact"].split(":")[-1]
    assert (chain.root / ".kit" / "objects" / digest[:2] / digest[2:]).is_file()
    for step in "abc":
        executed = chain.root / ".kit" / "runs" / run_id / f"{step}.ipynb"
        assert executed.is_file()
    nb = nbformat.read(chain.root / ".kit" / "runs" / run_id / "a.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)

    run = chain.sql(f"select * from runs where run_id = '{run_id}'")[0]
    assert run["status"] == "succeeded" and run["params"] == {"x": 5, "label": "plain"}
    assert run["bundle_id"] and run["packages_hash"] and run["python_version"]

    spans = {
        s["name"]: s for s in chain.sql(f"select * from spans where run_id = '{run_id}' and kind in ('step', 'tool')")
    }
    assert spans["work"]["attributes"]["total"] == 11 and spans["work"]["parent_id"] == spans["b"]["span_id"]
    # the fan-out: b and c both wait only on a, and the ledger shows them running at once
    assert overlap(spans["b"], spans["c"])

    shown = chain.kit("show", run_id)
    assert shown.returncode == 0
    for step in "abc":
        assert f"\n{step} " in shown.stdout and "succeeded" in shown.stdout


def test_strings_pass_through_verbatim(project):
    nasty = 'quote " and \' and """ triple\nnew line\\n and {braces} and \x00 nul? no'.replace("\x00", "")
    project.notebook("echo.ipynb", "text: str = ''", "import kit\nkit.output('text', text)")
    project.manifest(
        """
        workflow: echo
        version: 1
        params: {text: {type: string}}
        steps:
          echo: {notebook: echo.ipynb, inputs: {text: params.text}, outputs: {text: string}}
        """
    )
    result = project.kit("run", "wf", "-p", f"text={nasty}")
    assert result.returncode == 0, result.stderr
    assert project.sql("select value from outputs")[0]["value"] == nasty


def test_a_failing_step_is_recorded_and_its_dependants_skipped(chain):
    chain.notebook(
        "a.ipynb", "x: int = 1\nlabel: str = ''", "y = x * 2", "raise ValueError(f'bad case {y}')", "print('never')"
    )
    result = chain.kit("run", "wf")
    assert result.returncode == 1
    assert "ValueError" in result.stderr and "Traceback" not in result.stderr
    run_id = result.stdout.split()[1]
    steps = {s["step_id"]: s for s in chain.sql(f"select * from steps where run_id = '{run_id}'")}
    failed = steps["a"]
    assert failed["status"] == "failed"
    assert failed["error_type"] == "ValueError" and failed["error_message"] == "bad case 6"
    assert "raise ValueError" in failed["error_source"] and failed["error_cell"] is not None
    assert Path(failed["executed_notebook"]).is_file()
    nb = nbformat.read(failed["executed_notebook"], as_version=4)
    assert any(o.get("ename") == "ValueError" for c in nb.cells for o in c.get("outputs", []))
    # the failing cell is counted in the notebook as the user wrote it (papermill's added cells aside)
    source = nbformat.read(chain.root / "wf" / "a.ipynb", as_version=4)
    assert "raise ValueError" in source.cells[failed["error_cell"]].source
    assert steps["b"]["status"] == "skipped" and steps["c"]["status"] == "skipped"
    assert chain.sql(f"select status from runs where run_id = '{run_id}'")[0]["status"] == "failed"
    shown = chain.kit("show", run_id).stdout
    assert "failing cell" in shown and "raise ValueError" in shown


def test_a_missing_or_mistyped_output_fails_the_step(chain):
    chain.notebook("c.ipynb", "n: int = 0", "import kit\nkit.output('s', n)")  # an integer, declared string
    chain.notebook("b.ipynb", "n: int = 0\nrows: str = ''", "pass")  # never outputs m
    result = chain.kit("run", "wf")
    assert result.returncode == 1
    steps = {s["step_id"]: s for s in chain.sql("select * from steps")}
    assert steps["b"]["error_type"] == "OutputError" and "'m' was not produced" in steps["b"]["error_message"]
    assert (
        steps["c"]["error_type"] == "OutputError" and "'s' must be string, got integer" in steps["c"]["error_message"]
    )


def test_two_runs_at_once_are_both_recorded_whole(chain):
    # --fresh: a step of one run may otherwise reuse what the other just recorded (no tool span then)
    cmd = [sys.executable, "-m", "kit.cli", "run", "wf", "--workers", "1", "--fresh"]
    procs = [
        subprocess.Popen(cmd, cwd=chain.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = chain.sql("select run_id, status from runs")
    assert len(runs) == 2 and {r["status"] for r in runs} == {"succeeded"}
    for run in runs:
        counts = chain.sql(f"select kind, count(*) as n from spans where run_id = '{run['run_id']}' group by kind")
        by_kind = {c["kind"]: c["n"] for c in counts}
        assert by_kind["step"] == 3 and by_kind["run"] == 1 and by_kind["tool"] == 1
        assert len(chain.sql(f"select * from outputs where run_id = '{run['run_id']}'")) == 5


def test_a_reader_holding_the_ledger_does_not_fail_a_run(chain):
    chain.ledger().write()  # an empty write creates the ledger
    chain.ledger().release()
    reader = duckdb.connect(str(chain.root / ".kit" / "ledger.duckdb"), read_only=True)
    try:
        result = chain.kit("run", "wf", env={"KIT_LEDGER_WAIT": "1"})
        assert result.returncode == 0, result.stderr
    finally:
        reader.close()
    run_id = result.stdout.split()[1]
    steps = chain.sql(f"select status from steps where run_id = '{run_id}'")
    assert [s["status"] for s in steps] == ["succeeded"] * 3
    assert chain.sql(f"select status from runs where run_id = '{run_id}'")[0]["status"] == "succeeded"
    assert not list((chain.root / ".kit" / "pending").glob("*.json"))


def test_an_executed_notebook_opens_with_the_runs_summary(chain):
    done = chain.kit("run", "wf", "-p", "x=5", "--as", "zoe", "--engine", "warm")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1]
    path = chain.sql(f"select executed_notebook from steps where run_id = '{run_id}' and step_id = 'b'")[0]
    nb = nbformat.read(path["executed_notebook"], as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "kit-summary" in first.metadata["tags"]
    for text in (
        run_id,
        "step **`b`**",
        "workflow **demo**",
        "as **zoe**",
        "output `n` of step `a`",
        "output `rows` of step `a` (artifact",
    ):
        assert text in first.source, text
    assert nb.cells[1].cell_type == "markdown"  # the notebook's own cells follow, as written
