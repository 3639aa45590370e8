"""Run the casework steps in-process, without a kernel, for maintenance.

    python data/make_samples.py            # from notebooks/casework/ (or anywhere)
    python data/make_samples.py --table    # also print the README's case table
    python data/make_samples.py C-1013     # only print one case's decision

It executes each notebook's code cells in a fresh namespace (the parameters cell first,
then the case's values, as papermill would) and hands outputs from step to step, so it
is quick and needs no Jupyter. Run it after changing the data or a step: it rewrites the
standalone defaults of steps 2-5 for case C-1001, the tables
data/samples/C-1001-payload.parquet and data/samples/C-1001-similar.parquet and the
`case`, `policy` and `summary` literals in the parameters cells. Then re-execute the
notebooks so their committed outputs match.

The literals are laid out so that no line holds more than one "=": papermill's parser
of parameters cells gives up on such lines and warns on every run.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import sys
from pathlib import Path

import kit
import nbformat
import pandas as pd

FOLDER = Path(__file__).resolve().parent.parent
STEPS = ["01_fetch_case", "02_check_policy", "03_retrieve_similar", "04_summarize", "05_recommend"]
DEFAULT_CASE = "C-1001"
#: parameters whose default is the default case's output of an upstream step
OBJECT_DEFAULTS = {"case": "fetch_case.case", "policy": "check_policy.policy", "summary": "summarize.summary"}
WIDTH = 96


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


def _chunks(text: str, width: int) -> list[str]:
    chunks, current = [], ""
    for word in re.findall(r"\S+\s*|\s+", text):
        if current and (len(current + word) > width or (current + word).count("=") > 1):
            chunks.append(current)
            current = ""
        current += word
    return chunks + [current] if current or not chunks else chunks


def literal(value, indent: int = 0) -> str:
    """A Python literal of a JSON value, one item a line, at most one "=" a line."""
    flat = repr(value)
    if len(flat) + indent <= WIDTH and flat.count("=") <= 1:
        return flat
    pad, end = " " * (indent + 4), " " * indent
    if isinstance(value, dict):
        return "{\n" + "".join(f"{pad}{k!r}: {literal(v, indent + 4)},\n" for k, v in value.items()) + end + "}"
    if isinstance(value, list):
        return "[\n" + "".join(f"{pad}{literal(v, indent + 4)},\n" for v in value) + end + "]"
    if isinstance(value, str):
        return "(\n" + "".join(f"{pad}{c!r}\n" for c in _chunks(value, WIDTH - indent - 8)) + end + ")"
    return flat


def refresh_defaults(out: dict) -> None:
    """Rewrite the object defaults in the parameters cells from the default case's outputs."""
    for step in STEPS[1:]:
        path = FOLDER / f"{step}.ipynb"
        nb = nbformat.read(str(path), as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        tree = ast.parse(cell.source)
        lines = []
        for node in tree.body:
            segment = ast.get_source_segment(cell.source, node)
            if isinstance(node, ast.AnnAssign) and node.target.id in OBJECT_DEFAULTS:
                annotation = ast.get_source_segment(cell.source, node.annotation)
                segment = f"{node.target.id}: {annotation} = {literal(out[OBJECT_DEFAULTS[node.target.id]])}"
            lines.append(segment)
        source = "\n".join(lines)
        if source != cell.source:
            cell.source = source
            nbformat.write(nb, str(path))
            print(f"rewrote the parameters cell of {path.name}")


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
        out = run_case(DEFAULT_CASE)
        write_samples(out)
        print(f"wrote data/samples/{DEFAULT_CASE}-payload.parquet and {DEFAULT_CASE}-similar.parquet")
        refresh_defaults(out)
    if "--table" in argv:
        print(table())


if __name__ == "__main__":
    main(sys.argv[1:])
