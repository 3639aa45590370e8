"""`kit capture`: turn a recorded run into a scenario file.

The run's parameters, environment and principal become the scenario's; each chosen
output becomes an `equals` expectation (a table is written as a CSV file beside the
scenario and compared with `table`); `source` keeps the provenance.

A capture never writes ``[REDACTED]`` into a scenario (DESIGN section 11): a redacted
parameter becomes ``{env: NAME}`` (read from the environment when the scenario runs),
and an expectation on a redacted value is left out, with a warning.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from kit.base.clock import utcnow
from kit.errors import InvalidInput
from kit.ledger.ledger import Ledger
from kit.ledger.objects import CorruptObject, ObjectStore
from kit.spec.policy import REDACTED
from kit.spec.scenario import PathNotFound, extract, parse_key


def llm_calls(ledger: Ledger, store: ObjectStore, run_id: str) -> list[dict[str, Any]]:
    """The run's LLM calls (request and response), in the order they were made."""
    calls = []
    for ref in ledger.llm_call_refs(run_id):
        if not store.has(ref):
            continue
        try:
            calls.append(json.loads(store.read_bytes(ref)))
        except CorruptObject as exc:
            raise exc.made_by(ledger.object_origin(ref)) from None
    return calls


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "scenario"


def capture(
    ledger: Ledger,
    store: ObjectStore,
    run_id: str,
    expects: list[str],
    out: Path,
    captured_by: str,
    name: str | None = None,
    description: str | None = None,
    note: str | None = None,
    tags: list[str] | None = None,
) -> Path:
    run = ledger.run(run_id)
    if run is None:
        raise InvalidInput(f"no run {run_id!r}")
    outputs = {f"{o['step_id']}.{o['name']}": o for o in ledger.outputs(run_id)}
    if not outputs:
        raise InvalidInput(f"run {run_id} recorded no outputs to capture (status {run['status']})")
    calls = llm_calls(ledger, store, run_id)  # read (and checked) before anything is written
    keys = list(expects) or list(outputs)
    stem = _slug(out.stem)
    out = out.resolve()
    expect: dict[str, Any] = {}
    left_out: list[str] = []
    for key in keys:
        try:
            step, output, path = parse_key(key)
        except (InvalidInput, ValueError) as exc:
            raise InvalidInput(f"--expect {key!r}: {getattr(exc, 'message', exc)}") from None
        record = outputs.get(f"{step}.{output}")
        if record is None:
            known = ", ".join(outputs)
            raise InvalidInput(f"--expect {key!r}: run {run_id} has no output {step}.{output} (it has: {known})")
        if record["type"] == "table":
            if path:
                raise InvalidInput(f"--expect {key!r}: a table is captured whole; name {step}.{output}")
            import pandas as pd

            try:
                frame = pd.read_parquet(store.verified_path(record["artifact"]))
            except CorruptObject as exc:
                raise exc.made_by(f"run {run_id}, step {step} (output {output})") from None
            relative = Path("expected") / f"{stem}-{step}-{output}.csv"
            (out.parent / relative).parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(out.parent / relative, index=False)
            expect[key] = {"table": relative.as_posix()}
            continue
        try:
            value = extract(record["value"], path, label=f"{step}.{output}")
        except PathNotFound as exc:
            raise InvalidInput(f"--expect {key!r}: {exc}") from None
        if REDACTED in json.dumps(value, default=str):
            left_out.append(key)
            continue
        expect[key] = {"equals": value}
    for key in left_out:
        print(f"warning: kit capture: {key} holds a redacted value: no expectation is written for it", file=sys.stderr)
    for name, value in (run["params"] or {}).items():
        if value == REDACTED:
            print(
                f"note: kit capture: params.{name} was redacted: the scenario reads it from ${name.upper()}",
                file=sys.stderr,
            )
    if not expect:
        raise InvalidInput(f"run {run_id}: every output chosen holds a redacted value; nothing to expect")
    source = {"run": run_id, "captured_by": captured_by, "captured_at": utcnow(), "bundle": run["bundle_id"]}
    if note:
        source["note"] = note
    document: dict[str, Any] = {
        "scenario": name or f"{run['workflow']}/{stem}",
        "workflow": run["workflow"],
        "description": description or f"Captured from run {run_id}",
        "params": {k: ({"env": k.upper()} if v == REDACTED else v) for k, v in (run["params"] or {}).items()},
    }
    if run["env"]:
        document["env"] = run["env"]
    document["as"] = run["principal"]
    document["expect"] = expect
    document["source"] = source
    if tags:
        document["tags"] = list(tags)
    if calls:
        from kit.kernel.recordings import write_recordings

        relative = Path("recordings") / f"{stem}.jsonl"
        write_recordings(calls, out.parent / relative)
        document["recordings"] = relative.as_posix()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100))
    return out
