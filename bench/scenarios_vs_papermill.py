"""S scenarios x a 5-step chain: `kit test` as it runs by default vs a loop of papermill.execute_notebook.

DESIGN section 16 target (for S=50): `kit test` with its default engine (fork: a fresh process per
step) and default workers (the core count: that many scenarios at once) at least 40x faster than the
papermill loop. Each scenario has its own
parameter, so nothing is cached between scenarios. `--engine warm` is measured too, for reference.
Run from the repo root: python bench/scenarios_vs_papermill.py [S=50]
"""

import os
import shutil
import subprocess
import sys

from _common import chain_project, papermill_loop, table, timed

S = int(sys.argv[1]) if len(sys.argv) > 1 else 50
RECORDS = "select engine, isolation, workers, status, count(*) as runs from runs group by all"

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

default = timed([sys.executable, "-m", "kit.cli", "test"], root)  # default engine, default workers
records = subprocess.run(
    [sys.executable, "-m", "kit.cli", "sql", RECORDS],
    cwd=root,
    capture_output=True,
    text=True,
).stdout
shutil.rmtree(root / ".kit")
warm = timed([sys.executable, "-m", "kit.cli", "test", "--engine", "warm"], root)
loop = papermill_loop(root, pm_jobs, "immediate")

print(f"{S} scenarios x a 5-step chain ({5 * S} notebook executions), whole process, default workers")
print(f"({os.cpu_count()} cores: `kit test` runs {os.cpu_count()} scenarios at once); seconds\n")
table(
    [
        ("kit test (default: fork engine)", default),
        ("kit test --engine warm", warm),
        ("papermill loop (immediate shutdown)", loop),
    ],
    ("", "seconds"),
)
print(f"\nratio papermill loop / kit test (fork):  {loop / default:.1f}x   (target >= 40x)")
print(f"ratio papermill loop / kit test --engine warm: {loop / warm:.1f}x")
print(f"kit test (fork), all in: {default / (5 * S) * 1000:.1f} ms a step")
print("\nthe run records of `kit test` (defaults):\n" + records)
shutil.rmtree(root, ignore_errors=True)
