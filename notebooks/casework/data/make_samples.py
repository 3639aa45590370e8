"""Run the casework steps in-process, without a kernel, for maintenance.

    python data/make_samples.py            # from notebooks/casework/ (or anywhere)
    python data/make_samples.py --table    # also print the README's case table
    python data/make_samples.py C-1013     # print one case's decision

It executes each notebook's code cells in a fresh namespace (the parameters cell first,
then the case's values, as papermill would) and hands outputs from step to step, so it
is quick and needs no Jupyter. It rewrites the standalone table defaults of steps 2-5,
data/samples/C-1001-payload.parquet and data/samples/C-1001-similar.parquet. The object
defaults in the parameters cells (`case`, `policy`, `summary` for C-1001) are literals
in the notebooks; refresh them when the data or the steps change.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import kit
import pandas as pd

FOLDER = Path(__file__).resolve().parent.parent
STEPS = ["01_fetch_case", "02_check_policy", "03_retrieve_similar", "04_summarize", "05_recommend"]
DEFAULT_CASE = "C-1001"


def run_notebook(name: str, params: dict) -> dict:
    nb = json.loads((FOLDER / f"{name}.ipynb").read_text())
    namespace: dict = {"__name__": "__main__"}
    kit.outputs.clear()
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            exec(compile("".join(cell["source"]), f"{name}.ipynb", "exec"), namespace)
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                namespace.update(params)
    return dict(kit.outputs)


def run_case(case_id: str, threshold: float = 0.5) -> dict:
    """Every step's outputs for one case, keyed STEP.OUTPUT (tables as DataFrames)."""
    old = os.getcwd()
    os.chdir(FOLDER)
    try:
        out = {}
        f = run_notebook(STEPS[0], {"case_id": case_id})
        out.update({"fetch_case.payload": f["payload"], "fetch_case.case": f["case"]})
        case = f["case"]
        out["check_policy.policy"] = run_notebook(STEPS[1], {"case": case, "payload": f["payload"]})["policy"]
        out["retrieve_similar.similar"] = run_notebook(STEPS[2], {"case": case})["similar"]
        out["summarize.summary"] = run_notebook(
            STEPS[3], {"case": case, "similar": out["retrieve_similar.similar"]})["summary"]
        out["recommend.decision"] = run_notebook(STEPS[4], {
            "case": case, "policy": out["check_policy.policy"], "summary": out["summarize.summary"],
            "similar": out["retrieve_similar.similar"], "threshold": threshold})["decision"]
        return out
    finally:
        os.chdir(old)


def write_samples(out: dict, case_id: str = DEFAULT_CASE) -> None:
    samples = FOLDER / "data" / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    out["fetch_case.payload"].to_parquet(samples / f"{case_id}-payload.parquet", index=False)
    out["retrieve_similar.similar"].to_parquet(samples / f"{case_id}-similar.parquet", index=False)


def table() -> str:
    cases = pd.read_csv(FOLDER / "data" / "cases.csv")
    lines = ["| case | category | expected (expert) | recommended | confidence | match |",
             "|---|---|---|---|---|---|"]
    for c in cases.itertuples():
        d = run_case(c.case_id)["recommend.decision"]
        proposal = "" if d["action"] == d["proposed_action"] else f" (proposed {d['proposed_action']})"
        match = "yes" if d["action"] == c.expected_action else "**no**"
        lines.append(f"| {c.case_id} | {c.category} | {c.expected_action} | {d['action']}{proposal} "
                     f"| {d['confidence']:.3f} | {match} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if os.environ.get(kit.api.SPOOL_ENV):
        sys.exit(f"unset {kit.api.SPOOL_ENV} first: this runs the steps standalone")
    cases = [a for a in argv if not a.startswith("-")]
    for case_id in cases:
        print(json.dumps(run_case(case_id)["recommend.decision"], indent=2))
    if not cases:
        write_samples(run_case(DEFAULT_CASE))
        print(f"wrote data/samples/{DEFAULT_CASE}-payload.parquet and {DEFAULT_CASE}-similar.parquet")
    if "--table" in argv:
        print(table())


if __name__ == "__main__":
    main(sys.argv[1:])
