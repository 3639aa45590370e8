"""A step task and its result: the whole interface between the coordinator and an executor.

Executing a step is a pure function from a `StepTask` to a `StepResult` (DESIGN
section 13): both are plain, picklable data, so a step can run in a local worker
thread or on a Dask worker. Neither side touches the ledger but the coordinator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepTask:
    run_id: str
    step_id: str
    attempt: int
    notebook: str  # absolute path of the notebook to execute
    workdir: str  # the notebook's folder: the kernel's working directory
    parameters: dict[str, Any]  # validated JSON values, keyed by parameter name
    outputs: dict[str, Any]  # declared output name -> type spec
    output_notebook: str  # where the executed notebook is kept
    spool: str  # the step's spool directory
    objects: str  # the object store's root
    engine: str = "papermill"
    kernel_name: str = "python3"
    timeout: float | None = None  # seconds for the whole attempt; then interrupt, then kill
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the kernel
    redact: list[str] = field(default_factory=list)  # policy.redact name patterns
    secret_values: list[str] = field(default_factory=list)  # values to keep out of what the step persists
    summary: str = ""  # markdown put on top of the executed notebook: the run and where inputs came from
    bundle: dict[str, Any] | None = None  # {"root": folder, "lock": lock}: what a remote executor ships by digest


@dataclass
class OutputRecord:
    name: str
    type: str  # the declared type's name ("table", "object", ..., or "schema")
    value: Any = None  # a JSON value; None for a table
    artifact: str | None = None  # artifact:sha256:... for a table
    size_bytes: int | None = None


@dataclass
class StepResult:
    step_id: str
    attempt: int
    status: str  # "succeeded" or "failed"
    started_at: str
    ended_at: str
    duration_ms: float
    outputs: list[OutputRecord] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)  # spans the notebook emitted, and cells
    secrets: list[str] = field(default_factory=list)  # names read through kit.secret
    executed_notebook: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_cell: int | None = None
    error_source: str | None = None
    traceback: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"
