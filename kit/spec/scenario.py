"""Scenario files: a captured case with its parameters and expected outputs (DESIGN section 8).

```yaml
scenario: casework/missing-discount
workflow: casework
params: {case_id: C-1042}
expect:
  recommend.decision.action: {equals: apply_discount}
  fetch_case.payload: {table: expected/C-1042-payload.csv, ignore_order: true}
recordings: recordings/missing-discount.jsonl
```

:func:`load_scenario` parses and checks a file (every error names the file, the
line and the key); :func:`validate_against` checks its expectations against a
workflow's steps and outputs; :func:`discover` finds scenario files under
directories; :func:`extract` follows an expectation's path into an output value.
Which comparator an expectation names, and whether its spec is right, is decided by
the comparators (a layer above): :func:`load_scenario` takes their check as
``check_spec`` and reports its problems with the file and line like its own
(`kit.verification.scenarios.load_scenario` passes it). Checking an expectation is
`kit.verification.comparators.evaluate`.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kit.base.display import brief
from kit.base.values import is_dataframe, table_cell
from kit.base.yamlio import Located, load_yaml, validation_error
from kit.errors import InvalidInput, NotFound

__all__ = [
    "Scenario",
    "Expectation",
    "PathNotFound",
    "load_scenario",
    "validate_against",
    "discover",
    "extract",
    "parse_key",
    "is_scenario_file",
    "SCENARIO_SUFFIXES",
    "SpecCheck",
    "SpecProblem",
]

SCENARIO_SUFFIXES = (".yaml", ".yml")

#: What `STEP: {status: ...}` may expect of a step; `succeeded` also holds for a step whose outputs were reused
#: (`cached`): the step's work was done, by this run or an earlier one.
EXPECTED_STATUSES = ("skipped", "succeeded", "failed", "approved", "rejected")
STATUS = "status"  # the comparator name a step's status expectation is recorded under


PathPart = str | int


class SpecProblem(ValueError):
    """What is wrong with an expectation's spec, and the spec key it is about (for its line)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


#: ``check_spec(spec, base_dir) -> comparator name``; raises SpecProblem or InvalidInput.
SpecCheck = Callable[[dict, Path], str]


class Expectation(BaseModel):
    """One expectation: ``key`` as written, split into step, output and a path into the value."""

    model_config = ConfigDict(frozen=True)

    key: str
    step: str
    output: str
    path: tuple[PathPart, ...] = ()
    comparator: str = ""  # the comparator's name, once the comparators checked the spec
    spec: dict[str, Any]
    line: int | None = None

    @property
    def output_key(self) -> str:
        """``STEP.OUTPUT`` without the path (``STEP`` for an expectation on the step's status)."""
        return f"{self.step}.{self.output}" if self.output else self.step

    @property
    def on_status(self) -> bool:
        """``STEP: {status: skipped}``: an expectation on whether the step ran, not on an output."""
        return self.comparator == STATUS


class Scenario(BaseModel):
    """A loaded, checked scenario file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    scenario: str
    workflow: str
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    env: str | None = None
    as_: str | None = Field(default=None, alias="as")
    expect: list[Expectation] = Field(default_factory=list)
    recordings: str | None = None
    llm_mode: str | None = None  # live, record or replay (default: replay, or $KIT_LLM_MODE)
    approve: dict[str, str] = Field(default_factory=dict)  # approval step -> who decides it in scenario runs
    root: Path | None = None  # the project the scenario's files must stay in, once checked
    source: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)
    path: Path | None = None

    @property
    def id(self) -> str:
        return self.scenario

    @property
    def principal(self) -> str | None:
        return self.as_

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the scenario resolve against."""
        return Path(os.path.abspath(self.path)).parent if self.path is not None else Path.cwd()

    @property
    def recordings_path(self) -> Path | None:
        """``recordings`` resolved relative to the scenario file."""
        if self.recordings is None:
            return None
        p = Path(self.recordings)
        return p if p.is_absolute() else self.base_dir / p

    def resolved_params(self) -> dict[str, Any]:
        """The parameters, each ``{env: NAME}`` read from the environment (how a captured secret comes back)."""
        out = {}
        for name, value in self.params.items():
            if isinstance(value, Mapping) and set(value) == {"env"} and isinstance(value["env"], str):
                if value["env"] not in os.environ:
                    raise InvalidInput(
                        f"{self.where()}: params.{name}: the environment variable {value['env']} is not set "
                        f"(the scenario reads this parameter from it)"
                    )
                value = os.environ[value["env"]]
            out[name] = value
        return out

    def where(self, expectation: Expectation | None = None) -> str:
        """``file:line`` of the scenario or of one of its expectations."""
        name = str(self.path) if self.path is not None else f"scenario {self.scenario}"
        line = expectation.line if expectation is not None else None
        return f"{name}:{line}" if line else name

    def outputs_needed(self) -> list[str]:
        """The ``STEP.OUTPUT`` names the expectations read, in order, without repeats."""
        return list(dict.fromkeys(e.output_key for e in self.expect if not e.on_status))


class _RawScenario(BaseModel):
    """The top level as written, for type checks with located errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    scenario: str
    workflow: str
    description: str | None = ""
    params: dict[str, Any] | None = None
    env: str | None = None
    as_: str | None = Field(default=None, alias="as")
    expect: dict[Any, Any] | None = None  # keys are checked one by one, with their lines
    recordings: str | None = None
    llm_mode: Literal["live", "record", "replay"] | None = None
    approve: dict[str, str] | None = None
    source: dict[str, Any] | None = None
    tags: list[str] | None = None


def parse_key(key: str) -> tuple[str, str, tuple[PathPart, ...]]:
    """Split ``STEP.OUTPUT[.path]`` into step, output and path parts; raises ValueError.

    Path parts made of digits are list indices (``rows.0.id``); ``rows[0].id`` works too.
    """
    if not isinstance(key, str) or not key.strip():
        raise ValueError("an expectation key must be STEP.OUTPUT or STEP.OUTPUT.path")
    text = re.sub(r"\[(\d+)\]", r".\1", key.strip())
    parts = text.split(".")
    if len(parts) < 2:
        raise ValueError(f"expected STEP.OUTPUT or STEP.OUTPUT.path, got {key!r}")
    if any(p == "" for p in parts):
        raise ValueError(f"empty part in {key!r} (expected STEP.OUTPUT or STEP.OUTPUT.path)")
    step, output, rest = parts[0], parts[1], parts[2:]
    if not step.isidentifier():
        raise ValueError(f"{step!r} is not a step id (in {key!r}; expected STEP.OUTPUT[.path])")
    if not output.isidentifier():
        raise ValueError(f"{output!r} is not an output name (in {key!r}; expected STEP.OUTPUT[.path])")
    path = tuple(int(p) if p.isdigit() else p for p in rest)
    return step, output, path


def _plain(value: Any) -> Any:
    """YAML dates and timestamps become ISO strings: kit's values are JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, _dt.datetime):
        return str(value)
    if isinstance(value, _dt.date):
        return value.isoformat()
    return value


def load_scenario(path: str | Path, text: str | None = None, check_spec: SpecCheck | None = None) -> Scenario:
    """Load and check a scenario file; every problem is an InvalidInput naming file, line and key.

    Without `check_spec` the expectations' comparator specs are taken as written (for
    readers that only want a scenario's parameters or provenance)."""
    path = Path(path)
    doc = load_yaml(path, text)
    if doc.data is None:
        raise InvalidInput(f"{path}: empty file; expected a scenario (scenario:, workflow:, expect:)")
    if not isinstance(doc.data, dict):
        raise doc.error((), f"expected a mapping with scenario:, workflow: and expect:, got {type(doc.data).__name__}")
    data = _plain(doc.data)
    try:
        raw = _RawScenario.model_validate(data)
    except ValidationError as exc:
        raise validation_error(doc, exc) from None

    problems: list[str] = []
    expectations: list[Expectation] = []
    for key, spec in (raw.expect or {}).items():
        exp = _expectation(doc, key, spec, path.parent, check_spec, problems)
        if exp is not None:
            expectations.append(exp)
    if not raw.expect and not problems:
        problems.append(
            f"{doc.where(('expect',) if 'expect' in doc.data else ())}: expect: a scenario needs at least one "
            "expectation (STEP.OUTPUT: {COMPARATOR: ...})"
        )
    if problems:
        raise InvalidInput("\n".join(problems))

    return Scenario(
        scenario=raw.scenario,
        workflow=raw.workflow,
        description=raw.description or "",
        params=raw.params or {},
        env=raw.env,
        as_=raw.as_,
        expect=expectations,
        recordings=raw.recordings,
        llm_mode=raw.llm_mode,
        approve=raw.approve or {},
        source=raw.source,
        tags=raw.tags or [],
        path=path,
    )


def _expectation(
    doc: Located, key: Any, spec: Any, base_dir: Path, check_spec: SpecCheck | None, problems: list[str]
) -> Expectation | None:
    loc = ("expect", key)

    def problem(message: str, sub: str | None = None) -> None:
        where = doc.where(loc + (sub,) if sub is not None else loc)
        problems.append(f"{where}: expect {key!r}: {message}")

    if not isinstance(key, str):
        problem(f"expected a key of the form STEP.OUTPUT or STEP.OUTPUT.path, got {key!r}")
        return None
    if key.strip().isidentifier():  # a bare step: an expectation on its status
        return _status_expectation(doc, key.strip(), spec, problem)
    try:
        step, output, parts = parse_key(key)
    except ValueError as exc:
        problem(str(exc))
        return None
    if not isinstance(spec, Mapping):
        problem(f"expected a mapping with one comparator, e.g. {{equals: ...}}, got {brief(spec)}")
        return None
    name = ""
    if check_spec is not None:
        try:
            name = check_spec(dict(spec), base_dir)
        except SpecProblem as exc:
            problem(str(exc), exc.key)
            return None
        except InvalidInput as exc:
            problem(exc.message)
            return None
    return Expectation(
        key=key, step=step, output=output, path=parts, comparator=name, spec=dict(spec), line=doc.line(loc)
    )


def _status_expectation(doc: Located, key: str, spec: Any, problem) -> Expectation | None:
    """``STEP: {status: skipped}`` (or succeeded, failed, approved, rejected)."""
    form = (
        f"expected STEP.OUTPUT or STEP.OUTPUT.path with a comparator, or {key}: {{status: skipped}} for a step's status"
    )
    if not isinstance(spec, Mapping) or set(spec) != {STATUS}:
        problem(f"{form}, got {brief(spec)}")
        return None
    if spec[STATUS] not in EXPECTED_STATUSES:
        problem(f"status: expected one of {', '.join(EXPECTED_STATUSES)}, got {brief(spec[STATUS])}", STATUS)
        return None
    return Expectation(
        key=key, step=key, output="", comparator=STATUS, spec=dict(spec), line=doc.line(("expect", key, STATUS))
    )


def validate_against(
    scenario: Scenario, workflow_steps: Mapping[str, Iterable[str]], workflow: str | None = None
) -> None:
    """Check that each expectation names a step of the workflow and an output it declares.

    `workflow_steps` maps step id to its output names. With `workflow`, also check
    that the scenario is for that workflow. Raises one InvalidInput listing every problem.
    """
    problems: list[str] = []
    if workflow is not None and scenario.workflow != workflow:
        problems.append(f"{scenario.where()}: scenario is for workflow {scenario.workflow!r}, not {workflow!r}")
    steps = {k: set(v) for k, v in workflow_steps.items()}
    for exp in scenario.expect:
        if exp.step not in steps:
            problems.append(
                f"{scenario.where(exp)}: expect {exp.key!r}: unknown step {exp.step!r} "
                f"(steps: {', '.join(sorted(steps)) or 'none'})"
            )
        elif exp.on_status:
            continue
        elif exp.output not in steps[exp.step]:
            outs = ", ".join(sorted(steps[exp.step])) or "none"
            problems.append(
                f"{scenario.where(exp)}: expect {exp.key!r}: step {exp.step!r} has no output {exp.output!r} "
                f"(its outputs: {outs})"
            )
    if problems:
        raise InvalidInput("\n".join(problems))


_SCENARIO_KEY = re.compile(r"^scenario[ \t]*:", re.MULTILINE)


def is_scenario_file(path: Path) -> bool:
    """A ``.yaml``/``.yml`` file with a top-level ``scenario:`` key (a cheap textual check)."""
    if path.suffix.lower() not in SCENARIO_SUFFIXES or not path.is_file():
        return False
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return _SCENARIO_KEY.search(text) is not None


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """Scenario files under `paths`, sorted: directories are searched recursively.

    A directory yields its ``*.yaml``/``*.yml`` files with a top-level ``scenario:`` key
    (``workflow.yaml`` and other YAML is skipped; hidden folders are not entered). A file
    named explicitly is taken as a scenario. A path that does not exist is a NotFound.
    """
    found: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for candidate in _walk(p):
                if is_scenario_file(candidate):
                    found.add(candidate)
        elif p.is_file():
            found.add(p)
        else:
            raise NotFound(f"{p}: no such file or directory")
    return sorted(found)


def _walk(root: Path) -> Iterable[Path]:
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or child.name in ("__pycache__", "node_modules"):
            continue
        if child.is_dir():
            yield from _walk(child)
        elif child.suffix.lower() in SCENARIO_SUFFIXES:
            yield child


class PathNotFound(LookupError):
    """An expectation's path does not exist in the output value (a ``fail``, not a crash)."""


def _render_path(label: str, parts: Iterable[PathPart]) -> str:
    out = label
    for p in parts:
        out += f".{p}"
    return out


def extract(
    value: Any,
    path: Iterable[PathPart],
    label: str = "value",
    load_table: Callable[[Any], Any] | None = None,
) -> Any:
    """Follow `path` (dict keys, list indices) into a JSON value.

    A DataFrame (or, with `load_table`, an ``artifact:`` reference to one) is entered
    as rows by an index and as a column's values by a name. A path that does not
    exist raises PathNotFound with a message naming where it stopped, which
    :func:`kit.comparators.evaluate` reports as a failed comparison.
    """
    parts = tuple(path)
    current = value
    for i, part in enumerate(parts):
        here = _render_path(label, parts[:i])
        if load_table is not None and isinstance(current, str) and current.startswith("artifact:"):
            current = load_table(current)
        if is_dataframe(current):
            if isinstance(part, int):
                if part >= len(current):
                    raise PathNotFound(f"{here} has {len(current)} rows; there is no row {part}")
                current = {str(k): table_cell(v) for k, v in current.iloc[part].items()}
                continue
            if str(part) not in map(str, current.columns):
                cols = ", ".join(map(str, current.columns))
                raise PathNotFound(f"{here} has no column {part!r} (columns: {cols})")
            col = next(c for c in current.columns if str(c) == str(part))
            current = [table_cell(v) for v in current[col].tolist()]
            continue
        if isinstance(current, Mapping):
            if part in current:
                current = current[part]
            elif isinstance(part, int) and str(part) in current:
                current = current[str(part)]
            else:
                keys = ", ".join(repr(k) for k in list(current)[:20]) or "none"
                raise PathNotFound(f"{here} has no key {str(part)!r} (keys: {keys})")
        elif isinstance(current, (list, tuple)):
            if not isinstance(part, int):
                raise PathNotFound(f"{here} is a list of {len(current)} items; {part!r} is not an index")
            if part >= len(current):
                raise PathNotFound(f"{here} has {len(current)} items; there is no index {part}")
            current = current[part]
        else:
            kind = "null" if current is None else type(current).__name__
            raise PathNotFound(f"{here} is {kind} {brief(current, 80)}, it has no {str(part)!r}")
    return current
