"""What changed between two runs (`kit diff RUN_A RUN_B [STEP]`): parameters, outputs (JSON values by
path, tables by row and column), the bundle's files, and the executed notebooks (nbdime).

Built from the ledger, the object store (tables are read from their objects, re-hashed first) and
the executed notebooks under `.kit/runs`, each through its run's redaction once more. The
notebooks are compared without what says nothing about a result (kit's regression-test noise:
papermill's and nbclient's timings, execution counts, widget ids, cell ids papermill makes up,
run ids, digests and "now" timestamps in outputs and in kit's summary cell), so a diff of two
runs of one notebook shows what their parameters and data changed. With a STEP, only that step's
outputs and notebook are compared; parameters and the bundle are the runs' own and always shown.

Text (`as_text`) uses nbdime's pretty printer; HTML (`as_html`) is a self-contained page drawn from
nbdime's diff by kit (nbdime cannot export HTML, nbdime#468), with the report's escaping.
"""

from __future__ import annotations

import difflib
import io
import re
from dataclasses import dataclass, field
from typing import Any

from kit.base.display import brief
from kit.errors import NotFound
from kit.spec.policy import Redactor

SHOWN = 20  # rows added, removed or changed listed per table (all are counted)
CHANGES = 200  # changed paths listed per JSON value
SUMMARY_TAG = "kit-summary"  # kit's first cell of an executed notebook


@dataclass
class Change:
    """One difference: at `path`, `kind` is added, removed or changed; `a` and `b` the two sides."""

    path: str
    kind: str
    a: Any = None
    b: Any = None


@dataclass
class TableChanges:
    rows_a: int
    rows_b: int
    matched_by: str  # "column X", "position", or "whole rows"
    columns_added: list[str] = field(default_factory=list)
    columns_removed: list[str] = field(default_factory=list)
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)  # {"row": key or index, "columns": {c: [a, b]}}
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def same(self) -> bool:
        return not (self.columns_added or self.columns_removed or any(self.counts.values()))


@dataclass
class OutputChange:
    step: str
    name: str
    kind: str  # added, removed, changed
    type: str
    values: list[Change] = field(default_factory=list)
    table: TableChanges | None = None
    note: str = ""


@dataclass
class CellChange:
    kind: str  # added, removed, changed
    index_a: int | None
    index_b: int | None
    cell_type: str
    parts: list[dict[str, Any]]  # {"part": "source" | "outputs" | name, "lines": unified diff lines}


@dataclass
class NotebookChange:
    step: str
    status: str  # changed, unchanged, only in A, only in B, not kept
    text: str = ""
    cells: list[CellChange] = field(default_factory=list)
    note: str = ""


@dataclass
class RunDiff:
    a: dict[str, Any]
    b: dict[str, Any]
    step: str | None
    params: list[Change]
    outputs: list[OutputChange]
    unchanged_outputs: int
    bundle: dict[str, Any]
    notebooks: list[NotebookChange]


# ---- values and tables -----------------------------------------------------------------


def value_changes(a: Any, b: Any, path: str = "", limit: int = CHANGES) -> list[Change]:
    """Every path where two JSON values differ (keys and list items added or removed, leaves changed),
    with JSON equality (1 == 1.0, true != 1)."""
    from kit.verification.comparators.base import json_equal

    out: list[Change] = []

    def walk(x: Any, y: Any, where: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for key in list(x) + [k for k in y if k not in x]:
                here = f"{where}.{key}" if where else str(key)
                if key not in y:
                    out.append(Change(here, "removed", x[key], None))
                elif key not in x:
                    out.append(Change(here, "added", None, y[key]))
                else:
                    walk(x[key], y[key], here)
        elif isinstance(x, list) and isinstance(y, list):
            for i in range(max(len(x), len(y))):
                here = f"{where}.{i}" if where else str(i)
                if i >= len(y):
                    out.append(Change(here, "removed", x[i], None))
                elif i >= len(x):
                    out.append(Change(here, "added", None, y[i]))
                else:
                    walk(x[i], y[i], here)
        elif not json_equal(x, y):
            out.append(Change(where or "$", "changed", x, y))

    walk(a, b, path)
    return out


def _rows(frame, columns: list[str]) -> list[dict[str, Any]]:
    from kit.base.values import jsonable, table_cell

    return [
        {c: jsonable(table_cell(v)) for c, v in zip(columns, row)} for row in frame[columns].itertuples(index=False)
    ]


def _key_column(rows_a: list[dict], rows_b: list[dict], columns: list[str]) -> str | None:
    """The first shared column whose values are present and unique on both sides: rows pair up by it."""
    for column in columns:
        for rows in (rows_a, rows_b):
            values = [brief(r[column], None) for r in rows]
            if any(r[column] is None for r in rows) or len(set(values)) != len(values):
                break
        else:
            return column
    return None


def table_changes(frame_a, frame_b) -> TableChanges:
    """Rows added, removed and changed between two tables: paired by a key column when one is unique on
    both sides, else by position when the row counts agree, else compared as whole rows."""
    from collections import Counter

    from kit.verification.comparators.base import json_equal

    names_a, names_b = [str(c) for c in frame_a.columns], [str(c) for c in frame_b.columns]
    frame_a, frame_b = frame_a.set_axis(names_a, axis=1), frame_b.set_axis(names_b, axis=1)
    shared = [c for c in names_a if c in names_b]
    rows_a, rows_b = _rows(frame_a, shared), _rows(frame_b, shared)
    key = _key_column(rows_a, rows_b, shared)
    out = TableChanges(
        rows_a=len(rows_a),
        rows_b=len(rows_b),
        matched_by=f"column {key}" if key else "position" if len(rows_a) == len(rows_b) else "whole rows",
        columns_added=[c for c in names_b if c not in names_a],
        columns_removed=[c for c in names_a if c not in names_b],
    )
    added, removed, changed = [], [], []
    if key or len(rows_a) == len(rows_b):
        if key:
            by_a = {brief(r[key], None): r for r in rows_a}
            by_b = {brief(r[key], None): r for r in rows_b}
            pairs = [(r[key], by_a[k], by_b[k]) for k, r in by_a.items() if k in by_b]
            removed = [r for k, r in by_a.items() if k not in by_b]
            added = [r for k, r in by_b.items() if k not in by_a]
        else:
            pairs = [(i, x, y) for i, (x, y) in enumerate(zip(rows_a, rows_b))]
        for row, x, y in pairs:
            columns = {c: [x[c], y[c]] for c in shared if not json_equal(x[c], y[c])}
            if columns:
                changed.append({"row": row, "columns": columns})
    else:
        seen_a = Counter(brief(r, None) for r in rows_a)
        seen_b = Counter(brief(r, None) for r in rows_b)
        left_a, left_b = seen_a - seen_b, seen_b - seen_a
        for rows, left, into in ((rows_a, left_a, removed), (rows_b, left_b, added)):
            for r in rows:
                text = brief(r, None)
                if left[text] > 0:
                    left[text] -= 1
                    into.append(r)
    out.counts = {"added": len(added), "removed": len(removed), "changed": len(changed)}
    out.added, out.removed, out.changed = added[:SHOWN], removed[:SHOWN], changed[:SHOWN]
    return out


# ---- notebooks -----------------------------------------------------------------------------


def _drop(node: Any, parts: list[str]) -> None:
    """Remove what a star path (`/cells/*/metadata/papermill`) names."""
    if not parts or node is None:
        return
    head, rest = parts[0], parts[1:]
    if isinstance(node, dict) and head != "*" and head not in node and rest:  # a MIME type holds a slash
        _drop(node, [f"{head}/{rest[0]}", *rest[1:]])
    items = (
        list(node.values() if isinstance(node, dict) else node)
        if head == "*"
        else [node.get(head)]
        if isinstance(node, dict)
        else []
    )
    if not rest:
        if isinstance(node, dict) and head != "*":
            node.pop(head, None)
        return
    for item in items:
        if isinstance(item, (dict, list)):
            _drop(item, rest)


def _replace(node: Any, rules: list[tuple[re.Pattern, str]]) -> Any:
    if isinstance(node, str):
        for pattern, replacement in rules:
            node = pattern.sub(replacement, node)
        return node
    if isinstance(node, list):
        return [_replace(v, rules) for v in node]
    if isinstance(node, dict):
        return {k: _replace(v, rules) for k, v in node.items()}
    return node


def normalized(nb: dict[str, Any]) -> dict[str, Any]:
    """A notebook without what differs on every run (`kit.verification.nbregression`'s noise, and the
    cell ids papermill gives its injected cells), so nbdime shows only what changed the results."""
    import nbformat

    from kit.verification.nbregression import DIFF_IGNORE, DIFF_REPLACE

    for path in (*DIFF_IGNORE, "/cells/*/id"):
        _drop(nb, path.strip("/").split("/"))
    rules = [(re.compile(regex), replacement) for _, regex, replacement in DIFF_REPLACE]
    for cell in nb.get("cells", []):
        if "outputs" in cell:
            cell["outputs"] = _replace(cell["outputs"], rules)
        if SUMMARY_TAG in cell.get("metadata", {}).get("tags", []):
            cell["source"] = _replace(cell["source"], rules)
    return nbformat.from_dict(nb)


def _text_of(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _outputs_text(outputs: list[dict[str, Any]]) -> list[str]:
    """A cell's outputs as lines to compare: streams, plain text, errors; other data by its type."""
    lines = []
    for o in outputs:
        kind = o.get("output_type")
        if kind == "stream":
            lines += _text_of(o.get("text")).splitlines()
        elif kind == "error":
            lines.append(f"{o.get('ename')}: {o.get('evalue')}")
        else:
            data = o.get("data", {})
            if "text/plain" in data:
                lines += _text_of(data["text/plain"]).splitlines()
            lines += [f"[{mime}]" for mime in sorted(data) if mime != "text/plain"]
    return lines


def _unified(a: list[str], b: list[str]) -> list[str]:
    return [line.rstrip("\n") for line in difflib.unified_diff(a, b, "A", "B", n=2, lineterm="")][2:]


def _cell_changes(nb_a: dict[str, Any], diff: list[dict[str, Any]]) -> list[CellChange]:
    """nbdime's diff of the cells as added, removed and changed cells, each with line diffs of its source
    and outputs (and the names of other parts that changed)."""
    import nbdime

    cells_a = nb_a.get("cells", [])
    entries = next((e["diff"] for e in diff if e["op"] == "patch" and e["key"] == "cells"), [])
    out: list[CellChange] = []
    offset = 0  # where A's cell i is in B
    for entry in entries:
        i = entry["key"]
        if entry["op"] == "addrange":
            for j, cell in enumerate(entry["valuelist"]):
                lines = _unified([], _text_of(cell.get("source")).splitlines())
                outputs = _unified([], _outputs_text(cell.get("outputs", [])))
                parts = [{"part": "source", "lines": lines}] + (
                    [{"part": "outputs", "lines": outputs}] if outputs else []
                )
                out.append(CellChange("added", None, i + offset + j, cell.get("cell_type", ""), parts))
            offset += len(entry["valuelist"])
        elif entry["op"] == "removerange":
            for j in range(entry["length"]):
                cell = cells_a[i + j]
                lines = _unified(_text_of(cell.get("source")).splitlines(), [])
                out.append(
                    CellChange("removed", i + j, None, cell.get("cell_type", ""), [{"part": "source", "lines": lines}])
                )
            offset -= entry["length"]
        elif entry["op"] == "patch":
            before = cells_a[i]
            after = nbdime.patch(before, entry["diff"])
            parts = []
            for name in [d["key"] for d in entry["diff"]]:
                if name == "source":
                    lines = _unified(
                        _text_of(before.get("source")).splitlines(), _text_of(after.get("source")).splitlines()
                    )
                elif name == "outputs":
                    lines = _unified(_outputs_text(before.get("outputs", [])), _outputs_text(after.get("outputs", [])))
                else:
                    lines = [f"-{brief(before.get(name), 300)}", f"+{brief(after.get(name), 300)}"]
                parts.append({"part": name, "lines": lines or ["(changed in a way that is not text)"]})
            out.append(CellChange("changed", i, i + offset, before.get("cell_type", ""), parts))
    return out


# ---- the diff --------------------------------------------------------------------------------


class _Side:
    """One run as the diff reads it."""

    def __init__(self, reader, run_id: str):
        self.run = reader.ledger.run(run_id)
        self.redactor: Redactor = reader.redactor(self.run["bundle_id"])
        self.steps = {s["step_id"]: s for s in reader.ledger.steps(run_id)}
        self.outputs = {(o["step_id"], o["name"]): o for o in reader.ledger.outputs(run_id)}


def diff_runs(project, ledger, run_a: str, run_b: str, step: str | None = None) -> RunDiff:
    """What changed from run A to run B (only STEP's outputs and notebook when given)."""
    from kit.review.report import Reader, graph_order

    reader = Reader(project, ledger)
    a, b = _Side(reader, run_a), _Side(reader, run_b)
    if step is not None and step not in a.steps and step not in b.steps:
        known = sorted(set(a.steps) | set(b.steps))
        raise NotFound(f"step {step!r} is in neither run (steps: {', '.join(known)})")
    params = value_changes(a.redactor.named(a.run["params"] or {}), b.redactor.named(b.run["params"] or {}))

    outputs, unchanged = [], 0
    keys = list(a.outputs) + [k for k in b.outputs if k not in a.outputs]
    for key in keys:
        if step is not None and key[0] != step:
            continue
        change = _output_change(reader, a, b, key)
        if change is None:
            unchanged += 1
        else:
            outputs.append(change)

    steps = [s["step_id"] for s in graph_order(list(a.steps.values()))]
    steps += [s for s in b.steps if s not in steps]
    notebooks = [_notebook_change(reader, a, b, sid) for sid in steps if step is None or sid == step]
    return RunDiff(
        a=a.run,
        b=b.run,
        step=step,
        params=params,
        outputs=outputs,
        unchanged_outputs=unchanged,
        bundle=_bundle_changes(ledger, a.run, b.run),
        notebooks=[n for n in notebooks if n is not None],
    )


def _output_change(reader, a: _Side, b: _Side, key: tuple[str, str]) -> OutputChange | None:
    import pandas as pd

    from kit.ledger.objects import CorruptObject

    x, y = a.outputs.get(key), b.outputs.get(key)
    kind = "removed" if y is None else "added" if x is None else "changed"
    out = OutputChange(key[0], key[1], kind, (x or y)["type"])
    if kind != "changed":
        return out
    if a.redactor.matches(key[1]) or b.redactor.matches(key[1]):  # said to change, never shown
        same = x["artifact"] == y["artifact"] and x["value"] == y["value"]
        return None if same else OutputChange(*key, kind, out.type, note="its name is redacted (policy.redact)")
    if x["type"] == y["type"] == "table" and x["artifact"] and y["artifact"]:
        if x["artifact"] == y["artifact"]:
            return None
        frames = []
        for side, row in ((a, x), (b, y)):
            try:
                frame = pd.read_parquet(reader.store.verified_path(row["artifact"]))
            except CorruptObject as exc:
                raise exc.made_by(reader.ledger.object_origin(row["artifact"])) from None
            frame.columns = [side.redactor.text(str(c)) for c in frame.columns]
            frames.append(frame)
        out.table = table_changes(*frames)
        if out.table.same:
            out.note = "same rows; the files differ (dtypes or metadata)"
        return out
    out.values = value_changes(a.redactor.value(x["value"]), b.redactor.value(y["value"]))
    return out if out.values else None


def _bundle_changes(ledger, run_a: dict[str, Any], run_b: dict[str, Any]) -> dict[str, Any]:
    """Files added, removed and changed between the two runs' bundle locks; version and components."""
    same = run_a["bundle_id"] == run_b["bundle_id"]
    out = {"a": run_a["bundle_id"], "b": run_b["bundle_id"], "same": same, "files": [], "other": []}
    if same:
        return out
    lock_a = ledger.bundle_lock(run_a["bundle_id"]) or {}
    lock_b = ledger.bundle_lock(run_b["bundle_id"]) or {}
    files_a, files_b = lock_a.get("files", {}), lock_b.get("files", {})
    for name in sorted(set(files_a) | set(files_b)):
        if name not in files_b:
            out["files"].append(Change(name, "removed", files_a[name], None))
        elif name not in files_a:
            out["files"].append(Change(name, "added", None, files_b[name]))
        elif files_a[name] != files_b[name]:
            out["files"].append(Change(name, "changed", files_a[name], files_b[name]))
    out["other"] = value_changes(
        {k: lock_a.get(k) for k in ("workflow", "version", "components")},
        {k: lock_b.get(k) for k in ("workflow", "version", "components")},
    )
    return out


def _notebook_change(reader, a: _Side, b: _Side, step: str) -> NotebookChange | None:
    import nbdime
    from nbdime.prettyprint import PrettyPrintConfig, pretty_print_diff

    from kit.review.report import read_executed

    nb_a, why_a = read_executed(reader.project.runs_dir, (a.steps.get(step) or {}).get("executed_notebook"), a.redactor)
    nb_b, why_b = read_executed(reader.project.runs_dir, (b.steps.get(step) or {}).get("executed_notebook"), b.redactor)
    if nb_a is None and nb_b is None:
        return None
    if nb_a is None or nb_b is None:
        status = "only in B" if nb_a is None else "only in A"
        return NotebookChange(step, status, note=f"run {'A' if nb_a is None else 'B'}: {why_a or why_b}")
    nb_a, nb_b = normalized(nb_a), normalized(nb_b)
    diff = nbdime.diff_notebooks(nb_a, nb_b)
    if not diff:
        return NotebookChange(step, "unchanged")
    text = io.StringIO()
    pretty_print_diff(
        nb_a, diff, f"{step}.ipynb", PrettyPrintConfig(out=text, use_color=False, use_git=False, use_diff=False)
    )
    return NotebookChange(step, "changed", text=text.getvalue(), cells=_cell_changes(nb_a, diff))


# ---- rendering ---------------------------------------------------------------------------------


def _side(value: Any) -> str:
    return brief(value, 160)


def as_text(d: RunDiff) -> str:
    out = [f"--- run A {d.a['run_id']} ({d.a['workflow']} {d.a['version']}, {d.a['status']})"]
    out.append(f"+++ run B {d.b['run_id']} ({d.b['workflow']} {d.b['version']}, {d.b['status']})")
    out.append("")
    out.append("parameters: " + ("unchanged" if not d.params else f"{len(d.params)} changed"))
    for c in d.params:
        out.append(f"  {c.kind:8} {c.path}: {_side(c.a)} -> {_side(c.b)}")
    bundle = d.bundle
    if bundle["same"]:
        out.append(f"bundle: the same ({(bundle['a'] or '')[:12]})")
    else:
        out.append(
            f"bundle: {(bundle['a'] or '')[:12]} -> {(bundle['b'] or '')[:12]}, {len(bundle['files'])} file(s) changed"
        )
        for c in bundle["files"]:
            out.append(f"  {c.kind:8} {c.path}")
        for c in bundle["other"]:
            out.append(f"  {c.kind:8} {c.path}: {_side(c.a)} -> {_side(c.b)}")
    where = f" of step {d.step}" if d.step else ""
    out.append(f"outputs{where}: {len(d.outputs)} changed, {d.unchanged_outputs} unchanged")
    for o in d.outputs:
        out.append(f"  {o.kind:8} {o.step}.{o.name} ({o.type})" + (f": {o.note}" if o.note else ""))
        for c in o.values:
            out.append(f"    {c.kind:8} {c.path}: {_side(c.a)} -> {_side(c.b)}")
        if o.table:
            t = o.table
            out.append(
                f"    rows {t.rows_a} -> {t.rows_b} (matched by {t.matched_by}): {t.counts['added']} added, "
                f"{t.counts['removed']} removed, {t.counts['changed']} changed"
            )
            for label, cols in (("columns added", t.columns_added), ("columns removed", t.columns_removed)):
                if cols:
                    out.append(f"    {label}: {', '.join(cols)}")
            out += [f"    + {_side(r)}" for r in t.added]
            out += [f"    - {_side(r)}" for r in t.removed]
            for r in t.changed:
                cols = "; ".join(f"{c}: {_side(v[0])} -> {_side(v[1])}" for c, v in r["columns"].items())
                out.append(f"    ~ row {brief(r['row'])}: {cols}")
    out.append(f"notebooks{where}:")
    for n in d.notebooks:
        out.append(f"  {n.step}: {n.status}" + (f" ({n.note})" if n.note else ""))
    for n in d.notebooks:
        if n.text:
            out += ["", n.text.rstrip()]
    return "\n".join(out) + "\n"


def as_html(d: RunDiff) -> str:
    """The diff as one self-contained page (no script, no network), escaped like the reports."""
    from kit.review.report import render

    return render("diff.html.j2", title=f"kit diff {d.a['run_id']} {d.b['run_id']}", d=d, notebook_css="")
