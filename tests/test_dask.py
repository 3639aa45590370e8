"""The Dask executor against a real `LocalCluster` (2 worker processes): the same ledger as the local
executor, bundles shipped by digest, bounded submissions, a lost worker retried as an infrastructure
fault, a killed coordinator resumed, and the faults a cluster can have (DESIGN section 13)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Project, copy_example


@pytest.fixture(scope="module")
def cluster():
    """A 2-worker LocalCluster of processes (nanny-started, as in production), and a client of the test's."""
    from distributed import Client, LocalCluster

    local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(local, set_as_default=False)
    try:
        yield local.scheduler_address, client
    finally:
        from kit.execution.dask_executor import disconnect

        disconnect(local.scheduler_address)  # this process's coordinator leaves first
        client.close()
        local.close()


def new_project(root: Path) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    return Project(root)


def dask_env(address: str) -> dict[str, str]:
    return {"KIT_DASK_SCHEDULER": address, "KIT_DASK_CONNECT_TIMEOUT": "20"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 60.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def ledger_rows(project: Project) -> dict:
    """What must be the same on any executor: per scenario (or run), the statuses and outputs."""
    runs = project.sql("select run_id, coalesce(scenario_id, workflow) as name, status, executor from runs")
    names = {r["run_id"]: r["name"] for r in runs}
    steps = project.sql("select run_id, step_id, status, attempts, error_type from steps")
    outputs = project.sql("select run_id, step_id, name, type, value, artifact from outputs")
    comparisons = project.sql("select run_id, expectation, comparator, verdict from comparisons")
    return {
        "runs": sorted((r["name"], r["status"]) for r in runs),
        "steps": sorted((names[s["run_id"]], s["step_id"], s["status"], s["attempts"], s["error_type"]) for s in steps),
        "outputs": sorted(
            (
                names[o["run_id"]],
                o["step_id"],
                o["name"],
                o["type"],
                json.dumps(o["value"], sort_keys=True),
                o["artifact"],
            )
            for o in outputs
        ),
        "comparisons": sorted(
            (names[c["run_id"]], c["expectation"], c["comparator"], c["verdict"]) for c in comparisons
        ),
        "executors": sorted({r["executor"] for r in runs}),
    }


# ---- the same ledger on Dask as locally ---------------------------------------------------------


def test_the_example_suite_passes_on_dask_with_the_same_comparisons_as_locally(tmp_path, cluster):
    address, _ = cluster
    local, remote = new_project(tmp_path / "local"), new_project(tmp_path / "dask")
    for p in (local, remote):
        copy_example(p.root, scenarios=True)
    on_dask = remote.kit("test", "scenarios/casework", "--executor", "dask", "--scheduler", address)
    assert on_dask.returncode == 0, on_dask.stdout + on_dask.stderr
    assert "8 passed, 0 failed" in on_dask.stdout
    here = local.kit("test", "scenarios/casework")
    assert here.returncode == 0, here.stdout + here.stderr
    a, b = ledger_rows(local), ledger_rows(remote)
    assert a["executors"] == ["local"] and b["executors"] == ["dask"]
    for part in ("runs", "steps", "outputs", "comparisons"):
        assert a[part] == b[part], part
    assert len(b["comparisons"]) > 30 and {c[3] for c in b["comparisons"]} == {"pass"}
    shown = remote.kit("show", "last")
    assert "executor dask" in shown.stdout


SMALL = """
workflow: small
version: 1.0.0
params: {x: {type: integer, default: 3}}
steps:
  make:
    notebook: make.ipynb
    inputs: {x: params.x}
    outputs: {rows: table, n: integer, where: string}
  use:
    notebook: use.ipynb
    inputs: {rows: make.rows, n: make.n}
    outputs: {total: integer, note: string}
components:
  notes: {path: notes/, version: 1.0.0}
"""


def small_project(project: Project) -> Project:
    project.notebook(
        "make.ipynb",
        "x: int = 0",
        """
        import os, kit, pandas as pd
        kit.output("rows", pd.DataFrame({"v": list(range(x))}))
        kit.output("n", x)
        kit.output("where", os.getcwd())
        """,
    )
    project.notebook(
        "use.ipynb",
        "rows: str = ''\nn: int = 0",
        """
        import kit
        df = kit.load(rows)
        with kit.span("lookup", kind="tool", size=len(df)) as s:
            s["total"] = int(df.v.sum())
        kit.output("total", s["total"] + n)
        kit.output("note", (kit.component("notes") / "note.txt").read_text().strip())
        """,
    )
    (project.root / "wf" / "notes").mkdir(parents=True, exist_ok=True)
    (project.root / "wf" / "notes" / "note.txt").write_text("shipped with the bundle\n")
    project.manifest(SMALL)
    return project


def test_a_small_workflow_gives_the_same_rows_and_runs_where_its_bundle_was_shipped(tmp_path, cluster):
    address, _ = cluster
    local, remote = small_project(new_project(tmp_path / "local")), small_project(new_project(tmp_path / "dask"))
    done = remote.kit("run", "wf", "-p", "x=4", "--executor", "dask", "--scheduler", address)
    assert done.returncode == 0, done.stderr
    assert local.kit("run", "wf", "-p", "x=4").returncode == 0
    a, b = ledger_rows(local), ledger_rows(remote)
    # the bundle ran from the worker's own directory (no shared filesystem assumed), nowhere in the project
    where = [o for o in b["outputs"] if o[2] == "where"][0][4]
    assert str(remote.root) not in where and "kit/bundles/" in where
    strip = lambda rows: [o for o in rows if o[2] != "where"]  # noqa: E731
    assert strip(a["outputs"]) == strip(b["outputs"]) and a["steps"] == b["steps"] and a["runs"] == b["runs"]
    assert any(o[2] == "note" and o[4] == '"shipped with the bundle"' for o in b["outputs"])
    assert any(o[2] == "total" and o[4] == "10" for o in b["outputs"])
    # the coordinator checked and kept the table and the executed notebooks
    table = [o for o in b["outputs"] if o[2] == "rows"][0][5]
    digest = table.split(":")[-1]
    assert (remote.root / ".kit" / "objects" / digest[:2] / digest[2:]).is_file()
    notebooks = remote.sql("select executed_notebook from steps")
    assert all(Path(n["executed_notebook"]).is_file() for n in notebooks)
    assert remote.sql("select count(*) as n from spans where kind = 'tool'")[0]["n"] == 1


def test_papermill_runs_on_a_dask_worker_too(tmp_path, cluster):
    address, _ = cluster
    project = small_project(new_project(tmp_path))
    done = project.kit("run", "wf", "--engine", "papermill", "--executor", "dask", "--scheduler", address)
    assert done.returncode == 0, done.stderr
    assert project.sql("select engine, executor from runs") == [{"engine": "papermill", "executor": "dask"}]


# ---- keys, bounds, retries ------------------------------------------------------------------------


def test_keys_are_run_step_attempt_and_submissions_in_flight_are_bounded(tmp_path, cluster):
    from distributed import get_task_stream

    from kit.execution.coordinator import Coordinator, RunRequest
    from kit.execution.dask_executor import connect
    from kit.spec.project import Project as KitProject

    address, client = cluster
    project = new_project(tmp_path)
    project.notebook("w.ipynb", "i: int = 0", "import time, kit\ntime.sleep(0.2)\nkit.output('i', i)")
    lines = ["workflow: fan", "version: 1.0.0", "params:", "  tag: {type: string, default: a}", "steps:"]
    lines += [f"  s{i}: {{notebook: w.ipynb, inputs: {{i: params.i{i}}}, outputs: {{i: integer}}}}" for i in range(8)]
    lines[3:3] = [f"  i{i}: {{type: integer, default: {i}}}" for i in range(8)]
    project.manifest("\n".join(lines) + "\n")
    factory = connect(address, max_in_flight=3)
    session = factory.session
    session.peak_in_flight = 0
    coordinator = Coordinator(KitProject(project.root), executor_factory=factory, progress=False)
    workflow = KitProject(project.root).load_workflow(project.root / "wf" / "workflow.yaml")
    outcomes = []

    def start(tag: str) -> None:
        outcomes.append(coordinator.run(RunRequest(workflow, {"tag": tag}, "alice", engine="fork", fresh=True)))

    with get_task_stream(client) as stream:
        threads = [threading.Thread(target=start, args=(t,)) for t in ("a", "b")]  # two runs at once
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    coordinator.ledger.release()
    assert [o.status for o in outcomes] == ["succeeded", "succeeded"]
    assert session.peak_in_flight <= 3
    keys = {r["key"] for r in stream.data if not str(r["key"]).startswith("kit-")}
    expected = {f"{o.run_id}/s{i}/1" for o in outcomes for i in range(8)}
    assert expected <= keys
    assert project.sql("select distinct executor from runs") == [{"executor": "dask"}]
    session.max_in_flight = 8


def test_a_steps_own_error_is_retried_as_the_manifest_says(tmp_path, cluster):
    address, _ = cluster
    project = new_project(tmp_path)
    marker = tmp_path / "attempts.txt"
    project.notebook(
        "flaky.ipynb",
        f"marker: str = {str(marker)!r}",
        """
        import kit, pathlib
        m = pathlib.Path(marker)
        n = int(m.read_text()) + 1 if m.exists() else 1
        m.write_text(str(n))
        if n < 2:
            raise ConnectionError(f"flaky attempt {n}")
        kit.output("n", n)
        """,
    )
    project.manifest(
        """
        workflow: flaky
        version: 1
        steps:
          flaky: {notebook: flaky.ipynb, outputs: {n: integer}, retries: {attempts: 2, backoff: 0.05}}
        """
    )
    done = project.kit("run", "wf", "--executor", "dask", "--scheduler", address)
    assert done.returncode == 0, done.stderr
    assert project.sql("select status, attempts from steps") == [{"status": "succeeded", "attempts": 2}]
    assert project.sql("select count(*) as n from spans where kind = 'infra'")[0]["n"] == 0


# ---- a lost worker, a killed coordinator ------------------------------------------------------


def gated_project(project: Project, gate_dir: Path, steps: int = 3, gated: int = 2) -> Project:
    """A chain s1..sN; step `gated` says it started (gate_dir/started-ATTEMPT) and, the first time, waits
    until the test writes gate_dir/release."""
    project.notebook("quick.ipynb", "x: int = 0", "import kit\nkit.output('y', x + 1)")
    project.notebook(
        "gate.ipynb",
        f"x: int = 0\ngate: str = {str(gate_dir)!r}",
        """
        import kit, os, pathlib, time
        g = pathlib.Path(gate)
        first = not (g / "started").exists()
        (g / ("started" if first else "again")).write_text(str(os.getpid()))
        deadline = time.time() + 60
        while first and not (g / "release").exists() and time.time() < deadline:
            time.sleep(0.05)
        kit.output("y", x + 1)
        """,
    )
    lines = ["workflow: gated", "version: 1.0.0", "params: {x: {type: integer, default: 0}}", "steps:"]
    for i in range(1, steps + 1):
        source = "params.x" if i == 1 else f"s{i - 1}.y"
        notebook = "gate.ipynb" if i == gated else "quick.ipynb"
        lines.append(f"  s{i}: {{notebook: {notebook}, inputs: {{x: {source}}}, outputs: {{y: integer}}}}")
    project.manifest("\n".join(lines) + "\n")
    gate_dir.mkdir(parents=True, exist_ok=True)
    return project


def start_kit(project: Project, *args: str, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("KIT_HOME", None)
    return subprocess.Popen(
        [sys.executable, "-m", "kit.cli", *args],
        cwd=project.root,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_worker_killed_mid_step_is_an_infrastructure_fault_retried_once_not_an_attempt(tmp_path, cluster):
    address, client = cluster
    gate = tmp_path / "gate"
    project = gated_project(new_project(tmp_path / "p"), gate)
    kit = start_kit(project, "run", "wf", "--executor", "dask", "--scheduler", address)
    try:
        wait_for(lambda: (gate / "started").exists(), what="the gated step to start")
        processing = {w: ks for w, ks in client.processing().items() if any(str(k).endswith("/s2/1") for k in ks)}
        assert len(processing) == 1, client.processing()
        victim = next(iter(processing))
        pids = client.run(os.getpid)
        os.kill(pids[victim], signal.SIGKILL)
        (gate / "release").write_text("go")  # the step's second run does not wait
        out, err = kit.communicate(timeout=180)
    finally:
        kit.kill()
    assert kit.returncode == 0, out + err
    assert (gate / "again").exists()  # it ran again
    steps = {s["step_id"]: s for s in project.sql("select step_id, status, attempts from steps")}
    assert {s: v["status"] for s, v in steps.items()} == {"s1": "succeeded", "s2": "succeeded", "s3": "succeeded"}
    assert steps["s2"]["attempts"] == 1  # not counted as a step attempt
    infra = project.sql("select step_id, status, attributes from spans where kind = 'infra'")
    assert len(infra) == 1 and infra[0]["step_id"] == "s2" and infra[0]["status"] == "error"
    assert "lost" in infra[0]["attributes"]["kit.infra.reason"]
    assert "infrastructure fault" in err
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it, for the next tests


def test_a_killed_coordinator_is_resumed_on_dask_and_reruns_nothing_that_finished(tmp_path, cluster):
    address, _ = cluster
    gate = tmp_path / "gate"
    project = gated_project(new_project(tmp_path / "p"), gate, steps=4, gated=3)
    kit = start_kit(project, "run", "wf", "--executor", "dask", "--scheduler", address)
    try:
        wait_for(lambda: (gate / "started").exists(), what="the gated step to start")
        kit.send_signal(signal.SIGKILL)
        kit.wait(timeout=30)
    finally:
        kit.kill()
    (gate / "release").write_text("go")  # the abandoned step ends (its result goes nowhere)
    before = {s["step_id"]: s for s in project.sql("select step_id, status, attempts, ended_at from steps")}
    assert before["s1"]["status"] == before["s2"]["status"] == "succeeded"
    resumed = project.kit("resume", "last", "--executor", "dask", "--scheduler", address)
    assert resumed.returncode == 0, resumed.stderr
    after = {s["step_id"]: s for s in project.sql("select step_id, status, attempts, ended_at from steps")}
    assert all(s["status"] == "succeeded" for s in after.values())
    for sid in ("s1", "s2"):  # finished before the kill: not run again
        assert after[sid]["attempts"] == 1 and after[sid]["ended_at"] == before[sid]["ended_at"]
    step_spans = project.sql("select step_id, count(*) as n from spans where kind = 'step' group by step_id")
    assert {r["step_id"]: r["n"] for r in step_spans} == {"s1": 1, "s2": 1, "s3": 1, "s4": 1}
    assert project.sql("select status, executor from runs") == [{"status": "succeeded", "executor": "dask"}]


# ---- bad input and faults -------------------------------------------------------------------------


def test_an_unreachable_scheduler_is_exit_2_and_nothing_starts(tmp_path):
    project = small_project(new_project(tmp_path))
    port = free_port()
    done = project.kit(
        "run",
        "wf",
        "--executor",
        "dask",
        "--scheduler",
        f"tcp://127.0.0.1:{port}",
        env={"KIT_DASK_CONNECT_TIMEOUT": "2"},
    )
    assert done.returncode == 2, done.stderr
    assert "cannot reach the Dask scheduler" in done.stderr and "Traceback" not in done.stderr
    assert project.run_count() == 0


def test_executor_options_are_checked(tmp_path, monkeypatch):
    project = small_project(new_project(tmp_path))
    monkeypatch.delenv("KIT_DASK_SCHEDULER", raising=False)
    missing = project.kit("run", "wf", "--executor", "dask")
    assert missing.returncode == 2 and "needs a scheduler" in missing.stderr
    mixed = project.kit("run", "wf", "--executor", "local", "--scheduler", "tcp://127.0.0.1:1")
    assert mixed.returncode == 2 and "--scheduler is for --executor dask" in mixed.stderr
    assert project.run_count() == 0


class Scheduler:
    """A `dask scheduler` and workers as processes of their own, to kill and bring back."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def start(self) -> Scheduler:
        self.scheduler = self._spawn(
            ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"]
        )
        return self

    def worker(self, env: dict | None = None, name: str = "w") -> subprocess.Popen:
        return self._spawn(
            [
                "distributed.cli.dask_worker",
                self.address,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--name",
                name,
            ],
            env=env,
            cwd=self.tmp,
        )

    def _spawn(self, args: list[str], env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            env={**os.environ, **(env or {})},
            cwd=cwd or self.tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        self.procs.clear()


def test_a_worker_without_kit_is_a_clear_error_naming_it(tmp_path):
    shadow = tmp_path / "shadow"
    (shadow / "kit").mkdir(parents=True)
    (shadow / "kit" / "__init__.py").write_text("raise ImportError('No module named kit (not installed here)')\n")
    cluster = Scheduler(tmp_path).start()
    try:
        cluster.worker(env={"PYTHONPATH": str(shadow)}, name="bare")
        project = small_project(new_project(tmp_path / "p"))
        done = project.kit(
            "run", "wf", "--executor", "dask", "--scheduler", cluster.address, env={"KIT_DASK_CONNECT_TIMEOUT": "30"}
        )
    finally:
        cluster.stop()
    assert done.returncode == 2, done.stderr
    assert "cannot import kit" in done.stderr and re.search(r"tcp://127\.0\.0\.1:\d+", done.stderr)
    assert project.run_count() == 0


def test_a_scheduler_dying_mid_run_fails_the_run_and_resume_finishes_it_once_it_is_back(tmp_path):
    gate = tmp_path / "gate"
    project = gated_project(new_project(tmp_path / "p"), gate)
    cluster = Scheduler(tmp_path).start()
    try:
        cluster.worker()
        kit = start_kit(project, "run", "wf", "--executor", "dask", "--scheduler", cluster.address)
        wait_for(lambda: (gate / "started").exists(), what="the gated step to start")
        cluster.stop()  # the scheduler and its worker die
        out, err = kit.communicate(timeout=120)
        assert kit.returncode == 1, out + err
        assert "went away" in err and "kit resume" in err and "Traceback" not in err
        run = project.sql("select status, error from runs")[0]
        assert run["status"] == "failed" and "went away" in run["error"]
        (gate / "release").write_text("go")
        cluster.start()
        cluster.worker()
        resumed = project.kit("resume", "last", "--executor", "dask", env=dask_env(cluster.address))
    finally:
        cluster.stop()
    assert resumed.returncode == 0, resumed.stderr
    steps = {s["step_id"]: s for s in project.sql("select step_id, status, attempts from steps")}
    assert all(s["status"] == "succeeded" for s in steps.values())
    assert steps["s1"]["attempts"] == 1
    assert project.sql("select status from runs")[0]["status"] == "succeeded"


def test_the_cli_does_not_import_dask_or_opentelemetry_at_start():
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import kit.cli"], capture_output=True, text=True, timeout=120
    )
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert not {"dask", "distributed", "opentelemetry"} & imported
