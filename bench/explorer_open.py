"""The explorer on a big ledger: opening `kit.explore()` and switching views.

DESIGN section 16 target: on a ledger of 10,000 runs and 1,000,000 spans, opening the
explorer and switching views each take under 1 s. The ledger is synthesized in bulk
through `kit.ledger.database.Database` (as bench/ledger_ingest.py does): 10,000 runs of a
10-step chain, 100 spans each (10 step attempts, 89 cells, 1 LLM call), an output per
step, 200 scenarios with 10 runs each and 5 expectations a run, 100 replays and 50 runs
waiting for approval. Each view is timed twice: the first switch pays its imports
(matplotlib for the figures), the second is what a user clicking around sees.
No papermill side: there is nothing to compare with.
Run from the repo root: python bench/explorer_open.py [RUNS]
"""

import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from kit.ledger.database import Database

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
STEPS, CELLS = 10, 89  # spans per run: 10 step attempts, 89 cells, 1 LLM call = 100
SCENARIOS, SCENARIO_RUNS, EXPECTATIONS = 200, 10, 5
REPLAYS, WAITING = 100, 50
BATCH = 100_000
TARGET = 1.0
random.seed(7)


def moment(t: datetime) -> str:
    return t.isoformat(sep=" ")


def synthesize(db: Database) -> tuple[int, str]:
    """Write the ledger; the number of spans, and the id of a run waiting for approval."""
    start = datetime(2026, 9, 1)
    pending: dict[str, list[dict]] = {"runs": [], "steps": [], "spans": [], "outputs": [], "comparisons": []}
    spans = 0
    waiting_run = ""

    def flush(final: bool = False) -> None:
        for table, rows in pending.items():
            if rows and (final or len(rows) >= BATCH):
                db.write(("insert", table, rows))
                rows.clear()

    scenario_runs = SCENARIOS * SCENARIO_RUNS
    for n in range(RUNS):
        t0 = start + timedelta(minutes=8 * n)
        run_id = f"{t0:%Y%m%d-%H%M%S}-{n % 1000:03d}-{random.getrandbits(64):016x}"
        scenario = f"bench/case-{n % SCENARIOS:03d}" if n < scenario_runs else None
        replay = scenario_runs <= n < scenario_runs + REPLAYS
        waiting = n >= RUNS - WAITING
        status = "waiting" if waiting else "failed" if n % 37 == 0 else "succeeded"
        pending["runs"].append(
            {
                "run_id": run_id,
                "workflow": f"wf{n % 4}",
                "bundle_id": f"{n % 50:064x}",
                "version": "1.0.0",
                "env": ("dev", "test", "prod")[n % 3],
                "principal": ("alice", "bob", "carol", "dana")[n % 4],
                "params": {"case_id": f"C-{n:05d}", "threshold": 0.5},
                "status": status,
                "started_at": moment(t0),
                "ended_at": None if waiting else moment(t0 + timedelta(seconds=12)),
                "scenario_id": scenario,
                "baseline_of": pending["runs"][-1]["run_id"] if replay and pending["runs"] else None,
                "manifest": "/nowhere/workflow.yaml",
                "engine": "warm",
            }
        )
        if waiting:
            waiting_run = run_id
        for s in range(STEPS):
            step_id, s0 = f"s{s}", t0 + timedelta(seconds=s)
            gate = waiting and s == STEPS - 1
            pending["steps"].append(
                {
                    "run_id": run_id,
                    "step_id": step_id,
                    "status": "waiting" if gate else "succeeded",
                    "attempts": 0 if gate else 1,
                    "started_at": moment(s0),
                    "ended_at": None if gate else moment(s0 + timedelta(seconds=1)),
                    "duration_ms": None if gate else 1000.0,
                    "depends_on": [f"s{s - 1}"] if s else [],
                }
            )
            step_span = f"{n:08x}{s:08x}"
            pending["spans"].append(
                {
                    "run_id": run_id,
                    "span_id": step_span,
                    "step_id": step_id,
                    "name": step_id,
                    "kind": "step",
                    "started_at": moment(s0),
                    "ended_at": moment(s0 + timedelta(seconds=1)),
                    "status": "ok",
                    "attributes": {"attempt": 1, "duration_ms": 1000.0},
                }
            )
            pending["outputs"].append(
                {"run_id": run_id, "step_id": step_id, "name": "y", "type": "integer", "value": s, "size_bytes": 1}
            )
            for c in range(CELLS // STEPS + (1 if s < CELLS % STEPS else 0)):
                pending["spans"].append(
                    {
                        "run_id": run_id,
                        "span_id": f"{step_span}c{c:02d}",
                        "parent_id": step_span,
                        "step_id": step_id,
                        "name": f"cell {c}",
                        "kind": "cell",
                        "started_at": moment(s0 + timedelta(milliseconds=100 * c)),
                        "ended_at": moment(s0 + timedelta(milliseconds=100 * c + 90)),
                        "status": "ok",
                        "attributes": {"cell": c, "tags": []},
                    }
                )
        pending["spans"].append(
            {
                "run_id": run_id,
                "span_id": f"{n:08x}llm",
                "step_id": "s4",
                "name": "chat",
                "kind": "llm",
                "started_at": moment(t0 + timedelta(seconds=4.2)),
                "ended_at": moment(t0 + timedelta(seconds=4.6)),
                "status": "ok",
                "attributes": {
                    "gen_ai.request.model": "bench-model",
                    "gen_ai.usage.input_tokens": 180,
                    "gen_ai.usage.output_tokens": 40,
                    "kit.llm.mode": "replay" if scenario else "live",
                    "kit.llm.replayed": bool(scenario),
                    "latency_ms": 400.0,
                },
            }
        )
        spans += STEPS + CELLS + 1
        if scenario or replay:
            for e in range(EXPECTATIONS):
                verdict = "fail" if (n // SCENARIOS + e) % 11 == 0 else "pass"
                pending["comparisons"].append(
                    {
                        "run_id": run_id,
                        "scenario_id": scenario or "bench/case-000",
                        "expectation": f"s{e}.y",
                        "comparator": "equals",
                        "expected": e,
                        "actual": e if verdict == "pass" else e + 1,
                        "verdict": verdict,
                        "detail": "" if verdict == "pass" else f"expected {e}, got {e + 1}",
                        "recorded_at": moment(t0 + timedelta(seconds=12)),
                    }
                )
        flush()
    flush(final=True)
    return spans, waiting_run


def timed(action) -> float:
    t = time.perf_counter()
    action()
    return time.perf_counter() - t


root = Path(tempfile.mkdtemp(prefix="kit-bench-explorer-"))
(root / "kit.yaml").write_text("{}\n")
db = Database(root / ".kit" / "ledger.duckdb")
db.write()
t = time.perf_counter()
total_spans, waiting_run = synthesize(db)
built = time.perf_counter() - t
db.release()
size_mb = sum(p.stat().st_size for p in db.path.parent.glob("ledger.duckdb*")) / 1e6

apps = []
open_first = timed(lambda: apps.append(__import__("kit").explore(as_="bob", project=root)))
open_again = timed(lambda: apps.append(__import__("kit").explore(as_="bob", project=root)))
app = apps[-1]
statuses = iter(["failed", "succeeded"])  # each switch picks another status
switches = [
    ("runs (Refresh)", lambda: app.refresh()),
    ("runs filtered by status", lambda: setattr(app.find("kit-filter-status")[0], "value", next(statuses))),
    ("a run (click its row)", lambda: app.open_run(waiting_run)),
    ("a step (click it)", lambda: app.open_step("s4")),
    ("LLM calls (all runs)", lambda: app.open_llm_calls()),
    ("scenarios (the matrix)", lambda: app.open_scenarios()),
    ("a scenario's comparisons", lambda: app.open_scenarios("bench/case-007")),
    ("replays", lambda: app.open_replays()),
    ("approvals", lambda: app.open_approvals()),
]
results = []
for name, action in switches:
    first = timed(action)
    assert app.message == "" and app.last_error is None, (name, app.message)
    again = timed(action)
    results.append((name, first, again))

print(f"explorer: {RUNS:,} runs, {total_spans:,} spans (ledger {size_mb:.0f} MB, built in {built:.1f} s)\n")
print(f"{'':34}{'first':>9}{'again':>9}   target < {TARGET:g} s")
print(f"{'open kit.explore()':34}{open_first:>8.3f}s{open_again:>8.3f}s   {'ok' if open_first < TARGET else 'MISS'}")
for name, first, again in results:
    print(f"{name:34}{first:>8.3f}s{again:>8.3f}s   {'ok' if first < TARGET else 'MISS'}")
print(f"\nstatic copy of the last view: {len(app.static_html) / 1000:.0f} kB")
shutil.rmtree(root, ignore_errors=True)
