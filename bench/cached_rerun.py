"""Re-running an unchanged 5-step chain where every step is cached: `kit run` whole process.

DESIGN section 16 target: under 1.0 s. Compared with one plain papermill loop over
the same notebooks (papermill has no cache: it runs them all again).
Run from the repo root: python bench/cached_rerun.py [N]
"""

import shutil
import sys

from _common import chain_project, kit_run, last_run_steps, median, papermill_loop, table

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5

root, jobs = chain_project(5)
first = kit_run(root)  # fills the cache
assert [s for _, s in last_run_steps(root)] == ["succeeded"] * 5, last_run_steps(root)

reruns = []
for _ in range(N):
    reruns.append(kit_run(root))
    assert [s for _, s in last_run_steps(root)] == ["cached"] * 5, last_run_steps(root)
loop = papermill_loop(root, jobs, "default")

print(f"5-step chain, whole process (seconds); cached re-run N={N}\n")
table(
    [
        ("kit run (first, fills cache)", first, first, first),
        ("kit run (all cached)", median(reruns), min(reruns), max(reruns)),
        ("papermill loop (default shutdown)", loop, loop, loop),
    ],
    ("", "median", "min", "max"),
)
print(f"\ncached re-run median: {median(reruns):.2f} s   (target < 1.0 s)")
print(f"ratio papermill loop / kit cached re-run: {loop / median(reruns):.1f}x")
shutil.rmtree(root, ignore_errors=True)
