"""The notebook API: what a step notebook calls (`kit.output`, `kit.load`, `kit.span`, `kit.secret`).

It runs inside the kernel. Under kit (the coordinator sets ``KIT_SPOOL``) everything
a step emits is written to its spool directory, which the coordinator ingests; a
kernel never touches the ledger. Standalone, in a plain Jupyter session, outputs are
displayed and paths are read locally, so every step notebook runs on its own.

Kept free of heavy imports: pandas is imported only when a table is touched.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

from kit.base.clock import new_span_id
from kit.base.jsonl import append_jsonl
from kit.base.values import is_dataframe

SPOOL_ENV = "KIT_SPOOL"
OBJECTS_ENV = "KIT_OBJECTS"
ARTIFACT_PREFIX = "artifact:sha256:"
SPANS_FILE = "spans.jsonl"
SECRETS_FILE = "secrets.jsonl"
OUTPUTS_DIR = "outputs"

#: What the step has output so far, by name (handy standalone, and for tests).
outputs: dict[str, Any] = {}

_current_span: contextvars.ContextVar[str | None] = contextvars.ContextVar("kit_span", default=None)


class KitNotebookError(Exception):
    """A misuse of the notebook API, raised inside the kernel with a plain message."""


def spool_dir() -> Path | None:
    """The step's spool directory when running under kit, else None."""
    value = os.environ.get(SPOOL_ENV)
    return Path(value) if value else None


def running_under_kit() -> bool:
    return spool_dir() is not None


def output(name: str, value: Any) -> Any:
    """Declare the step's output `name`: a JSON value, or a pandas DataFrame (a table).

    Under kit it is written to the spool; standalone it is displayed. Returns the value.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise KitNotebookError(f"kit.output: the output name must be an identifier, got {name!r}")
    spool = spool_dir()
    if is_dataframe(value):
        if spool is not None:
            target = spool / OUTPUTS_DIR / f"{name}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            value.to_parquet(target, index=False)
    else:
        try:
            encoded = json.dumps({"value": value}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise KitNotebookError(
                f"kit.output({name!r}): expected a JSON value (str, int, float, bool, None, list, dict) "
                f"or a pandas DataFrame, got {type(value).__name__}: {exc}"
            ) from None
        if spool is not None:
            target = spool / OUTPUTS_DIR / f"{name}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(encoded)
    outputs[name] = value
    if spool is None:
        _display(name, value)
    return value


def _display(name: str, value: Any) -> None:
    """Show an output the way a reviewer reads it on the web: a table, or JSON in a code block."""
    try:
        from IPython.display import Markdown, display
    except ImportError:  # plain Python, not a kernel
        print(f"output {name}: {value!r}")
        return
    if is_dataframe(value):
        display(Markdown(f"**output `{name}`** ({len(value)} rows)"))
        display(value)
    else:
        text = json.dumps(value, indent=2, ensure_ascii=False)
        display(Markdown(f"**output `{name}`**\n```json\n{text}\n```"))


def artifact_path(ref: str) -> Path:
    """The file behind an ``artifact:sha256:...`` reference, its bytes re-hashed against the digest first."""
    from kit.base.digests import sha256_file

    digest = ref[len(ARTIFACT_PREFIX) :]
    objects = os.environ.get(OBJECTS_ENV)
    if not objects:
        raise KitNotebookError(
            f"kit.load({ref!r}): an artifact reference needs the kit object store; "
            f"set {OBJECTS_ENV} or run the step with `kit run`"
        )
    path = Path(objects) / digest[:2] / digest[2:]
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        raise KitNotebookError(f"kit.load({ref!r}): the object is missing from {objects}") from None
    if actual != digest:
        raise KitNotebookError(
            f"kit.load({ref!r}): the object {path} is corrupt: its bytes hash to sha256:{actual}; "
            "kit refuses to use it (`kit fsck` lists what else is damaged)"
        )
    return path


def load(ref: Any):
    """A DataFrame (or JSON value) from an artifact reference, a local path, or a DataFrame.

    Paths are relative to the working directory, which is the notebook's folder both
    in Jupyter and under kit. Reads Parquet, CSV, JSON and JSON lines.
    """
    if is_dataframe(ref):
        return ref
    if not isinstance(ref, (str, os.PathLike)):
        raise KitNotebookError(f"kit.load: expected an artifact reference or a path, got {type(ref).__name__}")
    ref = os.fspath(ref)
    import pandas as pd

    if ref.startswith(ARTIFACT_PREFIX):
        path = artifact_path(ref)
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic == b"PAR1":
            return pd.read_parquet(path)
        return json.loads(path.read_text())["value"]
    path = Path(ref)
    if not path.exists():
        raise KitNotebookError(f"kit.load: no such file {ref!r} (working directory {os.getcwd()})")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    if suffix == ".json":
        return pd.read_json(path)
    raise KitNotebookError(f"kit.load: cannot read {ref!r}: expected .parquet, .csv, .json or .jsonl")


def spool_record(filename: str, record: dict) -> None:
    """Append one record to a JSON-lines file of the step's spool (nothing standalone)."""
    spool = spool_dir()
    if spool is None:
        return
    spool.mkdir(parents=True, exist_ok=True)
    append_jsonl(spool / filename, [record])


def declare_secret(name: str) -> None:
    """Tell kit that the environment variable `name` holds a secret: its value is redacted everywhere."""
    spool_record(SECRETS_FILE, {"name": name})


def reset() -> None:
    """Forget this step's outputs and open span (a reused kernel starts the next step clean)."""
    outputs.clear()
    _current_span.set(None)


def _now_iso() -> str:
    from datetime import datetime

    return datetime.now(UTC).isoformat()


@contextlib.contextmanager
def span(name: str, kind: str = "custom", **attributes: Any) -> Iterator[dict]:
    """Time a piece of the step as a span (a retrieval, a tool call, ...).

    Yields the span's attribute dict, so the body can add attributes
    (``s["hits"] = len(hits)``). Spans nest. Under kit they are spooled; standalone
    they only time.
    """
    span_id = new_span_id()
    parent = _current_span.get()
    token = _current_span.set(span_id)
    started_at = _now_iso()
    t0 = time.perf_counter()
    status = "ok"
    attrs = dict(attributes)
    try:
        yield attrs
    except BaseException as exc:
        status = "error"
        attrs.setdefault("error.type", type(exc).__name__)
        raise
    finally:
        _current_span.reset(token)
        attrs["duration_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        spool_record(
            SPANS_FILE,
            {
                "span_id": span_id,
                "parent_id": parent,
                "name": name,
                "kind": kind,
                "started_at": started_at,
                "ended_at": _now_iso(),
                "status": status,
                "attributes": attrs,
            },
        )


def secret(name: str) -> str:
    """The value of the environment variable `name`; kit redacts it from everything it keeps."""
    value = os.environ.get(name)
    if value is None:
        raise KitNotebookError(f"kit.secret: the environment variable {name!r} is not set")
    declare_secret(name)
    return value


IDEMPOTENCY_ENV = "KIT_IDEMPOTENCY_KEY"
_standalone_key: str | None = None


def idempotency_key() -> str:
    """A key for this run's step that stays the same across its retries and resumes.

    Pass it to tools that move money or write to other systems, so they can tell a
    repeated request from a new one. Standalone (no run) it is fixed for this kernel.
    """
    global _standalone_key
    key = os.environ.get(IDEMPOTENCY_ENV)
    if key:
        return key
    if _standalone_key is None:
        _standalone_key = "standalone-" + os.urandom(12).hex()
    return _standalone_key


COMPONENTS_ENV = "KIT_COMPONENTS"


def component(name: str) -> Path:
    """Where the workflow's component `name` is: its `path` in the workflow's folder, or, for a component
    taken from the store (`store: NAME`, `version: RANGE`), the folder of the published bundle kit fetched.

    Under kit the run says (``KIT_COMPONENTS``); standalone, `workflow.yaml` in the working directory does,
    with `workflow.lock` for a store component (`kit lock` resolves and fetches it into `.kit/installed/`).
    """
    raw = os.environ.get(COMPONENTS_ENV)
    if raw:
        found = json.loads(raw)
        if name not in found:
            raise KitNotebookError(f"kit.component({name!r}): the workflow has no such component ({', '.join(found)})")
        return Path(found[name])
    import yaml

    manifest = Path("workflow.yaml")
    spec = yaml.safe_load(manifest.read_text()) if manifest.is_file() else {}
    part = ((spec or {}).get("components") or {}).get(name)
    if not isinstance(part, dict):
        raise KitNotebookError(f"kit.component({name!r}): {manifest.resolve()} declares no component {name!r}")
    if part.get("path"):
        return Path(part["path"]).resolve()
    lock = Path("workflow.lock")
    resolved = (json.loads(lock.read_text()).get("resolved") or {}).get("components", {}) if lock.is_file() else {}
    if name in resolved:
        for folder in (Path.cwd(), *Path.cwd().parents):
            installed = folder / ".kit" / "installed" / resolved[name]["bundle_id"]
            if installed.is_dir():
                return installed
    raise KitNotebookError(
        f"kit.component({name!r}): it comes from the store ({part.get('store')} {part.get('version')}); "
        "run `kit lock` on this workflow to resolve and fetch it"
    )
