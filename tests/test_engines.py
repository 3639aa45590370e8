"""Engines: the warm engine's isolation between steps, timeouts, cancellation, and where a step failed.

The fork engine, the default, has its own tests in test_fork.py; cancellation is checked here on all three.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import nbformat
import pytest

from kit.execution import papermill_engines
from kit.execution.engines import cancel_running
from kit.execution.step import execute_step
from kit.execution.task import StepTask


def test_warm_steps_share_a_kernel_but_not_a_namespace(project):
    project.notebook(
        "a.ipynb",
        "x: int = 1",
        "import kit, os\nleftover = 'from a'\nkit.output('pid', os.getpid())\nkit.output('cwd', os.getcwd())",
    )
    project.notebook(
        "sub/b.ipynb",
        "x: int = 1",
        "import kit, os\nkit.output('pid', os.getpid())\nkit.output('cwd', os.getcwd())\n"
        "kit.output('seen', 'leftover' in globals())\nkit.output('step', os.environ['KIT_STEP'])",
    )
    project.manifest(
        """
        workflow: warm
        version: 1
        steps:
          a: {notebook: a.ipynb, outputs: {pid: integer, cwd: string}}
          b: {notebook: sub/b.ipynb, outputs: {pid: integer, cwd: string, seen: boolean, step: string}, after: [a]}
        """
    )
    result = project.kit("run", "wf", "--engine", "warm", "--workers", "1")
    assert result.returncode == 0, result.stderr
    values = {(o["step_id"], o["name"]): o["value"] for o in project.sql("select * from outputs")}
    assert values[("a", "pid")] == values[("b", "pid")]  # one kernel served both steps
    assert values[("b", "seen")] is False  # but b did not see a's names
    assert values[("a", "cwd")].endswith("/wf") and values[("b", "cwd")].endswith("/wf/sub")
    assert values[("b", "step")] == "b"
    run = project.sql("select engine, isolation from runs")[0]
    assert run["engine"] == "warm" and "namespace reset per step" in run["isolation"]
    executed = nbformat.read(project.root / ".kit" / "runs" / result.stdout.split()[1] / "b.ipynb", as_version=4)
    counts = [c.execution_count for c in executed.cells if c.cell_type == "code"]
    assert counts[0] == 1  # execution counts start again for each step


def test_a_warm_step_past_its_timeout_fails_with_timeout_and_the_run_goes_on(project):
    project.notebook("slow.ipynb", "seconds: int = 600", "import time\ntime.sleep(seconds)")
    project.notebook(
        "stubborn.ipynb",
        "x: int = 0",
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(600)",
    )
    project.notebook("after.ipynb", "x: int = 0", "import kit\nkit.output('ok', True)")
    project.manifest(
        """
        workflow: slow
        version: 1
        steps:
          slow: {notebook: slow.ipynb, timeout: 2}
          stubborn: {notebook: stubborn.ipynb, timeout: 2}
          independent: {notebook: after.ipynb, outputs: {ok: boolean}}
        """
    )
    result = project.kit("run", "wf", "--engine", "warm", "--workers", "1")
    assert result.returncode == 1
    steps = {s["step_id"]: s for s in project.sql("select * from steps")}
    assert steps["slow"]["error_type"] == "Timeout" and steps["stubborn"]["error_type"] == "Timeout"
    assert steps["slow"]["error_message"].endswith("its kernel was interrupted")
    assert steps["stubborn"]["error_message"].endswith("its kernel did not stop when interrupted and was killed")
    assert steps["independent"]["status"] == "succeeded"


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_warm_step_leaves_no_process_variable_builtin_or_monkeypatch_to_the_next(project):
    project.notebook(
        "leak.ipynb",
        "x: int = 0",
        """
        import builtins, os, subprocess, textwrap, kit
        children = [subprocess.Popen(["sleep", "300"]), subprocess.Popen(["sleep", "300"], start_new_session=True)]
        kit.output("pids", [child.pid for child in children])
        os.environ["LEAK"] = "1"
        os.environ["KIT_TEST_CHANGED"] = "changed"
        del os.environ["KIT_TEST_DELETED"]
        builtins.leaked = 1
        builtins.print = lambda *args, **kwargs: None
        prefix = "patched by leak"
        textwrap.shorten = lambda *args, **kwargs: prefix
        """,
    )
    project.notebook(
        "check.ipynb",
        "pids: list = []",
        """
        import builtins, os, psutil, textwrap, kit
        def running(pid):
            try:
                return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return False
        kit.output("running", [running(pid) for pid in pids])
        kit.output("env", [os.environ.get(k) for k in ("LEAK", "KIT_TEST_CHANGED", "KIT_TEST_DELETED")])
        kit.output("builtins", [hasattr(builtins, "leaked"), type(print).__name__])
        kit.output("shorten", textwrap.shorten("not patched", 20))
        """,
    )
    project.manifest(
        """
        workflow: leaks
        version: 1
        steps:
          leak: {notebook: leak.ipynb, outputs: {pids: array}}
          check:
            notebook: check.ipynb
            inputs: {pids: leak.pids}
            outputs: {running: array, env: array, builtins: array, shorten: string}
        """
    )
    env = {"KIT_TEST_CHANGED": "as started", "KIT_TEST_DELETED": "as started"}
    result = project.kit("run", "wf", "--engine", "warm", "--workers", "1", env=env)
    values = {(o["step_id"], o["name"]): o["value"] for o in project.sql("select * from outputs")}
    pids = values[("leak", "pids")]
    try:
        assert result.returncode == 0, result.stderr
        assert values[("check", "running")] == [False, False]  # killed when `leak` ended, not when the run did
        assert values[("check", "env")] == [None, "as started", "as started"]
        assert values[("check", "builtins")] == [False, "builtin_function_or_method"]
        assert values[("check", "shorten")] == "not patched"
    finally:
        for pid in pids:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_warm_kernel_that_fails_its_preparation_is_replaced(project):
    project.notebook(
        "spoil.ipynb",
        "x: int = 0",
        "import os, sys, kit\nkit.output('pid', os.getpid())\nsys.modules['kit.kernel.warm'].prepare = lambda *a: 1 / 0",
    )
    project.notebook("after.ipynb", "x: int = 0", "import os, kit\nkit.output('pid', os.getpid())")
    project.manifest(
        """
        workflow: broken
        version: 1
        steps:
          spoil: {notebook: spoil.ipynb, outputs: {pid: integer}}
          after: {notebook: after.ipynb, outputs: {pid: integer}, after: [spoil]}
        """
    )
    result = project.kit("run", "wf", "--engine", "warm", "--workers", "1")
    assert result.returncode == 0, result.stderr
    values = {(o["step_id"], o["name"]): o["value"] for o in project.sql("select * from outputs")}
    assert values[("after", "pid")] != values[("spoil", "pid")]  # `after` ran on a fresh kernel


def _task(root: Path, step_id: str, notebook: Path, engine: str, timeout: float | None = None) -> StepTask:
    """A step task as the coordinator makes one, for engines driven in this process."""
    return StepTask(
        run_id="r1",
        step_id=step_id,
        attempt=1,
        notebook=str(notebook),
        workdir=str(notebook.parent),
        parameters={},
        outputs={},
        output_notebook=str(root / "runs" / f"{step_id}.ipynb"),
        spool=str(root / "spool" / step_id),
        objects=str(root / "objects"),
        engine=engine,
        timeout=timeout,
    )


def test_a_warm_kernel_that_hangs_in_its_preparation_is_replaced(project, monkeypatch):
    monkeypatch.setattr(papermill_engines, "PREAMBLE_TIMEOUT", 2)
    hang = project.notebook(
        "hang.ipynb",
        "x: int = 0",
        "import sys, time\nsys.modules['kit.kernel.warm'].prepare = lambda *a: time.sleep(600)",
    )
    after = project.notebook("after.ipynb", "x: int = 0", "print('ran')")
    try:
        assert execute_step(_task(project.root, "hang", hang, "warm")).ok
        started = time.monotonic()
        result = execute_step(_task(project.root, "after", after, "warm", timeout=30))
        assert result.ok, result.error_message
        assert time.monotonic() - started < 20
    finally:
        papermill_engines._drop_warm_kernel()


@pytest.mark.parametrize("engine", ["fork", "papermill", "warm"])
def test_cancel_running_stops_a_step_its_kernel_and_its_processes_at_once(project, engine):
    pid_file = project.root / "child.pid"
    notebook = project.notebook(
        "sleepy.ipynb",
        "x: int = 0",
        f"""
        import os, subprocess, time
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)
        with open("child.pid.tmp", "w") as f:
            f.write(str(child.pid))
        os.replace("child.pid.tmp", {str(pid_file)!r})
        time.sleep(60)
        """,
    )
    results = []
    worker = threading.Thread(target=lambda: results.append(execute_step(_task(project.root, "s", notebook, engine))))
    worker.start()
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    try:
        cancelled_at = time.monotonic()
        cancel_running()
        worker.join(15)
        assert not worker.is_alive() and time.monotonic() - cancelled_at < 5
        assert results[0].error_type == "Cancelled" and not results[0].ok
        assert not _running(child)
    finally:
        if _running(child):
            os.kill(child, signal.SIGKILL)


def test_the_failing_cell_is_counted_in_the_users_notebook(project):
    project.notebook("bad.ipynb", "x: int = 0", "raise ValueError('bad')", "print('never reached')")
    project.manifest(
        """
        workflow: bad
        version: 1
        params: {x: {type: integer, default: 5}}
        steps:
          bad: {notebook: bad.ipynb, inputs: {x: params.x}}
        """
    )
    result = project.kit("run", "wf", "--workers", "1")
    assert result.returncode == 1
    step = project.sql("select error_cell, executed_notebook from steps")[0]
    assert step["error_cell"] == 2  # 0 the title, 1 the parameters, 2 the cell that raised
    executed = nbformat.read(step["executed_notebook"], as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)  # papermill added cells


def test_an_engine_that_breaks_fails_the_step_saying_so_instead_of_the_run(project):
    """A fault of the engine itself (not of the step's code) is the step's EngineError, with the
    traceback kept for whoever mends the engine; the coordinator goes on as the manifest says."""
    from kit.execution.engines import ENGINES, Engine

    def broken(task: StepTask):
        raise RuntimeError("the engine lost its way")

    notebook = project.notebook("a.ipynb", "x: int = 0", "y = x")
    ENGINES.register("broken", Engine("broken", "none", broken))
    try:
        result = execute_step(_task(project.root / ".kit", "a", notebook, "broken"))
    finally:
        ENGINES.reset()
    assert result.status == "failed" and result.error_type == "EngineError"
    assert result.error_message == "the broken engine could not execute the step: RuntimeError: the engine lost its way"
    assert "Traceback" in result.traceback and "the engine lost its way" in result.traceback
