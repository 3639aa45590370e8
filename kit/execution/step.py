"""Executing one step attempt: the pure function from a `StepTask` to a `StepResult`.

Runs the notebook through an engine, then reads what the kernel spooled (outputs,
spans, secret names), moves tables into the object store and checks every output
against its declared type. It never touches the ledger. A full disk, wherever it
strikes (the kernel, the executed notebook, the object store), fails the step with
`error_type` ``NoSpace`` and leaves no partial files behind; the spool goes either way.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

from kit.base.clock import new_span_id, utcnow
from kit.base.jsonl import read_jsonl
from kit.errors import NoSpace, is_no_space
from kit.execution.engines import NotebookOutcome, get_engine
from kit.execution.task import OutputRecord, StepResult, StepTask
from kit.kernel.api import OUTPUTS_DIR, SECRETS_FILE, SPANS_FILE
from kit.kernel.calls import CALLS_FILE
from kit.ledger.objects import ObjectStore, ref_of
from kit.spec import contracts
from kit.spec.policy import Redactor


def execute_step(task: StepTask) -> StepResult:
    started_at = utcnow()
    t0 = time.perf_counter()
    spool = Path(task.spool)
    try:
        return _execute(task, spool, started_at, t0)
    except OSError as exc:
        if not is_no_space(exc):
            raise
        Path(task.output_notebook).unlink(missing_ok=True)  # a notebook cut short is no record
        return StepResult(
            step_id=task.step_id,
            attempt=task.attempt,
            status="failed",
            started_at=started_at,
            ended_at=utcnow(),
            duration_ms=round((time.perf_counter() - t0) * 1000, 3),
            error_type="NoSpace",
            error_message=NoSpace.writing(Path(task.output_notebook).parent.parent).message,
        )
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _execute(task: StepTask, spool: Path, started_at: str, t0: float) -> StepResult:
    if spool.exists():
        shutil.rmtree(spool)
    spool.mkdir(parents=True)
    Path(task.output_notebook).parent.mkdir(parents=True, exist_ok=True)

    try:
        outcome = get_engine(task.engine).execute(task)
    except Exception as exc:  # the engine's own fault, not the step's code: the step fails, the run goes on
        if isinstance(exc, OSError) and is_no_space(exc):
            raise
        outcome = NotebookOutcome(
            error_type="EngineError",
            error_message=f"the {task.engine} engine could not execute the step: {type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
        )
    if not outcome.ok and is_no_space(Exception(outcome.error_message or "")):
        raise OSError(errno.ENOSPC, outcome.error_message)
    duration_ms = (time.perf_counter() - t0) * 1000
    result = StepResult(
        step_id=task.step_id,
        attempt=task.attempt,
        status="succeeded" if outcome.ok else "failed",
        started_at=started_at,
        ended_at=utcnow(),
        duration_ms=round(duration_ms, 3),
        executed_notebook=task.output_notebook if Path(task.output_notebook).exists() else None,
        error_type=outcome.error_type,
        error_message=outcome.error_message,
        error_cell=outcome.error_cell,
        error_source=outcome.error_source,
        traceback=outcome.traceback,
    )
    result.spans = read_jsonl(spool / SPANS_FILE) + [_cell_span(cell) for cell in outcome.cells]
    result.secrets = sorted({r["name"] for r in read_jsonl(spool / SECRETS_FILE)})
    redactor = Redactor(task.redact, task.secret_values)
    redactor.add_secret_names(result.secrets)
    _collect_llm_calls(task, spool, result, redactor)
    if outcome.ok:
        _collect_outputs(task, spool, result, redactor)
    if result.executed_notebook:
        _add_summary(Path(result.executed_notebook), task.summary)
        if redactor.secrets:
            _redact_file(Path(result.executed_notebook), redactor)
    return result


SUMMARY_TAG = "kit-summary"


def _add_summary(path: Path, summary: str) -> None:
    """Open the executed notebook with the run's summary (a markdown cell tagged `kit-summary`), so a
    reviewer reading it alone knows which run, step, principal, environment and inputs it was."""
    if not summary:
        return
    nb = json.loads(path.read_text())
    cell = {"cell_type": "markdown", "id": "kit-summary", "metadata": {"tags": [SUMMARY_TAG]}, "source": summary}
    nb["cells"] = [cell] + [c for c in nb.get("cells", []) if SUMMARY_TAG not in c.get("metadata", {}).get("tags", [])]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _collect_llm_calls(task: StepTask, spool: Path, result: StepResult, redactor: Redactor) -> None:
    """Each LLM call's request and response become an artifact that its span refers to."""
    calls = read_jsonl(spool / CALLS_FILE)
    if not calls:
        return
    store = ObjectStore(task.objects)
    refs = {}
    for call in calls:
        body = json.dumps({k: call.get(k) for k in ("key", "request", "response")}, sort_keys=True, ensure_ascii=False)
        refs[call["call_id"]] = ref_of(store.put_bytes(redactor.text(body).encode()))
    for span in result.spans:
        attrs = span.get("attributes") or {}
        if attrs.get("kit.llm.call_id") in refs:
            attrs["kit.llm.content"] = refs[attrs["kit.llm.call_id"]]


def _redact_file(path: Path, redactor: Redactor) -> None:
    """Rewrite a kept file (the executed notebook) without its secrets, atomically."""
    text = path.read_text()
    cleaned = redactor.text(text)
    if cleaned != text:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(cleaned)
        os.replace(tmp, path)


def _redact_table(path: Path, redactor: Redactor) -> None:
    """Secrets inside a table's text columns, and in its column names, are replaced before it is stored."""
    import pandas as pd

    frame = pd.read_parquet(path)
    names = [redactor.text(str(c)) for c in frame.columns]
    for i, name in enumerate(names):  # two names redacted alike stay two columns
        if names.count(name) > 1:
            names[i] = f"{name}_{i}"
    changed = names != [str(c) for c in frame.columns]
    if changed:
        frame.columns = names
    for column in frame.columns:
        if frame[column].dtype == object or str(frame[column].dtype).startswith("str"):
            cleaned = frame[column].map(lambda v: redactor.text(v) if isinstance(v, str) else v)
            if not cleaned.equals(frame[column]):
                frame[column] = cleaned
                changed = True
    if changed:
        frame.to_parquet(path, index=False)


def _cell_span(cell: dict[str, Any]) -> dict[str, Any]:
    return {
        "span_id": new_span_id(),
        "parent_id": None,
        "name": f"cell {cell['index']}",
        "kind": "cell",
        "started_at": cell["start_time"],
        "ended_at": cell["end_time"],
        "status": "error" if cell["status"] == "failed" else "ok",
        "attributes": {"cell": cell["index"], "tags": cell["tags"]},
    }


def _collect_outputs(task: StepTask, spool: Path, result: StepResult, redactor: Redactor) -> None:
    """Read spooled outputs, store tables, and fail the step on a missing or mistyped one."""
    store = ObjectStore(task.objects)
    produced: dict[str, Path] = {}
    out_dir = spool / OUTPUTS_DIR
    if out_dir.is_dir():
        for path in sorted(out_dir.iterdir()):
            if path.suffix in (".json", ".parquet"):
                produced[path.stem] = path
    problems = []
    for name, spec in task.outputs.items():
        path = produced.get(name)
        if path is None:
            problems.append(f"output {name!r} was not produced: the notebook never called kit.output({name!r}, ...)")
            continue
        is_table = path.suffix == ".parquet"
        value = None if is_table else json.loads(path.read_text())["value"]
        problem = contracts.check_output(name, spec, value, is_table)
        if problem:
            problems.append(problem)
            continue
        if is_table:
            if redactor.secrets:
                _redact_table(path, redactor)
            digest = store.put_file(path)
            record = OutputRecord(name, "table", artifact=ref_of(digest), size_bytes=path.stat().st_size)
        else:
            record = OutputRecord(name, contracts.type_name(spec), value=value, size_bytes=path.stat().st_size)
        result.outputs.append(record)
    undeclared = sorted(set(produced) - set(task.outputs))
    if undeclared:
        result.warnings.append(f"undeclared outputs ignored: {', '.join(undeclared)} (declare them in workflow.yaml)")
    if problems:
        result.status = "failed"
        result.error_type = "OutputError"
        result.error_message = "; ".join(problems)
