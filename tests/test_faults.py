"""An operator's bad day: a reader that holds the ledger, a damaged ledger file, a full disk,
Ctrl-C and SIGTERM. Nothing is lost, nothing is stranded, no traceback (DESIGN section 6)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import psutil
import pytest

KIT_YAML = """
principals: {alice: [analyst], bob: [reviewer]}
roles: {analyst: [], reviewer: []}
"""


@pytest.fixture
def gated(project):
    (project.root / "kit.yaml").write_text(KIT_YAML)
    project.notebook("a.ipynb", "x: int = 1", "import kit\nkit.output('y', {'x': x})")
    project.manifest(
        """
        workflow: gated
        version: 1
        steps:
          a: {notebook: a.ipynb, outputs: {y: object}}
          review: {approval: {approvers: [reviewer], show: [a.y]}, after: [a]}
        """
    )
    return project


def test_a_reader_holding_the_ledger_neither_fails_a_run_at_its_gate_nor_hides_it(gated):
    gated.ledger().write()
    gated.ledger().release()
    reader = duckdb.connect(str(gated.root / ".kit" / "ledger.duckdb"), read_only=True)
    try:
        started = gated.kit("run", "wf", "--as", "alice", env={"KIT_LEDGER_WAIT": "1"})
        assert started.returncode == 3, started.stderr
        assert "waits for approval" in started.stdout and "Traceback" not in started.stderr
        run_id = started.stdout.split()[1]
        assert list((gated.root / ".kit" / "pending").glob("*.json"))  # its rows wait in the journal
        shown = gated.kit("show", run_id[:20], env={"KIT_LEDGER_WAIT": "1"})
        assert shown.returncode == 1 and "held by another process" in shown.stderr
        assert "no run" not in shown.stderr and "Traceback" not in shown.stderr
    finally:
        reader.close()
    shown = gated.kit("show", run_id)
    assert shown.returncode == 0 and f"run {run_id}: waiting" in shown.stdout
    listed = gated.kit("runs")
    assert run_id in listed.stdout
    assert gated.kit("approve", run_id, "review", "--as", "bob").returncode == 0
    assert not list((gated.root / ".kit" / "pending").glob("*.json"))


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_a_damaged_ledger_is_one_line_naming_the_file(chain, damage):
    assert chain.kit("run", "wf", "--engine", "warm").returncode == 0
    path = chain.root / ".kit" / "ledger.duckdb"
    chain.ledger().release()
    for extra in path.parent.glob("ledger.duckdb.wal"):
        extra.unlink()
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "garbage": b"not a database " * 500, "truncated": data[:10000]}[damage])
    for args in (("runs",), ("run", "wf"), ("audit", "verify"), ("show", "last"), ("sql", "select 1")):
        result = chain.kit(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        # a file cut short may still open: then what is missing is found (the audit head knows its end)
        assert str(path) in result.stderr or "audit chain broken" in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# --------------------------------------------------------------------------- a full disk


BIG = """
import kit, numpy as np, pandas as pd
kit.output("big", pd.DataFrame({"v": np.random.default_rng(0).random(rows)}))
"""


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_a_full_disk_fails_the_step_leaves_nothing_behind_and_resume_works_after(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "6m"):
        pytest.skip("a full disk needs a small tmpfs, which only root may mount here")
    try:
        from conftest import Project

        project = Project(disk)
        project.notebook("big.ipynb", "rows: int = 10", BIG)
        project.manifest(
            """
            workflow: big
            version: 1
            params: {rows: {type: integer}}
            steps:
              big: {notebook: big.ipynb, inputs: {rows: params.rows}, outputs: {big: table}}
            """
        )
        full = project.kit("run", "wf", "-p", "rows=2000000", "--engine", "warm")
        assert full.returncode == 1, full.stdout + full.stderr
        assert "Traceback" not in full.stderr and "NoSpace" in full.stderr and "kit gc" in full.stderr
        run_id = full.stdout.split()[1]
        step = project.sql(f"select status, error_type from steps where run_id = '{run_id}'")[0]
        assert step == {"status": "failed", "error_type": "NoSpace"}
        assert project.sql(f"select status from runs where run_id = '{run_id}'")[0]["status"] == "failed"
        leftovers = list((disk / ".kit" / "objects").glob(".tmp-*")) + list((disk / ".kit" / "runs").glob("*/.spool/*"))
        assert leftovers == []
        assert project.kit("gc").returncode == 0
        resumed = project.kit("resume", run_id, "-p", "rows=100")
        assert resumed.returncode == 0, resumed.stderr
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# --------------------------------------------------------------------------- Ctrl-C and SIGTERM


def test_under_nohup_a_closed_terminal_does_not_stop_a_run(project):
    """SIGHUP cancels a run like Ctrl-C, unless the command was started ignoring it (nohup): then it runs on."""
    project.notebook(
        "wait.ipynb",
        "x: int = 0",
        "import kit, pathlib, time\npathlib.Path('../started').touch()\n"
        "for _ in range(600):\n    if pathlib.Path('../go').exists():\n        break\n    time.sleep(0.1)\n"
        "kit.output('done', True)",
    )
    project.manifest("workflow: w\nversion: 1\nsteps:\n  wait: {notebook: wait.ipynb, outputs: {done: boolean}}\n")
    nohup = lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)  # noqa: E731 - as nohup starts it
    proc = project.start("run", "wf", start_new_session=True, preexec_fn=nohup)
    deadline = time.monotonic() + 60
    while not (project.root / "started").exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the step never started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert proc.poll() is None
    (project.root / "go").touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert project.sql("select status from runs")[0]["status"] == "succeeded"


def _as_from_a_terminal() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


SLOW = """
import kit, pathlib, subprocess, time
child = subprocess.Popen(["sleep", "300"])
pathlib.Path("../child.pid").write_text(str(child.pid))
if not pathlib.Path("../quick").exists():
    time.sleep(120)
kit.output("done", True)
"""


@pytest.mark.parametrize("how", ["sigint-to-group", "sigterm", "sighup", "sigint-three-times"])
def test_an_interrupted_run_ends_cancelled_stops_its_processes_and_resumes(project, how):
    project.notebook("slow.ipynb", "x: int = 0", SLOW)
    project.manifest(
        """
        workflow: slow
        version: 1
        steps:
          slow: {notebook: slow.ipynb, outputs: {done: boolean}}
        """
    )
    # As from a terminal, whatever started the tests (nohup, a background job) ignores: SIGINT and SIGHUP at default
    proc = project.start("run", "wf", start_new_session=True, preexec_fn=_as_from_a_terminal)
    pid_file = project.root / "child.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pid_file.exists(), "the step never started"
    time.sleep(0.5)
    child = int(pid_file.read_text())
    if how in ("sigterm", "sighup"):  # a service manager stopping it; the terminal it ran in closed
        proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGHUP)
    else:
        for _ in range(3 if how == "sigint-three-times" else 1):  # the impatient press again while it cancels
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.01)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "cancelled" in err
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the step's child process outlived the run"
        time.sleep(0.2)
    run = project.sql("select run_id, status from runs")[0]
    assert run["status"] == "cancelled"
    assert project.sql("select status from steps")[0]["status"] == "cancelled"
    actions = [a["action"] for a in project.sql("select action from audit order by seq")]
    assert actions[-1] == "run.cancelled"
    (project.root / "quick").write_text("1")
    resumed = project.kit("resume", run["run_id"])
    assert resumed.returncode == 0, resumed.stderr
    assert project.sql("select status from runs")[0]["status"] == "succeeded"
