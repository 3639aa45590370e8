"""Per-step overhead of kit with isolation (the fork engine), all in: engine, notebook I/O, ledger.

A chain of K trivial steps (each `kit.output("y", x + 1)`) runs with `kit run --fresh --workers 1`.
From the ledger: a step's all-in time is from its start to the next step's start (the engine, the
notebook read, parameterized and written, the spool, the coordinator's ledger writes, the cache
lookup); its overhead is that less what its cells took (their spans). The first step is left out
(it waits for the helper's imports). Medians over the steps of N runs; `--engine warm` for reference.
DESIGN section 16 target: at most 30 ms a step.
Run from the repo root: python bench/step_overhead.py [K=40] [N=3]
"""

import shutil
import statistics
import sys

from _common import chain_project, kit_run, table

K = int(sys.argv[1]) if len(sys.argv) > 1 else 40
N = int(sys.argv[2]) if len(sys.argv) > 2 else 3


def per_step(root) -> list[tuple[float, float, float]]:
    """(all in, in the engine, in the cells) in ms, for each step of the latest run but its first and last."""
    import duckdb

    con = duckdb.connect(str(root / ".kit" / "ledger.duckdb"), read_only=True)
    try:
        rows = con.execute(
            """
            select epoch(s.started_at) * 1000, s.duration_ms,
                   (select coalesce(sum(epoch(c.ended_at) - epoch(c.started_at)), 0) * 1000 from spans c
                    where c.run_id = s.run_id and c.step_id = s.step_id and c.kind = 'cell')
            from steps s where s.run_id = (select max(run_id) from runs) order by s.started_at
            """
        ).fetchall()
    finally:
        con.close()
    return [(b[0] - a[0], a[1], a[2]) for a, b in zip(rows[1:], rows[2:])]


root, _ = chain_project(K)
results = {}
for engine in ("fork", "warm"):
    kit_run(root, "--fresh", "--engine", engine, "--workers", "1")  # warm-up; not counted
    steps, wholes = [], []
    for _ in range(N):
        wholes.append(kit_run(root, "--fresh", "--engine", engine, "--workers", "1"))
        steps += per_step(root)
    results[engine] = (steps, wholes)

print(f"a {K}-step chain of trivial steps, kit run --fresh --workers 1, N={N}; per step, medians (ms)\n")
rows = []
for engine, (steps, wholes) in results.items():
    all_in = statistics.median(s[0] for s in steps)
    cells = statistics.median(s[2] for s in steps)
    engine_ms = statistics.median(s[1] for s in steps)
    overhead = statistics.median(s[0] - s[2] for s in steps)
    rows.append((engine, all_in, engine_ms, all_in - engine_ms, cells, overhead, statistics.median(wholes)))
table(rows, ("engine", "all in", "step (engine)", "between steps", "cells", "overhead", "whole run (s)"))
print(f"\nfork: {rows[0][5]:.1f} ms of overhead a step   (target <= 30 ms)")
shutil.rmtree(root, ignore_errors=True)
