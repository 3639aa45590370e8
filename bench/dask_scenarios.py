"""S scenarios x a 5-step chain on a 2-worker Dask LocalCluster vs the local executor.

DESIGN section 16 target (for S=1000): `kit test --executor dask` within 1.5x of `kit test` on the
local executor, no stall, bounded memory in the coordinator. Both sides are `kit test` as whole
processes, default engine (fork), each in its own copy of the project (so nothing is cached from
the other side); each scenario has its own parameter, so nothing is cached between scenarios. The
cluster (2 worker processes, 1 thread each, no dashboard) is started first and warmed with a few
scenarios, as a standing cluster would be. Printed: both times and their ratio, each coordinator's
peak RSS (the `kit test` process alone, sampled every 0.2 s; on the local side its step processes
are its children and not counted), and, from the Dask run's ledger, the longest gap between two step
ends and the throughput of the first and last tenth of the scenarios (a stall or a slowdown shows).
Run from the repo root: python bench/dask_scenarios.py [S=1000]
"""

import os
import shutil
import subprocess
import sys
import time

import psutil
from _common import chain_project, table

S = int(sys.argv[1]) if len(sys.argv) > 1 else 1000


def scenarios(root, count: int, first: int = 0) -> None:
    folder = root / "scenarios"
    folder.mkdir(exist_ok=True)
    for k in range(first, first + count):
        x = 1000 + k
        (folder / f"s{k:04d}.yaml").write_text(
            f"scenario: chain/s{k:04d}\nworkflow: chain\nparams: {{x: {x}}}\nexpect:\n  s5.y: {{equals: {x + 5}}}\n"
        )


def kit_test(root, *args: str) -> tuple[float, float, str]:
    """Whole-process seconds of `kit test ARGS`, its peak RSS (MB, the process alone), its last line."""
    env = {k: v for k, v in os.environ.items() if k != "KIT_HOME"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kit.cli", "test", *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0
    watched = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    out, err = proc.communicate()
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"kit test {' '.join(args)} failed ({proc.returncode}):\n{out[-3000:]}\n{err[-3000:]}")
    return elapsed, peak / 2**20, out.strip().splitlines()[-1]


def stall_figures(root) -> tuple[float, float, float]:
    """From the ledger: the longest gap (s) between consecutive step ends, and scenarios a second
    in the first and in the last tenth of the runs."""
    import duckdb

    con = duckdb.connect(str(root / ".kit" / "ledger.duckdb"), read_only=True)
    try:
        ends = [r[0] for r in con.execute("select epoch(ended_at) from steps order by ended_at").fetchall()]
        runs = con.execute("select epoch(started_at), epoch(ended_at) from runs order by run_id").fetchall()
    finally:
        con.close()
    gap = max(b - a for a, b in zip(ends, ends[1:]))
    tenth = max(1, len(runs) // 10)

    def rate(part) -> float:
        return len(part) / max(1e-9, part[-1][1] - part[0][0])

    return gap, rate(runs[:tenth]), rate(runs[-tenth:])


def main() -> None:
    from distributed import Client, LocalCluster

    local_root, _ = chain_project(5)
    scenarios(local_root, S)
    dask_root = local_root.with_name(local_root.name + "-dask")
    shutil.copytree(local_root, dask_root)

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster, set_as_default=False)
    try:
        address = cluster.scheduler_address
        warm = local_root.with_name(
            local_root.name + "-warm"
        )  # each worker's fork helper started, as in a standing cluster
        shutil.copytree(local_root, warm, ignore=shutil.ignore_patterns("scenarios"))
        scenarios(warm, 4, first=S)
        kit_test(warm, "--executor", "dask", "--scheduler", address)

        local_s, local_mb, local_line = kit_test(local_root)
        dask_s, dask_mb, dask_line = kit_test(dask_root, "--executor", "dask", "--scheduler", address)
        gap, first_rate, last_rate = stall_figures(dask_root)
    finally:
        client.close()
        cluster.close()

    steps = 5 * S
    print(f"{S} scenarios x a 5-step chain ({steps} steps), `kit test`, fork engine, whole process\n")
    table(
        [
            ("local executor", local_s, local_s / steps * 1000, local_mb),
            ("dask, 2-worker LocalCluster", dask_s, dask_s / steps * 1000, dask_mb),
        ],
        ("", "seconds", "ms a step", "coordinator peak RSS (MB)"),
    )
    print(f"\nlocal: {local_line}\ndask:  {dask_line}")
    print(f"\nratio dask / local: {dask_s / local_s:.2f}x   (target: within 1.5x)")
    print(
        f"no stall: longest gap between two step ends {gap:.2f} s; "
        f"{first_rate:.2f} scenarios/s in the first tenth, {last_rate:.2f} in the last"
    )
    for root in (local_root, dask_root, warm):
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":  # LocalCluster's worker processes import this module
    main()
