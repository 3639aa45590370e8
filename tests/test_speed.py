"""Speed without giving anything up (issue 12): scenarios in parallel, one ledger transaction a step,
`kit show` on one connection, a cached `kit test` that imports no format-checker grammar.

No timing is asserted (machines are noisy): concurrency is shown by two scenarios that can
only pass when they run at the same time, and the ledger's work by counting transactions.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import Project, copy_example

# ---- a workflow whose scenarios can meet only if they run at once ----------------------------

MEET = """
import kit, pathlib, time
place = pathlib.Path(where)
(place / me).touch()
deadline = time.monotonic() + 60
while other and not (place / other).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
kit.output("met", bool(other) and (place / other).exists())
kit.output("twice", 2 * n)
"""


def _meeting_project(root: Path) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    project = Project(root)
    project.notebook("meet.ipynb", "me: str = ''\nother: str = ''\nwhere: str = ''\nn: int = 0", MEET)
    project.notebook("double.ipynb", "twice: int = 0", "import kit\nkit.output('four', 2 * twice)")
    project.manifest(
        """
        workflow: meeting
        version: 1.0.0
        params:
          me: {type: string, default: ''}
          other: {type: string, default: ''}
          where: {type: string, default: ''}
          n: {type: integer, default: 0}
        steps:
          meet:
            notebook: meet.ipynb
            inputs: {me: params.me, other: params.other, where: params.where, n: params.n}
            outputs: {met: boolean, twice: integer}
          double:
            notebook: double.ipynb
            inputs: {twice: meet.twice}
            outputs: {four: integer}
        """
    )
    (root / "rendezvous").mkdir()
    return project


def _scenario(project: Project, name: str, params: dict, expect: str) -> None:
    path = project.root / "scenarios" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"scenario: meeting/{name}", "workflow: meeting", f"params: {params!r}".replace("'", '"'), "expect:"]
    path.write_text("\n".join(lines) + "\n" + textwrap.indent(textwrap.dedent(expect).strip(), "  ") + "\n")


def test_scenarios_run_concurrently_on_two_workers(tmp_path):
    """Each scenario's step waits for a file the other scenario's step creates: both pass only together."""
    project = _meeting_project(tmp_path)
    where = str(tmp_path / "rendezvous")
    _scenario(project, "a", {"me": "a", "other": "b", "where": where}, "meet.met: {equals: true}")
    _scenario(project, "b", {"me": "b", "other": "a", "where": where}, "meet.met: {equals: true}")
    result = project.kit("test", "--workers", "2")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "2 passed, 0 failed" in out
    runs = project.ledger().rows("SELECT run_id, status, workers, engine FROM runs ORDER BY run_id")
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert {r["engine"] for r in runs} == {"fork"}


@pytest.mark.parametrize("presses", [1, 3])
def test_ctrl_c_cancels_every_running_scenario_and_leaves_them_resumable(tmp_path, presses):
    """Once or three times in quick succession (an impatient user): more presses during the cancellation
    must not cut it short, leaving runs `running` or the interpreter aborting."""
    project = _meeting_project(tmp_path)
    place = tmp_path / "rendezvous"
    for name in ("a", "b"):  # each waits (up to 60 s) for a file nobody writes yet
        _scenario(project, name, {"me": name, "other": "go", "where": str(place)}, "meet.met: {equals: true}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kit.cli", "test", "--workers", "2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not ((place / "a").exists() and (place / "b").exists()):
        assert time.monotonic() < deadline and proc.poll() is None, "the two scenarios never ran at once"
        time.sleep(0.1)
    for _ in range(presses):
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.01)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "terminate called" not in err and "cancelled" in err
    ledger = project.ledger()
    runs = ledger.rows("SELECT run_id, scenario_id, status FROM runs ORDER BY scenario_id")
    assert [(r["scenario_id"], r["status"]) for r in runs] == [("meeting/a", "cancelled"), ("meeting/b", "cancelled")]
    steps = ledger.rows("SELECT step_id, status FROM steps ORDER BY run_id, step_id")
    assert [s["status"] for s in steps] == ["pending", "cancelled"] * 2  # double, meet
    (place / "go").touch()
    for run in runs:
        resumed = project.kit("resume", run["run_id"])
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert {r["status"] for r in project.ledger().rows("SELECT status FROM runs")} == {"succeeded"}


def _mixed_suite(root: Path) -> Project:
    """Passing, failing, an invalid file, a run that fails: what the order of the report must not depend on."""
    project = _meeting_project(root)
    where = str(root / "rendezvous")
    for i in range(5):
        _scenario(project, f"p{i}", {"me": f"p{i}", "where": where, "n": i}, f"double.four: {{equals: {4 * i}}}")
    _scenario(project, "wrong", {"me": "w", "where": where, "n": 1}, "double.four: {equals: 5}")
    _scenario(project, "broken", {"me": "x", "where": where, "n": 1}, "triage.four: {equals: 4}")  # no such step
    _scenario(project, "fails", {"me": "f", "where": "/nonexistent/place", "n": 1}, "double.four: {equals: 4}")
    return project


def _normalized(text: str, root: Path) -> str:
    text = text.replace(str(root), "ROOT")
    return re.sub(r"run \S+,", "run RUN,", re.sub(r"kit show \S+", "kit show RUN", text))


def _comparisons(project: Project) -> list[tuple]:
    rows = project.ledger().rows(
        "SELECT scenario_id, expectation, comparator, CAST(expected AS VARCHAR) AS expected, "
        "CAST(actual AS VARCHAR) AS actual, verdict FROM comparisons ORDER BY scenario_id, expectation"
    )
    return [tuple(r.values()) for r in rows]


def test_parallel_results_are_those_of_one_worker_and_the_ledger_is_whole(tmp_path):
    one, two = _mixed_suite(tmp_path / "one"), _mixed_suite(tmp_path / "two")
    serial = one.kit("test", "--workers", "1", "--junit", "junit.xml")
    parallel = two.kit("test", "--workers", "2", "--junit", "junit.xml")
    assert serial.returncode == parallel.returncode == 2, parallel.stdout + parallel.stderr  # the invalid one
    # the same report, in the order of the files, whatever order the scenarios finished in
    assert _normalized(parallel.stdout, two.root) == _normalized(serial.stdout, one.root)
    assert "INVALID" in parallel.stdout and "FAIL meeting/wrong" in parallel.stdout
    assert "5 passed, 2 failed, 1 error" in parallel.stdout
    assert _comparisons(two) == _comparisons(one)
    junit = lambda p: _normalized(re.sub(r'(time|value)="[^"]*"', "", (p.root / "junit.xml").read_text()), p.root)  # noqa: E731
    assert junit(two) == junit(one)

    ledger = two.ledger()
    runs = ledger.rows("SELECT run_id, scenario_id, status FROM runs ORDER BY scenario_id")
    assert [(r["scenario_id"], r["status"]) for r in runs] == [
        ("meeting/fails", "failed"),
        *[(f"meeting/p{i}", "succeeded") for i in range(5)],
        ("meeting/wrong", "succeeded"),
    ]
    for run in runs:
        steps = ledger.rows("SELECT step_id, status, started_at, ended_at FROM steps WHERE run_id = ?", [run["run_id"]])
        assert {s["step_id"] for s in steps} == {"meet", "double"}
        assert all(s["status"] in ("succeeded", "cached", "failed", "skipped") for s in steps), steps
        spans = ledger.rows("SELECT step_id, kind FROM spans WHERE run_id = ?", [run["run_id"]])
        assert ("meet", "step") in {(s["step_id"], s["kind"]) for s in spans}
        assert sum(s["kind"] == "run" for s in spans) == 1
        if run["status"] == "succeeded":
            outputs = ledger.rows("SELECT step_id, name FROM outputs WHERE run_id = ?", [run["run_id"]])
            assert {(o["step_id"], o["name"]) for o in outputs} == {
                ("meet", "met"),
                ("meet", "twice"),
                ("double", "four"),
            }
            assert {s["step_id"] for s in spans if s["kind"] == "step"} == {"meet", "double"}


# ---- one transaction a step ------------------------------------------------------------------


@pytest.fixture
def five_steps(project: Project) -> Project:
    project.notebook("s0.ipynb", "x: int = 0", "import kit\nkit.output('y', x + 1)")
    steps = ["  s0:\n    notebook: s0.ipynb\n    inputs: {x: params.x}\n    outputs: {y: integer}"]
    for i in range(1, 5):
        project.notebook(f"s{i}.ipynb", "x: int = 0", "import kit\nkit.output('y', x + 1)")
        steps.append(f"  s{i}:\n    notebook: s{i}.ipynb\n    inputs: {{x: s{i - 1}.y}}\n    outputs: {{y: integer}}")
    project.manifest(
        "workflow: five\nversion: 1.0.0\nparams:\n  x: {type: integer, default: 0}\nsteps:\n" + "\n".join(steps) + "\n"
    )
    return project


def _counted_run(project: Project, monkeypatch, x: int, fresh: bool = False) -> tuple[int, str]:
    from kit.execution.coordinator import Coordinator, RunRequest
    from kit.ledger.database import Database
    from kit.spec.project import Project as KitProject

    count = [0]
    original = Database.transaction

    def counting(self, *args, **kwargs):
        count[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Database, "transaction", counting)
    kit_project = KitProject.discover(project.root)
    workflow = kit_project.load_workflow(project.root / "wf" / "workflow.yaml")
    outcome = Coordinator(kit_project, progress=False).run(
        RunRequest(workflow=workflow, params={"x": x}, principal="tester", engine="fork", fresh=fresh)
    )
    monkeypatch.setattr(Database, "transaction", original)
    return count[0], outcome.status


def test_a_step_costs_one_ledger_transaction(five_steps, monkeypatch):
    """A 5-step run: one transaction a step (the run's start with the first step's; then a step's result,
    spans and outputs with the next step's start; the last with the run's end); the cache lookups add
    none. All cached: one transaction for the whole run. (Before issue 12: 12 transactions.)"""
    executed, status = _counted_run(five_steps, monkeypatch, 1)
    assert status == "succeeded"
    print(f"5 executed steps: {executed} transactions")
    assert executed <= 1 + 5
    cached, status = _counted_run(five_steps, monkeypatch, 1)
    assert status == "succeeded"
    print(f"5 cached steps: {cached} transactions")
    assert cached <= 1
    ledger = five_steps.ledger()
    rows = ledger.rows("SELECT run_id, step_id, status, cache_key, started_at, ended_at, attempts FROM steps")
    assert len(rows) == 10
    assert {r["status"] for r in rows} == {"succeeded", "cached"}
    assert all(r["cache_key"] and r["started_at"] and r["ended_at"] for r in rows)
    assert ledger.rows("SELECT count(*) AS n FROM spans WHERE kind = 'step'")[0]["n"] == 10
    assert ledger.rows("SELECT count(*) AS n FROM outputs")[0]["n"] == 10


# ---- start-up -------------------------------------------------------------------------------


WATCH_IMPORTS = """
import atexit, json, sys
from kit.cli.base import main
atexit.register(lambda: print("MODULES " + json.dumps(
    {m: getattr(sys.modules.get(m), "__file__", None) is not None  # the real module, not a deferring stand-in
     for m in ("rfc3987_syntax", "lark", "papermill", "pandas")}
)))
sys.argv = ["kit", *sys.argv[1:]]
main()
"""


def test_a_cached_kit_test_imports_no_format_checker_grammar(tmp_path):
    """`kit test` with every step cached: no IRI grammar (rfc3987_syntax, built with lark), no papermill."""
    project = Project(tmp_path)
    copy_example(tmp_path, scenarios=True)
    scenario = "scenarios/casework/C-1004-wrong-vat-france.yaml"
    first = project.kit("test", scenario)
    assert first.returncode == 0, first.stdout + first.stderr
    env = {k: v for k, v in os.environ.items() if k != "KIT_HOME"}
    again = subprocess.run(
        [sys.executable, "-c", WATCH_IMPORTS, "test", scenario],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    modules = json.loads(again.stdout.split("MODULES ", 1)[1])
    # lark itself is imported: celpy parses the example's `when:` rules with it (≈ 0.1 s); the IRI grammar is not built
    assert not modules["rfc3987_syntax"] and not modules["papermill"], modules
    steps = project.ledger().rows("SELECT status FROM steps WHERE run_id = (SELECT max(run_id) FROM runs)")
    assert {s["status"] for s in steps} <= {"cached", "skipped"}  # nothing ran: the scenario stops at the gate


def test_kit_run_on_the_fork_engine_imports_no_format_checker_grammar(five_steps):
    """A run that executes its steps (not cached): the coordinator imports neither the IRI grammar nor
    papermill; the forked step processes are the zygote's, which defers the grammar itself."""
    env = {k: v for k, v in os.environ.items() if k != "KIT_HOME"}
    done = subprocess.run(
        [sys.executable, "-c", WATCH_IMPORTS, "run", "wf", "--fresh", "--engine", "fork"],
        cwd=five_steps.root,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    modules = json.loads(done.stdout.split("MODULES ", 1)[1])
    assert not modules["rfc3987_syntax"] and not modules["lark"] and not modules["papermill"], modules  # no when:


def test_kit_show_opens_one_connection(chain, monkeypatch):
    run = chain.kit("run", "wf/workflow.yaml", "--engine", "fork")
    assert run.returncode == 0, run.stderr
    import duckdb

    from kit.ledger import database

    database._release_leases()
    opened = []
    real = duckdb.connect

    def connect(*args, **kwargs):
        opened.append(args[0] if args else kwargs.get("database"))
        return real(*args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", connect)
    result = chain.cli("show", "last")
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output
    assert [o for o in opened if o != ":memory:"] == [str(chain.root / ".kit" / "ledger.duckdb")]


def test_the_help_says_what_workers_means():
    out = subprocess.run([sys.executable, "-m", "kit.cli", "test", "--help"], capture_output=True, text=True).stdout
    assert "Scenarios run at once" in " ".join(out.split())


def test_the_git_commit_is_asked_once_and_again_after_a_commit(tmp_path, monkeypatch):
    """Provenance keeps HEAD's commit while HEAD and its branch's ref are unchanged (one `git` process a
    suite, not one a scenario), and sees the next commit."""
    from kit.execution import provenance

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True)

    git("init", "-q", "-b", "main")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "one")
    first = git("rev-parse", "HEAD").stdout.strip()
    calls = []
    real = subprocess.run
    monkeypatch.setattr(provenance.subprocess, "run", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert provenance.git_commit(tmp_path) == first
    assert provenance.git_commit(tmp_path) == first
    assert len(calls) == 1
    monkeypatch.setattr(provenance.subprocess, "run", real)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "two")
    second = git("rev-parse", "HEAD").stdout.strip()
    assert second != first and provenance.git_commit(tmp_path) == second
    git("checkout", "-q", "--detach", first)
    assert provenance.git_commit(tmp_path) == first
    # a project outside any repository: no commit, and no `git` process to say so
    outside = tmp_path.parent / (tmp_path.name + "-no-repo")
    outside.mkdir()
    monkeypatch.setattr(provenance.subprocess, "run", lambda *a, **k: calls.append(a) or real(*a, **k))
    if not any((d / ".git").exists() for d in outside.parents):
        calls.clear()
        assert provenance.git_commit(outside) is None
        assert calls == []
