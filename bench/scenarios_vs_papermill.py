"""S scenarios x a 5-step chain: `kit test` (warm and fresh kernels) vs a loop of papermill.execute_notebook.

DESIGN section 15 target (for S=50): kit test at least 30x faster than the papermill loop,
with each step isolated from the last. Each scenario has its own parameter, so nothing is
cached between scenarios. Run from the repo root: python bench/scenarios_vs_papermill.py [S]
"""

import shutil
import sys

from _common import chain_project, papermill_loop, table, timed

S = int(sys.argv[1]) if len(sys.argv) > 1 else 20

root, jobs = chain_project(5)
scenarios = root / "scenarios"
scenarios.mkdir()
pm_jobs = []
for k in range(S):
    x = 100 + k
    (scenarios / f"s{k:03d}.yaml").write_text(
        f"scenario: chain/s{k:03d}\nworkflow: chain\nparams: {{x: {x}}}\nexpect:\n  s5.y: {{equals: {x + 5}}}\n"
    )
    pm_jobs += [(nb, out.replace(".ipynb", f"-{k}.ipynb"), {"x": x + i}) for i, (nb, out, _) in enumerate(jobs)]

warm = timed([sys.executable, "-m", "kit.cli", "test", "--engine", "warm", "--workers", "1"], root)
shutil.rmtree(root / ".kit")
fresh = timed([sys.executable, "-m", "kit.cli", "test", "--engine", "papermill", "--workers", "1"], root)
loop = papermill_loop(root, pm_jobs, "immediate")

print(f"{S} scenarios x a 5-step chain ({5 * S} notebook executions), whole process, one worker (seconds)\n")
table(
    [
        ("kit test --engine warm", warm),
        ("kit test --engine papermill", fresh),
        ("papermill loop (immediate shutdown)", loop),
    ],
    ("", "seconds"),
)
print(f"\nratio papermill loop / kit test warm:  {loop / warm:.1f}x   (target >= 30x)")
print(f"ratio papermill loop / kit test fresh: {loop / fresh:.1f}x")
shutil.rmtree(root, ignore_errors=True)
