"""What a run does when things go wrong: retries, timeouts, the cache, resume after a kill."""

from __future__ import annotations

import os
import signal
import time

FLAKY = """
import kit, pathlib
marker = pathlib.Path("attempts.txt")
n = int(marker.read_text()) + 1 if marker.exists() else 1
marker.write_text(str(n))
if n <= fail_times:
    raise ConnectionError(f"flaky attempt {n}")
kit.output("n", n)
"""


def flaky_project(project, attempts: int, retry_on: str = "[ConnectionError]"):
    project.notebook("flaky.ipynb", "fail_times: int = 2", FLAKY)
    project.manifest(
        f"""
        workflow: flaky
        version: 1
        steps:
          flaky:
            notebook: flaky.ipynb
            outputs: {{n: integer}}
            retries: {{attempts: {attempts}, backoff: 0.05, retry_on: {retry_on}}}
        """
    )
    return project


def test_a_step_that_fails_twice_then_succeeds_with_three_attempts(project):
    flaky_project(project, attempts=3)
    result = project.kit("run", "wf")
    assert result.returncode == 0, result.stderr
    step = project.sql("select status, attempts from steps")[0]
    assert step == {"status": "succeeded", "attempts": 3}
    spans = project.sql("select status, attributes from spans where kind = 'step' order by started_at")
    assert [s["attributes"]["attempt"] for s in spans] == [1, 2, 3]
    assert [s["status"] for s in spans] == ["error", "error", "ok"]
    assert project.sql("select value from outputs")[0]["value"] == 3


def test_with_two_attempts_it_fails(project):
    flaky_project(project, attempts=2)
    result = project.kit("run", "wf")
    assert result.returncode == 1
    step = project.sql("select status, attempts, error_type from steps")[0]
    assert step == {"status": "failed", "attempts": 2, "error_type": "ConnectionError"}


def test_retry_on_limits_which_errors_are_retried(project):
    flaky_project(project, attempts=3, retry_on="[TimeoutError]")
    result = project.kit("run", "wf")
    assert result.returncode == 1
    assert project.sql("select attempts from steps")[0]["attempts"] == 1


def test_a_step_past_its_timeout_fails_with_timeout(project):
    project.notebook(
        "slow.ipynb", "seconds: int = 600", "import time\ntime.sleep(seconds)", "import kit\nkit.output('x', 1)"
    )
    project.manifest(
        """
        workflow: slow
        version: 1
        steps:
          slow: {notebook: slow.ipynb, outputs: {x: integer}, timeout: 2}
        """
    )
    result = project.kit("run", "wf")  # the subprocess timeout (600 s) would fail the test if the run hung
    assert result.returncode == 1
    step = project.sql("select status, error_type, error_message from steps")[0]
    assert step["status"] == "failed" and step["error_type"] == "Timeout"
    assert "timeout of 2s" in step["error_message"]


def test_a_second_run_is_cached_and_fresh_runs_again(chain):
    first = chain.kit("run", "wf")
    assert first.returncode == 0
    second = chain.kit("run", "wf")
    assert second.returncode == 0
    first_id, second_id = first.stdout.split()[1], second.stdout.split()[1]
    steps = chain.sql(f"select step_id, status, cached_from from steps where run_id = '{second_id}' order by step_id")
    assert {s["status"] for s in steps} == {"cached"} and {s["cached_from"] for s in steps} == {first_id}
    assert len(chain.sql(f"select * from outputs where run_id = '{second_id}'")) == 5

    changed = chain.kit("run", "wf", "-p", "x=7")  # a changed input runs again
    statuses = {
        s["step_id"]: s["status"]
        for s in chain.sql(f"select step_id, status from steps where run_id = '{changed.stdout.split()[1]}'")
    }
    assert statuses == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}

    fresh = chain.kit("run", "wf", "--fresh")
    assert {s["status"] for s in chain.sql(f"select status from steps where run_id = '{fresh.stdout.split()[1]}'")} == {
        "succeeded"
    }


def test_a_step_may_opt_out_of_the_cache(chain):
    text = (
        (chain.root / "wf" / "workflow.yaml")
        .read_text()
        .replace("outputs: {s: string}", "outputs: {s: string}\n    cache: false")
    )
    (chain.root / "wf" / "workflow.yaml").write_text(text)
    chain.kit("run", "wf")
    second = chain.kit("run", "wf")
    statuses = {
        s["step_id"]: s["status"]
        for s in chain.sql(f"select step_id, status from steps where run_id = '{second.stdout.split()[1]}'")
    }
    assert statuses == {"a": "cached", "b": "cached", "c": "succeeded"}


def test_sigkill_during_a_step_loses_nothing_and_resume_finishes(project):
    project.notebook("quick.ipynb", "n: int = 1", "import kit\nkit.output('n', n + 1)")
    project.notebook(
        "slow.ipynb",
        "n: int = 0",
        "import time, pathlib\npathlib.Path('started').write_text('1')\ntime.sleep(float(open('delay').read()))",
        "import kit\nkit.output('m', n * 10)",
    )
    (project.root / "wf" / "delay").write_text("600")
    project.manifest(
        """
        workflow: long
        version: 1
        steps:
          quick: {notebook: quick.ipynb, outputs: {n: integer}}
          slow: {notebook: slow.ipynb, inputs: {n: quick.n}, outputs: {m: integer}}
        """
    )
    proc = project.start("run", "wf")
    started = project.root / "wf" / "started"
    deadline = time.monotonic() + 120
    while not started.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the slow step never started"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    run = project.sql("select run_id, status from runs")[0]
    assert run["status"] == "running"  # the ledger opens cleanly and says where the run stopped
    steps = {s["step_id"]: s for s in project.sql("select * from steps")}
    assert steps["quick"]["status"] == "succeeded" and steps["slow"]["status"] == "running"

    (project.root / "wf" / "delay").write_text("0")
    resumed = project.kit("resume", run["run_id"])
    assert resumed.returncode == 0, resumed.stderr
    steps = {s["step_id"]: s for s in project.sql("select * from steps")}
    assert steps["quick"]["status"] == "succeeded" and steps["quick"]["attempts"] == 1
    assert steps["slow"]["status"] == "succeeded"
    quick_spans = project.sql("select * from spans where kind = 'step' and step_id = 'quick'")
    assert len(quick_spans) == 1  # the completed step did not run again
    assert project.sql("select value from outputs where step_id = 'slow'")[0]["value"] == 20
    assert project.sql("select status from runs")[0]["status"] == "succeeded"


def test_resume_continues_a_failed_run_without_rerunning_completed_steps(chain):
    chain.notebook(
        "c.ipynb",
        "n: int = 0",
        "import kit, pathlib\nassert pathlib.Path('fixed').exists(), 'not fixed yet'\nkit.output('s', str(n))",
    )
    first = chain.kit("run", "wf")
    assert first.returncode == 1
    run_id = first.stdout.split()[1]
    (chain.root / "wf" / "fixed").write_text("")
    resumed = chain.kit("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    steps = {s["step_id"]: s for s in chain.sql(f"select * from steps where run_id = '{run_id}'")}
    assert {s["status"] for s in steps.values()} == {"succeeded"}
    assert steps["a"]["attempts"] == 1 and steps["b"]["attempts"] == 1 and steps["c"]["attempts"] == 2


def test_a_step_is_handed_on_only_once_what_came_before_it_is_durable(chain, monkeypatch):
    """When a step reaches its executor (and may act), the ledger already holds the steps it follows as
    done and it as running: a kill -9 from then on never runs a finished step again on resume."""
    from kit.execution.executors import LocalExecutor

    seen: dict[str, dict[str, str]] = {}
    submit = LocalExecutor.submit

    def watching(self, task):
        rows = chain.ledger().rows("SELECT step_id, status FROM steps WHERE run_id = ?", [task.run_id])
        seen[task.step_id] = {r["step_id"]: r["status"] for r in rows}
        return submit(self, task)

    monkeypatch.setattr(LocalExecutor, "submit", watching)
    result = chain.cli("run", "wf", "--fresh", "--engine", "fork")
    assert result.exit_code == 0, result.output
    assert seen["a"]["a"] == "running"
    for later in ("b", "c"):  # both fed by `a`
        assert seen[later]["a"] == "succeeded" and seen[later][later] == "running", seen
