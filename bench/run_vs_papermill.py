"""One 5-step chain: `kit run --fresh` (whole process) vs. a loop of papermill.execute_notebook.

DESIGN section 16 target: `kit run`, with its default engine (fork), at least 2x faster than the
papermill loop. The warm and papermill engines are measured too, for reference.
Run from the repo root: python bench/run_vs_papermill.py [N=3]
"""

import shutil
import sys

from _common import chain_project, kit_run, last_run_steps, median, papermill_loop, table

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3

root, jobs = chain_project(5)
kit_run(root, "--fresh")  # warm-up (file cache, .pyc); not counted
papermill_loop(root, jobs, "immediate")

KIT = {
    "kit run --fresh (default: fork)": ("--fresh",),
    "kit run --fresh --engine warm": ("--fresh", "--engine", "warm"),
    "kit run --fresh --engine papermill": ("--fresh", "--engine", "papermill"),
}
times = {name: [] for name in [*KIT, "papermill loop (default shutdown)", "papermill loop (immediate shutdown)"]}
for _ in range(N):  # interleaved, so drift in machine load hits every side alike
    for name, args in KIT.items():
        times[name].append(kit_run(root, *args))
        assert [s for _, s in last_run_steps(root)] == ["succeeded"] * 5, last_run_steps(root)
    times["papermill loop (default shutdown)"].append(papermill_loop(root, jobs, "default"))
    times["papermill loop (immediate shutdown)"].append(papermill_loop(root, jobs, "immediate"))

print(f"one 5-step chain of trivial notebooks, whole process, N={N} (seconds)\n")
table([(name, median(ts), min(ts), max(ts)) for name, ts in times.items()], ("", "median", "min", "max"))
print()
for engine in KIT:
    kit = median(times[engine])
    for name in list(times)[len(KIT) :]:
        print(f"ratio {name} / {engine}: {median(times[name]) / kit:.2f}x   (target >= 2x)")
shutil.rmtree(root, ignore_errors=True)
