"""Shared by the benchmarks: tiny projects, `kit run` and a papermill loop as child processes.

Both sides run as child processes of the benchmark script (one process tree), so
each is timed as a whole process: interpreter start, imports, kernels, shutdown.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

# A plain papermill loop: execute each notebook with its parameters, one after another.
PAPERMILL_DRIVER = """
import json, os, sys, papermill as pm
jobs, shutdown = json.loads(sys.argv[1]), sys.argv[2]
extra = {} if shutdown == "default" else {"shutdown_kernel": shutdown}
for notebook, output, params in jobs:
    pm.execute_notebook(notebook, output, parameters=params, kernel_name="python3",
                        cwd=os.path.dirname(notebook), progress_bar=False, **extra)
"""


def write_notebook(path: Path, parameters: str, body: str) -> Path:
    """A notebook: a `parameters`-tagged cell of annotated defaults, then one code cell."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells += [cell, new_code_cell(textwrap.dedent(body).strip())]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def new_project(prefix: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"kit-bench-{prefix}-"))
    (root / "kit.yaml").write_text("{}\n")
    return root


def chain_project(n: int = 5) -> tuple[Path, list[tuple[str, str, dict]]]:
    """A project with an n-step chain s1 -> s2 -> ... (each: y = x + 1), and the same
    notebooks as papermill jobs (notebook, output, parameters) with x filled in."""
    root = new_project("chain")
    wf = root / "wf"
    lines = ["workflow: chain", "version: 1.0.0", "params:", "  x: {type: integer, default: 1}", "steps:"]
    jobs = []
    for i in range(1, n + 1):
        write_notebook(wf / f"s{i}.ipynb", "x: int = 0", 'import kit\nkit.output("y", x + 1)')
        source = "params.x" if i == 1 else f"s{i - 1}.y"
        lines += [f"  s{i}:", f"    notebook: s{i}.ipynb", f"    inputs: {{x: {source}}}", "    outputs: {y: integer}"]
        jobs.append((str(wf / f"s{i}.ipynb"), str(root / "pm-out" / f"s{i}.ipynb"), {"x": i}))
    (wf / "workflow.yaml").write_text("\n".join(lines) + "\n")
    (root / "pm-out").mkdir()
    return root, jobs


def timed(cmd: list[str], cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "KIT_HOME"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    return elapsed


def kit_run(root: Path, *args: str) -> float:
    """Whole-process seconds of `kit run wf ARGS` in the project."""
    return timed([sys.executable, "-m", "kit.cli", "run", "wf", *args], root)


def papermill_loop(root: Path, jobs: list, shutdown: str = "default") -> float:
    """Whole-process seconds of a driver that runs `jobs` through papermill.execute_notebook."""
    return timed([sys.executable, "-c", PAPERMILL_DRIVER, json.dumps(jobs), shutdown], root)


def last_run_steps(root: Path) -> list[tuple]:
    """(step_id, status) of the project's latest run, read from its ledger."""
    import duckdb

    con = duckdb.connect(str(root / ".kit" / "ledger.duckdb"), read_only=True)
    try:
        return con.execute(
            "select step_id, status from steps where run_id = (select max(run_id) from runs) order by step_id"
        ).fetchall()
    finally:
        con.close()


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def table(rows: list[tuple], header: tuple) -> None:
    cells = [tuple(str(c) for c in header)] + [
        tuple(f"{c:.2f}" if isinstance(c, float) else str(c) for c in r) for r in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, r in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))
