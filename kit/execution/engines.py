"""Engines: how a step's notebook is executed (DESIGN section 13), found by name.

An engine takes a `StepTask`, executes its notebook (keeping papermill's
parameterization and its executed output notebook) and reports what went wrong, if
anything, as a `NotebookOutcome`; collecting outputs is not its business. Each
states the isolation it gives, recorded with every run.

Engines are plugins of the entry point group ``kit.engines`` (`kit.base.plugins`);
kit's own (`papermill`, `warm`, in `kit.execution.papermill_engines`) are declared
the same way. The default engine of each command is in `DEFAULT_ENGINES`;
``KIT_ENGINE`` overrides it for every command, ``--engine`` for one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kit.base.plugins import Registry, UnknownPlugin
from kit.errors import InvalidInput
from kit.execution.task import StepTask
from kit.kernel.api import OBJECTS_ENV, SPOOL_ENV

ENTRY_POINT_GROUP = "kit.engines"
ENGINE_ENV = "KIT_ENGINE"

#: The engine each command uses unless KIT_ENGINE or --engine says otherwise.
DEFAULT_ENGINES = {"run": "papermill", "test": "warm", "replay": "warm", "pytest": "warm"}


@dataclass
class NotebookOutcome:
    """What executing a notebook produced besides its spool: an error, and cell timings."""

    error_type: str | None = None
    error_message: str | None = None
    error_cell: int | None = None
    error_source: str | None = None
    traceback: str | None = None
    cells: list[dict[str, Any]] = field(default_factory=list)  # papermill's per-cell timing metadata

    @property
    def ok(self) -> bool:
        return self.error_type is None


@dataclass(frozen=True)
class Engine:
    """A named way to execute a step, and the isolation it gives (recorded in `runs.isolation`)."""

    name: str
    isolation: str
    execute: Callable[[StepTask], NotebookOutcome]


def _engine(obj: Any, name: str) -> Engine:
    if not isinstance(obj, Engine):
        raise TypeError(f"{obj!r} is not a kit.execution.engines.Engine")
    return obj


ENGINES = Registry(ENTRY_POINT_GROUP, "engine", _engine)


def get_engine(name: str) -> Engine:
    try:
        return ENGINES.get(name)
    except UnknownPlugin as exc:
        if exc.load_error:
            raise InvalidInput(exc.message) from None
        raise InvalidInput(f"unknown engine {name!r}; known engines: {', '.join(exc.known)}") from None


def default_engine(command: str) -> str:
    """The engine `command` (run, test, replay, pytest) uses when --engine is not given."""
    return os.environ.get(ENGINE_ENV) or DEFAULT_ENGINES[command]


def kernel_environment(task: StepTask) -> dict[str, str]:
    """The environment a step's kernel sees: the coordinator's, plus the run's and where to spool."""
    env = dict(os.environ)
    env.update(task.env)
    env[SPOOL_ENV] = task.spool
    env[OBJECTS_ENV] = task.objects
    env["KIT_STEP"] = task.step_id
    env.pop("KIT_HOME", None)
    return env


def failing_cell(nb: Any, fallback: int) -> int:
    """The index, in the executed notebook as saved, of the cell that raised."""
    for index, cell in enumerate(nb.cells):
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return index
    return fallback
