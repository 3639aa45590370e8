"""8 independent steps, each sleeping 1 s in its cell: `kit run --fresh --workers 2` vs `--workers 1`.

DESIGN section 15 target: 2 workers at least 1.8x faster than 1. A plain papermill
loop over the same 8 notebooks (serial) is timed alongside for reference.
Run from the repo root: python bench/parallel_steps.py [N]
"""

import shutil
import sys

from _common import kit_run, last_run_steps, median, new_project, papermill_loop, table, write_notebook

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3
STEPS = 8

root = new_project("parallel")
lines = ["workflow: parallel", "version: 1.0.0", "params:", "  x: {type: integer, default: 1}", "steps:"]
jobs = []
for i in range(1, STEPS + 1):
    nb = write_notebook(
        root / "wf" / f"p{i}.ipynb", "x: int = 0", 'import time, kit\ntime.sleep(1)\nkit.output("y", x + 1)'
    )
    lines += [f"  p{i}:", f"    notebook: p{i}.ipynb", "    inputs: {x: params.x}", "    outputs: {y: integer}"]
    jobs.append((str(nb), str(root / f"pm-p{i}.ipynb"), {"x": 1}))
(root / "wf" / "workflow.yaml").write_text("\n".join(lines) + "\n")

times = {"kit run --fresh --workers 1": [], "kit run --fresh --workers 2": [], "papermill loop (immediate)": []}
for _ in range(N):  # interleaved
    times["kit run --fresh --workers 1"].append(kit_run(root, "--fresh", "--workers", "1"))
    times["kit run --fresh --workers 2"].append(kit_run(root, "--fresh", "--workers", "2"))
    times["papermill loop (immediate)"].append(papermill_loop(root, jobs, "immediate"))
assert [s for _, s in last_run_steps(root)] == ["succeeded"] * STEPS, last_run_steps(root)

print(f"{STEPS} independent steps sleeping 1 s each, whole process, N={N} (seconds)\n")
table([(name, median(ts), min(ts), max(ts)) for name, ts in times.items()], ("", "median", "min", "max"))
one, two = median(times["kit run --fresh --workers 1"]), median(times["kit run --fresh --workers 2"])
print(f"\nspeed-up 2 workers vs 1: {one / two:.2f}x   (target >= 1.8x)")
print(f"ratio papermill loop / kit --workers 2: {median(times['papermill loop (immediate)']) / two:.2f}x")
shutil.rmtree(root, ignore_errors=True)
