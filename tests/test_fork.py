"""The fork engine, kit's default: a process per step forked from a pre-imported helper.

Isolation, timeouts, crashes and Jupyter's rich outputs on the default engine, and the
differential checks: the same outputs, executed notebooks and scenario verdicts as under
papermill (and warm), timings and ids aside.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import nbformat
import pytest
from conftest import Project, copy_example

from kit.execution import fork_engine


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill(pids: list[int]) -> None:
    for pid in pids:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)


def _values(project: Project, run_id: str | None = None) -> dict:
    where = f" where run_id = '{run_id}'" if run_id else ""
    return {(o["step_id"], o["name"]): o["value"] for o in project.sql(f"select * from outputs{where}")}


def _run_id(result) -> str:
    return result.stdout.split()[1]


def _helper_for(notebook: str) -> fork_engine.Zygote:
    """The helper a step of `notebook` would be forked from (the current one, or a new one), as `_fork_step` chooses."""
    with fork_engine._ZYGOTE_LOCK:
        return fork_engine._choose(fork_engine.workflow_imports(notebook))


def test_a_step_leaves_no_variable_environment_builtin_global_patch_or_process_to_the_next(project):
    project.notebook(
        "leak.ipynb",
        "x: int = 0",
        """
        import builtins, json, os, subprocess, textwrap, kit
        import numpy as np
        children = [subprocess.Popen(["sleep", "300"]), subprocess.Popen(["sleep", "300"], start_new_session=True)]
        daemon = subprocess.run("sleep 300 >/dev/null 2>&1 & echo $!", shell=True, capture_output=True, text=True)
        kit.output("pids", [child.pid for child in children] + [int(daemon.stdout)])
        kit.output("pid", os.getpid())
        kit.output("draw", float(np.random.rand()))
        os.environ["LEAK"] = "1"
        os.environ["KIT_TEST_CHANGED"] = "changed"
        builtins.leaked = 1
        json.LEAKED = "a module-level global"
        textwrap.shorten = lambda *args, **kwargs: "patched by leak"
        leftover = "from leak"
        """,
    )
    project.notebook(
        "check.ipynb",
        "pids: list = []",
        """
        import builtins, json, os, psutil, textwrap, kit
        import numpy as np
        def running(pid):
            try:
                return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return False
        kit.output("running", [running(pid) for pid in pids])
        kit.output("env", [os.environ.get(k) for k in ("LEAK", "KIT_TEST_CHANGED")])
        kit.output("seen", [hasattr(builtins, "leaked"), hasattr(json, "LEAKED"), "leftover" in globals()])
        kit.output("shorten", textwrap.shorten("not patched", 20))
        kit.output("pid", os.getpid())
        kit.output("draw", float(np.random.rand()))
        kit.output("blas", float((np.ones((300, 300)) @ np.ones((300, 300)))[0, 0]))  # numpy's threads after a fork
        """,
    )
    project.manifest(
        """
        workflow: leaks
        version: 1
        steps:
          leak: {notebook: leak.ipynb, outputs: {pids: array, pid: integer, draw: number}}
          check:
            notebook: check.ipynb
            inputs: {pids: leak.pids}
            outputs: {running: array, env: array, seen: array, shorten: string, pid: integer, draw: number, blas: number}
        """
    )
    result = project.kit("run", "wf", "--workers", "1", env={"KIT_TEST_CHANGED": "as started"})  # the default engine
    values = _values(project)
    pids = values.get(("leak", "pids"), [])
    try:
        assert result.returncode == 0, result.stderr
        assert values[("check", "running")] == [False, False, False]  # killed when `leak` ended, the daemon too
        assert values[("check", "env")] == [None, "as started"]
        assert values[("check", "seen")] == [False, False, False]
        assert values[("check", "shorten")] == "not patched"
        assert values[("check", "pid")] != values[("leak", "pid")]
        assert values[("check", "draw")] != values[("leak", "draw")]  # numpy's random state is not the helper's
        assert values[("check", "blas")] == 300.0
    finally:
        _kill(pids)
    run = project.sql("select engine, isolation from runs")[0]
    assert run == {"engine": "fork", "isolation": "process per step"}


def test_a_step_past_its_timeout_is_killed_with_everything_it_started(project):
    started = (
        "import json, signal, subprocess, time\n"
        'children = [subprocess.Popen(["sleep", "300"]), subprocess.Popen(["sleep", "300"], start_new_session=True)]\n'
        'with open(f"{name}.pids", "w") as fh:\n'
        "    json.dump([child.pid for child in children], fh)\n"
    )
    project.notebook("slow.ipynb", "name: str = 'slow'", started + "time.sleep(600)")
    project.notebook(
        "stubborn.ipynb",
        "name: str = 'stubborn'",
        started + "signal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(600)",
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
    result = project.kit("run", "wf", "--workers", "3")
    pids = [
        pid for name in ("slow", "stubborn") for pid in json.loads((project.root / "wf" / f"{name}.pids").read_text())
    ]
    try:
        assert result.returncode == 1
        steps = {s["step_id"]: s for s in project.sql("select * from steps")}
        assert steps["slow"]["error_type"] == "Timeout" and steps["stubborn"]["error_type"] == "Timeout"
        assert steps["slow"]["error_message"].endswith("its process was interrupted")
        assert steps["stubborn"]["error_message"].endswith("its process did not stop when interrupted and was killed")
        assert steps["independent"]["status"] == "succeeded"
        assert not any(_running(pid) for pid in pids)
        executed = nbformat.read(steps["slow"]["executed_notebook"], as_version=4)  # interrupted: it wrote it
        assert any(o.get("ename") == "KeyboardInterrupt" for c in executed.cells for o in c.get("outputs", []))
    finally:
        _kill(pids)


def test_a_step_whose_process_dies_fails_clearly_and_the_run_goes_on(project):
    project.notebook("a.ipynb", "x: int = 0", "import kit\nkit.output('n', x + 1)")
    project.notebook(
        "crash.ipynb",
        "n: int = 0",
        """
        import json, os, subprocess
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)
        with open("crash.pid", "w") as fh:
            json.dump(child.pid, fh)
        """,
        "os.abort()",
        "import kit\nkit.output('m', n)",
    )
    project.notebook("after.ipynb", "m: int = 0", "import kit\nkit.output('k', m)")
    project.manifest(
        """
        workflow: crash
        version: 1
        steps:
          a: {notebook: a.ipynb, outputs: {n: integer}}
          crash: {notebook: crash.ipynb, inputs: {n: a.n}, outputs: {m: integer}}
          dependant: {notebook: after.ipynb, inputs: {m: crash.m}, outputs: {k: integer}}
          branch: {notebook: after.ipynb, inputs: {m: a.n}, outputs: {k: integer}}
        """
    )
    result = project.kit("run", "wf", "--workers", "1")
    child = json.loads((project.root / "wf" / "crash.pid").read_text())
    try:
        assert result.returncode == 1
        steps = {s["step_id"]: s for s in project.sql("select * from steps")}
        crash = steps["crash"]
        assert crash["status"] == "failed" and crash["error_type"] == "ProcessDied"
        assert (
            "killed by SIGABRT (os.abort(), or a failed assertion in native code) in cell 3" in crash["error_message"]
        )
        assert crash["error_cell"] == 3 and "os.abort()" in crash["error_source"]
        assert "Fatal Python error: Aborted" in crash["traceback"]
        assert steps["dependant"]["status"] == "skipped" and steps["branch"]["status"] == "succeeded"
        assert "ProcessDied" in result.stdout + result.stderr
        assert not _running(child)  # it left its session: the helper, its subreaper, killed it
    finally:
        _kill([child])


RICH = (
    """
    import sys
    import pandas as pd
    from IPython.display import HTML, Markdown, display
    df = pd.DataFrame({"a": range(n), "b": list("xyz")[:n]})
    display(Markdown("## a title"))
    handle = display(HTML("<b>first</b>"), display_id=True)
    handle.update(HTML("<b>second</b>"))
    print("to stdout")
    print("to stderr", file=sys.stderr)
    df
    """,
    """
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2, 3])
    plt.show()
    """,
    "%%capture captured\nprint('captured, not shown')",
    "print(captured.stdout.strip())\n%time total = sum(range(10))\n!echo from a shell",
    "def fail():\n    return 1 / 0\nfail()",
)


def _outputs(cell) -> list:
    return [(o.output_type, o.get("name") or sorted(o.get("data", {}))) for o in cell.get("outputs", [])]


def test_rich_outputs_magics_and_tracebacks_look_as_jupyter_shows_them(project):
    project.notebook("rich.ipynb", "n: int = 1", *RICH)
    project.manifest(
        """
        workflow: rich
        version: 1
        params: {n: {type: integer, default: 3}}
        steps:
          rich: {notebook: rich.ipynb, inputs: {n: params.n}}
        """
    )
    result = project.kit("run", "wf")
    assert result.returncode == 1
    step = project.sql("select * from steps")[0]
    assert step["error_type"] == "ZeroDivisionError" and step["error_cell"] == 6
    nb = nbformat.read(step["executed_notebook"], as_version=4)
    papermill = nb.metadata.papermill
    assert papermill["parameters"] == {"n": 3} and papermill["exception"] is True
    assert nb.metadata.language_info["name"] == "python"
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert ["papermill-error-cell-tag"] in tags  # papermill's banner
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert injected.source == "# Parameters\nn = 3\n" and injected.execution_count == 2
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.metadata.papermill["status"] in ("completed", "failed") for c in code)
    assert _outputs(code[2]) == [
        ("display_data", ["text/markdown", "text/plain"]),
        ("display_data", ["text/html", "text/plain"]),
        ("stream", "stdout"),
        ("stream", "stderr"),
        ("execute_result", ["text/html", "text/plain"]),
    ]
    assert code[2].outputs[1].data["text/html"] == "<b>second</b>"  # the update reached the displayed output
    assert "<table" in code[2].outputs[4].data["text/html"]
    assert _outputs(code[3]) == [("display_data", ["image/png", "text/plain"])]
    assert code[4].outputs == []
    shown = "".join(o.text for o in code[5].outputs)
    assert shown.startswith("captured, not shown\nCPU times") and "Wall time" in shown and "from a shell" in shown
    error = code[6].outputs[0]
    assert error.output_type == "error" and error.ename == "ZeroDivisionError"
    assert "\x1b[" in error.traceback[0] and "Cell In[7], line 3" in re.sub(r"\x1b\[[0-9;]*m", "", error.traceback[2])


def test_a_cell_too_deep_for_the_parser_fails_its_own_step_and_no_other(project):
    """The helper's static import scan reads every notebook of the workflow: a cell nested too deeply for
    Python's parser must not break the scan (and with it every step), only its own step, as a kernel does."""
    project.notebook("deep.ipynb", "x: int = 0", "y = 0" + "+1" * 100_000)
    project.notebook("fine.ipynb", "x: int = 0", "import kit\nkit.output('y', x + 1)")
    project.manifest(
        "workflow: w\nversion: 1\nsteps:\n"
        "  deep: {notebook: deep.ipynb}\n"
        "  fine: {notebook: fine.ipynb, outputs: {y: integer}}\n"
    )
    result = project.kit("run", "wf", "--fresh")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    steps = {s["step_id"]: s for s in project.sql("select step_id, status, error_type from steps")}
    assert steps["fine"]["status"] == "succeeded" and steps["deep"]["status"] == "failed"
    assert steps["deep"]["error_type"] == "RecursionError"
    assert _values(project) == {("fine", "y"): 1}


def test_a_step_opening_a_widget_says_it_needs_a_real_kernel(project):
    project.notebook("w.ipynb", "x: int = 0", "import ipywidgets\nipywidgets.IntSlider(value=x)")
    project.manifest("workflow: w\nversion: 1\nsteps:\n  w: {notebook: w.ipynb}\n")
    result = project.kit("run", "wf")
    assert result.returncode == 1
    step = project.sql("select error_type, error_message from steps")[0]
    assert step["error_type"] == "NeedsKernel"
    assert "--engine warm" in step["error_message"] and "--engine papermill" in step["error_message"]


# ---- fork against papermill -------------------------------------------------------------


def _comparable(path: str | Path) -> dict:
    """An executed notebook without what differs between two executions: times, ids, run and file names."""
    nb = json.loads(Path(path).read_text())
    for key in ("start_time", "end_time", "duration", "input_path", "output_path"):
        nb["metadata"].get("papermill", {}).pop(key, None)
    for cell in nb["cells"]:
        cell.pop("id", None)
        cell["metadata"].pop("execution", None)
        for key in ("start_time", "end_time", "duration"):
            cell["metadata"].get("papermill", {}).pop(key, None)
        if "kit-summary" in cell["metadata"].get("tags", []):
            cell["source"] = "(the run's summary)"
    text = json.dumps(nb, sort_keys=True, ensure_ascii=False)
    text = re.sub(r"(CPU times|Wall time): [^\"\\]*", r"\1", text)
    return json.loads(re.sub(r"ipykernel_\d+", "ipykernel", text))


def _executed(project: Project, run_id: str) -> dict[str, dict]:
    rows = project.sql(f"select step_id, executed_notebook from steps where run_id = '{run_id}'")
    return {r["step_id"]: _comparable(r["executed_notebook"]) for r in rows if r["executed_notebook"]}


def test_fork_and_papermill_give_the_same_outputs_and_executed_notebooks(chain):
    chain.notebook("rich.ipynb", "n: int = 1", *RICH)
    chain.manifest(
        """
        workflow: demo
        version: 1.0.0
        params:
          x: {type: integer, default: 3}
          label: {type: string, default: plain}
        steps:
          a: {notebook: a.ipynb, inputs: {x: params.x, label: params.label}, outputs: {n: integer, label: string, rows: table}}
          b: {notebook: b.ipynb, inputs: {n: a.n, rows: a.rows}, outputs: {m: {type: object, required: [n, total]}}}
          c: {notebook: c.ipynb, inputs: {n: a.n}, outputs: {s: string}}
          rich: {notebook: rich.ipynb, inputs: {n: params.x}}
        """
    )
    runs = {}
    for engine in ("fork", "papermill"):
        result = chain.kit("run", "wf", "-p", "x=2", "--engine", engine)
        assert result.returncode == 1, result.stderr  # `rich` fails, on purpose, in its last cell
        runs[engine] = _run_id(result)
    assert _values(chain, runs["fork"]) == _values(chain, runs["papermill"])
    fork, papermill = _executed(chain, runs["fork"]), _executed(chain, runs["papermill"])
    assert set(fork) == {"a", "b", "c", "rich"}
    for step in fork:
        assert fork[step] == papermill[step], step


def test_a_step_that_closes_its_standard_descriptors_still_prints_as_under_papermill(project):
    """A cell closing fds 1 and 2 (and a file then opened taking number 1) must not fail the step on fork
    nor leak the file into the output: its prints reach the notebook, as in a kernel."""
    project.notebook(
        "closing.ipynb",
        "x: int = 0",
        "import os\nos.close(1)\nos.close(2)\nprint('after', x)\n"
        "f = open('taken.txt', 'w')\nf.write('a file, not output\\n')\nf.flush()\nprint('still', f.fileno())",
    )
    project.manifest("workflow: w\nversion: 1\nsteps:\n  c: {notebook: closing.ipynb}\n")
    notebooks = {}
    for engine in ("fork", "papermill"):
        result = project.kit("run", "wf", "--fresh", "--engine", engine)
        assert result.returncode == 0, result.stdout + result.stderr
        notebooks[engine] = _executed(project, _run_id(result))["c"]
    assert notebooks["fork"] == notebooks["papermill"]
    printed = "".join("".join(o.get("text", "")) for c in notebooks["fork"]["cells"] for o in c.get("outputs", []))
    assert printed == "after 0\nstill 1\n"


def test_kit_test_on_the_example_gives_the_same_verdicts_and_notebooks_on_fork_warm_and_papermill(tmp_path):
    project = Project(tmp_path)
    copy_example(tmp_path, scenarios=True)
    chosen = ["scenarios/casework/C-1004-wrong-vat-france.yaml", "scenarios/casework/C-1012-return-not-received.yaml"]
    verdicts, notebooks = {}, {}
    for engine in ("fork", "warm", "papermill"):
        result = project.kit("test", *chosen, "--engine", engine)
        assert result.returncode == 0, result.stdout + result.stderr
        rows = project.sql(
            "select r.run_id, c.scenario_id, c.expectation, c.verdict, c.actual from comparisons c "
            f"join runs r using (run_id) where r.engine = '{engine}'"
        )
        verdicts[engine] = sorted((r["scenario_id"], r["expectation"], r["verdict"], str(r["actual"])) for r in rows)
        notebooks[engine] = {
            (scenario, step): nb
            for run_id, scenario in {(r["run_id"], r["scenario_id"]) for r in rows}
            for step, nb in _executed(project, run_id).items()
        }
    assert verdicts["fork"] == verdicts["warm"] == verdicts["papermill"]
    assert len(verdicts["fork"]) >= 10 and {v[2] for v in verdicts["fork"]} == {"pass"}
    assert notebooks["fork"].keys() == notebooks["papermill"].keys()
    for key, nb in notebooks["fork"].items():
        assert nb == notebooks["papermill"][key], key


# ---- the helper -------------------------------------------------------------------------


def test_the_helper_imports_what_the_workflow_imports_and_never_its_own_modules(project):
    project.notebook(
        "a.ipynb",
        "x: int = 0",
        "import json, xml.dom\nfrom email.mime import text\nfrom . import nothing\n%matplotlib inline\nimport helpers",
    )
    project.notebook("b.ipynb", "x: int = 0", "%%bash\nimport not_python\n", "!pip list\nimport csv")
    # the workflow's own modules are read for what they import, never imported (nor what they import of ours)
    (project.root / "wf" / "helpers.py").write_text(
        "raise RuntimeError('the zygote never runs workflow code')\n\n\ndef f():\n    import statistics\n"
        "    import inner\n"
    )
    (project.root / "wf" / "inner").mkdir()
    (project.root / "wf" / "inner" / "__init__.py").write_text("import helpers\nfrom fractions import Fraction\n")
    project.manifest("workflow: w\nversion: 1\nsteps:\n  a: {notebook: a.ipynb}\n  b: {notebook: b.ipynb}\n")
    found = fork_engine.workflow_imports(str(project.root / "wf" / "a.ipynb"))
    assert found == {"json", "xml.dom", "email.mime", "csv", "statistics", "fractions"}
    # pandas and pyarrow are warmed only for a workflow that handles tables: declared, or loaded in its code
    (project.root / "wf" / "helpers.py").write_text("import kit\n\ndef rows(ref):\n    return kit.load(ref)\n")
    assert "pandas" in fork_engine.workflow_imports(str(project.root / "wf" / "a.ipynb"))
    (project.root / "wf" / "helpers.py").write_text("import kit\n")
    assert "pandas" not in fork_engine.workflow_imports(str(project.root / "wf" / "b.ipynb"))
    project.manifest("workflow: w\nversion: 1\nsteps:\n  a: {notebook: a.ipynb, outputs: {t: table}}\n")
    assert {"pandas", "pyarrow.parquet"} <= fork_engine.workflow_imports(str(project.root / "wf" / "a.ipynb"))


def test_a_workflow_importing_more_gets_a_new_helper_and_the_old_one_retires(project):
    first = project.notebook("a.ipynb", "x: int = 0", "import json")
    project.manifest("workflow: w\nversion: 1\nsteps:\n  a: {notebook: a.ipynb}\n")
    other = project.notebook("sub/b.ipynb", "x: int = 0", "import csv")
    project.manifest("workflow: v\nversion: 1\nsteps:\n  b: {notebook: b.ipynb}\n", folder="wf/sub")
    one = _helper_for(str(first))
    try:
        assert _helper_for(str(first)) is one
        two = _helper_for(str(other))
        assert two is not one and one.retired and two.modules >= {"json", "csv"}
        assert _helper_for(str(first)) is two  # it has both: workflows taking turns share it
        one.process.wait(30)  # nothing was running: it exits at once
    finally:
        _helper_for(str(first)).close()


def test_a_step_is_never_handed_to_a_helper_another_workflow_just_retired(project, monkeypatch):
    """Choosing the helper and asking it to fork are one act: a step of another workflow, which retires
    that helper for a bigger one, waits until the fork is asked (a retired helper with nothing running
    exits, and a fork asked of it then fails)."""
    import threading

    first = project.notebook("a.ipynb", "x: int = 0", "import json")
    project.manifest("workflow: w\nversion: 1\nsteps:\n  a: {notebook: a.ipynb}\n")
    other = project.notebook("sub/b.ipynb", "x: int = 0", "import csv")
    project.manifest("workflow: v\nversion: 1\nsteps:\n  b: {notebook: b.ipynb}\n", folder="wf/sub")
    spool = project.root / "spool"
    spool.mkdir()
    request = {
        "notebook": str(first),
        "output_notebook": str(spool / "a.ipynb"),
        "parameters": {"x": 1},
        "kernel_name": "python3",
        "workdir": str(first.parent),
        "env": {"PATH": os.environ["PATH"]},
        "outcome": str(spool / "outcome.json"),
        "crash": str(spool / "crash.txt"),
    }
    asking = threading.Event()
    fork = fork_engine.Zygote.fork

    def slow_fork(self, message):  # the moment the other workflow's step comes in
        asking.set()
        time.sleep(1.0)
        return fork(self, message)

    monkeypatch.setattr(fork_engine.Zygote, "fork", slow_fork)
    children: list = []

    def run_step() -> None:
        try:
            children.append(fork_engine._fork_step(str(first), request))
        except fork_engine.ZygoteFailed as exc:
            children.append(exc)

    step = threading.Thread(target=run_step)
    step.start()
    try:
        assert asking.wait(60)
        bigger = _helper_for(str(other))  # retires the first helper
        step.join(60)
        child = children[0]
        assert not isinstance(child, Exception), child
        assert child.ended.wait(60)
        assert child.failure is None and child.code == 0, child.failure
        assert json.loads(Path(request["outcome"]).read_text())["error_type"] is None
    finally:
        step.join(60)
        bigger.close()


def test_a_helper_that_dies_fails_the_step_saying_what_it_said(tmp_path, monkeypatch):
    """The helper's last words (its stderr) reach the step's error; the file they were kept in has no name."""
    (tmp_path / "dies_loudly.py").write_text(
        "import os, sys\nsys.stderr.write('boom: the helper cannot go on\\n')\nsys.stderr.flush()\nos._exit(3)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    zygote = fork_engine.Zygote(frozenset({"dies_loudly"}))
    try:
        deadline = time.monotonic() + 60
        while zygote.failure is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(fork_engine.ZygoteFailed, match="exited with code 3") as failed:
            zygote.fork({"notebook": "never.ipynb"})
    finally:
        zygote.close()
    assert "boom: the helper cannot go on" in str(failed.value)


def test_kit_leaves_nothing_in_the_temporary_folder(chain, tmp_path):
    """A run on the fork engine (its helper included) leaves no file or folder in $TMPDIR behind."""
    scratch = tmp_path / "scratch-tmp"
    scratch.mkdir()
    result = chain.kit("run", "wf", "--fresh", env={"TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(scratch.iterdir()) == []


def test_a_module_left_in_the_temporary_folder_is_never_imported_by_the_helper(chain, tmp_path):
    """The helper works in the temporary folder, which anyone may write to: a `psutil.py` left there
    (a module the helper imports) must not shadow the real one, nor run."""
    scratch = tmp_path / "shared-tmp"
    scratch.mkdir()
    ran = tmp_path / "ran.txt"
    (scratch / "psutil.py").write_text(f"open({str(ran)!r}, 'a').write('ran')\nraise ImportError('planted')\n")
    result = chain.kit("run", "wf", "--fresh", env={"TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert not ran.exists()


def test_a_step_starts_without_what_its_workflow_does_not_use_and_may_import_it(project):
    """The helper carries neither pandas nor what papermill imports for remote notebooks (boto3, pyarrow)
    unless the workflow uses them; a step importing them all the same gets them."""
    project.notebook(
        "a.ipynb",
        "x: int = 0",
        'import sys, kit\nkit.output("carried", sorted(m for m in ("boto3", "pyarrow", "pandas") if m in sys.modules))',
        'import importlib\nkit.output("loaded", importlib.import_module("pyarrow.fs").__name__)',
    )
    project.manifest(
        "workflow: w\nversion: 1\nsteps:\n  a: {notebook: a.ipynb, outputs: {carried: array, loaded: string}}\n"
    )
    result = project.kit("run", "wf", "--fresh")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _values(project) == {("a", "carried"): [], ("a", "loaded"): "pyarrow.fs"}


def test_a_helper_started_ahead_of_a_command_that_runs_no_step_leaves_nothing_behind(project):
    """`kit run` and `kit test` start the helper before they read the workflow; when they end without
    running a step (a wrong name here, all cached elsewhere), the helper, never told what to import, exits."""
    import psutil

    mark = f"kit-test-{os.getpid()}-{time.monotonic_ns()}"
    result = project.kit("run", "no-such-workflow", env={"KIT_TEST_MARK": mark})
    assert result.returncode == 2 and "Traceback" not in result.stderr

    def marked() -> list[int]:
        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get("KIT_TEST_MARK") == mark:
                    found.append(process.pid)
            except psutil.Error:
                pass
        return found

    deadline = time.monotonic() + 30
    while marked() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked() == []

    fork_engine.prestart()  # the same, watched from inside: it is there, then gone at once when closed
    helper = fork_engine._ZYGOTE
    try:
        assert helper is not None and helper.modules is None and helper.process.poll() is None
    finally:
        helper.close()
    helper.process.wait(10)
    assert not fork_engine._ZYGOTE.usable()
