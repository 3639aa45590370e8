"""The scenarios report: size and build time of `kit report --scenarios` over 1,000 scenarios.

DESIGN section 16 targets: under 5 MB and under 10 s. The ledger is synthesized (as
`ledger_ingest.py` does) rather than made by running 1,000 workflows: 1,000 scenarios of a
5-step workflow, each with its last RUNS runs (6 expectations a run, one a table), about 5%
failing in their latest run and a few flaky ones; the failing runs' executed notebooks are
written under `.kit/runs` (a parameters cell, a printed line, an HTML table of 30 rows). The
report is built by `kit report --scenarios` as a child process, timed as a whole process
(interpreter start, imports, queries, figures, notebooks, writing), median of N.
Run from the repo root: python bench/report_size.py [SCENARIOS] [N]
"""

import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from kit.base.digests import digest
from kit.ledger.database import Database
from kit.ledger.objects import ObjectStore

SCENARIOS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000
N = int(sys.argv[2]) if len(sys.argv) > 2 else 3
RUNS = 10  # runs per scenario, the report's default --last
STEPS = ["fetch", "check", "retrieve", "summarize", "recommend"]
MANIFEST = b"workflow: bench\nversion: 1.0.0\nsteps: {}\npolicy:\n  redact: ['*token*']\n"
random.seed(7)

root = Path(tempfile.mkdtemp(prefix="kit-bench-report-"))
(root / "kit.yaml").write_text("{}\n")
store = ObjectStore(root / ".kit" / "objects")
lock = {"workflow": "bench", "version": "1.0.0", "manifest": "workflow.yaml", "components": {}}
lock["files"] = {"workflow.yaml": store.put_bytes(MANIFEST)}
lock["bundle_id"] = digest(lock)
start = datetime(2026, 11, 1, 9, 0, 0)


def notebook(path: Path, scenario: int, step: str) -> str:
    """An executed notebook of the size a small step leaves: parameters, a printed line, a 30-row table."""
    nb = new_notebook()
    nb.cells.append(new_markdown_cell(f"**kit run** · step **`{step}`** of workflow **bench** 1.0.0"))
    params = new_code_cell(f'case_id: str = "C-{scenario:04d}"', execution_count=1)
    params.metadata["tags"] = ["parameters"]
    rows = "".join(f"<tr><td>{i}</td><td>O-{scenario:04d}-{i}</td><td>{i * 1.25:.2f}</td></tr>" for i in range(30))
    work = new_code_cell("import pandas as pd\nprint(case_id)\norders", execution_count=2)
    work.outputs = [
        new_output("stream", name="stdout", text=f"C-{scenario:04d}\n"),
        new_output(
            "execute_result",
            data={"text/html": f"<table class='dataframe'>{rows}</table>", "text/plain": "30 rows"},
            execution_count=2,
        ),
    ]
    nb.cells += [params, work]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return str(path)


runs, steps, spans, comparisons = [], [], [], []
failing_now = set(random.sample(range(SCENARIOS), SCENARIOS // 20))
flaky = set(random.sample(range(SCENARIOS), SCENARIOS // 50))
for s in range(SCENARIOS):
    scenario_id = f"bench/S-{s:04d}-a-scenario-of-moderate-length"
    for r in range(RUNS):
        at = start + timedelta(hours=r, seconds=s * 2)
        run_id = at.strftime("%Y%m%d-%H%M%S-") + f"{s % 1000:03d}-{s:08x}{r:08x}"
        latest = r == RUNS - 1
        fails = (latest and s in failing_now) or (s in flaky and r % 3 == 1)
        runs.append(
            {
                "run_id": run_id,
                "workflow": "bench",
                "bundle_id": lock["bundle_id"],
                "version": "1.0.0",
                "env": "dev",
                "principal": "alice",
                "params": {"case_id": f"C-{s:04d}", "threshold": 0.5},
                "status": "succeeded",
                "started_at": at.isoformat(sep=" "),
                "ended_at": (at + timedelta(seconds=1.5)).isoformat(sep=" "),
                "scenario_id": scenario_id,
                "engine": "warm",
                "isolation": "warm",
            }
        )
        for i, step in enumerate(STEPS):
            t0 = at + timedelta(milliseconds=250 * i)
            path = None
            if fails and latest and step in ("check", "recommend"):
                path = notebook(root / ".kit" / "runs" / run_id / f"{step}.ipynb", s, step)
            steps.append(
                {
                    "run_id": run_id,
                    "step_id": step,
                    "status": "succeeded",
                    "attempts": 1,
                    "started_at": t0.isoformat(sep=" "),
                    "ended_at": (t0 + timedelta(milliseconds=200)).isoformat(sep=" "),
                    "duration_ms": 200.0,
                    "executed_notebook": path,
                    "depends_on": STEPS[i - 1 : i],
                }
            )
            spans.append(
                {
                    "run_id": run_id,
                    "span_id": f"{run_id}-{i}",
                    "step_id": step,
                    "name": step,
                    "kind": "step",
                    "started_at": t0.isoformat(sep=" "),
                    "ended_at": (t0 + timedelta(milliseconds=200)).isoformat(sep=" "),
                    "status": "ok",
                    "attributes": {"attempt": 1},
                }
            )
        checks = [
            ("check.policy.violations.0.kind", "equals", "missing_discount", "missing_discount"),
            ("check.policy.eligible_discount_pct", "approx", {"approx": 10, "abs": 0.01}, 10.0),
            ("summarize.summary", "contains", ["loyalty discount"], "Case C-1001 is about a missing loyalty discount."),
            ("recommend.decision.action", "equals", "apply_discount", "apply_discount"),
            ("recommend.decision.confidence", "approx", {"approx": 0.9, "abs": 0.1}, 0.917),
        ]
        if fails:
            checks[3] = ("recommend.decision.action", "equals", "apply_discount", "escalate_to_human")
        table = {
            "rows": 5,
            "columns": ["order_id", "amount", "tax", "total"],
            "head": [{"order_id": f"O-{i}", "amount": 10.5 * i, "tax": 2.1 * i, "total": 12.6 * i} for i in range(5)],
        }
        checks.append(("fetch.payload", "table", dict(table, file="expected/payload.csv"), table))
        for line, (key, comparator, expected, actual) in enumerate(checks, start=10):
            failed = expected != actual and comparator == "equals"
            comparisons.append(
                {
                    "run_id": run_id,
                    "scenario_id": scenario_id,
                    "bundle_id": lock["bundle_id"],
                    "expectation": key,
                    "comparator": comparator,
                    "expected": expected,
                    "actual": actual,
                    "verdict": "fail" if failed else "pass",
                    "detail": f"first difference at $: expected {json.dumps(expected)}, got {json.dumps(actual)}"
                    if failed
                    else "",
                    "scenario_file": f"scenarios/bench/S-{s:04d}.yaml",
                    "line": line,
                    "recorded_at": at.isoformat(sep=" "),
                }
            )

t = time.perf_counter()
ledger = Database(root / ".kit" / "ledger.duckdb")
ledger.write(
    ("insert", "bundles", [{"bundle_id": lock["bundle_id"], "workflow": "bench", "version": "1.0.0", "lock": lock}]),
    ("insert", "runs", runs),
    ("insert", "steps", steps),
    ("insert", "spans", spans),
    ("insert", "comparisons", comparisons),
)
ledger.release()
print(
    f"ledger: {SCENARIOS:,} scenarios x {RUNS} runs = {len(runs):,} runs, {len(comparisons):,} comparisons, "
    f"{len(failing_now)} failing now ({len(flaky)} flaky), written in {time.perf_counter() - t:.1f} s\n"
)

out = root / "report.html"
seconds = []
for _ in range(N):
    t = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "kit.cli", "report", "--scenarios", "-o", str(out)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    seconds.append(time.perf_counter() - t)
    if result.returncode != 0:
        sys.exit(f"kit report failed ({result.returncode}):\n{result.stderr}")
first = out.read_bytes()
size_mb = len(first) / 1e6
text = first.decode("utf-8")
same = (
    subprocess.run(
        [sys.executable, "-m", "kit.cli", "report", "--scenarios", "-o", str(root / "again.html")],
        cwd=root,
        capture_output=True,
    ).returncode
    == 0
    and (root / "again.html").read_bytes() == first
)

print(f"kit report --scenarios ({SCENARIOS:,} scenarios, last {RUNS} runs each), whole process, median of {N}\n")
print(f"size          {size_mb:>8.2f} MB    target < 5 MB     {'met' if size_mb < 5 else 'MISSED'}")
print(
    f"build time    {statistics.median(seconds):>8.2f} s     target < 10 s     "
    f"{'met' if statistics.median(seconds) < 10 else 'MISSED'}   (runs: {', '.join(f'{s:.2f}' for s in seconds)})"
)
print(f"same bytes when rebuilt: {'yes' if same else 'NO'}")
notebooks, figures = text.count('class="notebook"'), text.count("<svg")
references = text.count("http://") + text.count("https://")
print(f"embedded notebooks: {notebooks}, inline SVG figures: {figures}, http(s):// references: {references}")
shutil.rmtree(root, ignore_errors=True)
