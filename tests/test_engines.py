"""The warm engine: kernels reused across steps, each step still starting from a clean namespace."""

from __future__ import annotations

import nbformat


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
    project.notebook("after.ipynb", "x: int = 0", "import kit\nkit.output('ok', True)")
    project.manifest(
        """
        workflow: slow
        version: 1
        steps:
          slow: {notebook: slow.ipynb, timeout: 2}
          independent: {notebook: after.ipynb, outputs: {ok: boolean}}
        """
    )
    result = project.kit("run", "wf", "--engine", "warm", "--workers", "1")
    assert result.returncode == 1
    steps = {s["step_id"]: s for s in project.sql("select * from steps")}
    assert steps["slow"]["error_type"] == "Timeout"
    assert steps["independent"]["status"] == "succeeded"
