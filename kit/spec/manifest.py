"""The manifest, `workflow.yaml`: steps, wiring, components, environments, policy.

`load_workflow` parses it (pydantic), checks it against every step notebook and
builds the graph (`graphlib`). Everything wrong is refused here, before anything
runs, with the file, the line and what is wrong (DESIGN section 5).
"""

from __future__ import annotations

import graphlib
import keyword
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from kit.base.paths import OutsideRoot, inside
from kit.base.values import describe, json_problem
from kit.base.yamlio import Located, load_yaml, validation_error
from kit.errors import InvalidInput
from kit.spec import contracts
from kit.spec.conditions import Condition, ConditionError, Scope, compile_condition
from kit.spec.notebooks import NotebookInfo, inspect_notebook
from kit.spec.tools import check_tools, step_tools


def _as_text(value: Any) -> Any:
    """YAML reads `version: 2` as an int and `2026-06-10` as a date; a version is text."""
    return value if value is None or isinstance(value, str) else str(value)


Text = Annotated[str, BeforeValidator(_as_text)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(Strict):
    type: str | list[str] | None = None
    default: Any = None
    description: str = ""
    enum: list[Any] | None = None

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set


class Retries(Strict):
    attempts: int = Field(1, ge=1, le=100)
    backoff: float = Field(1.0, ge=0)
    retry_on: list[str] = []


class Approval(Strict):
    approvers: list[str] = Field(min_length=1)
    show: list[str] = []
    timeout: Text | None = None

    @field_validator("timeout")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            from kit.spec.policy import parse_duration

            parse_duration(value)  # raises ValueError with the expected form
        return value


class StepSpec(Strict):
    notebook: str | None = None
    approval: Approval | None = None
    workflow: str | None = None  # NAME@SPEC: a published workflow from the store, run as this step
    description: str = ""
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    after: list[str] = []
    requires: list[str] = []
    retries: Retries = Retries()
    timeout: float | None = Field(None, gt=0)
    cache: bool = True
    tools: list[str] = []  # the declared tools a model may call from this step (`kit.llm.agent`)
    when: str | None = None  # a CEL condition over params and upstream outputs (kit.spec.conditions)


class Component(Strict):
    """A part the workflow depends on besides notebooks: a `path` in its folder with a `version`, or a
    published bundle taken from the store by a version range (`store: NAME`, `version: "~=5.7"`)."""

    path: str | None = None
    store: str | None = None
    version: Text
    description: str = ""


class Environment(Strict):
    config: str | None = None
    description: str = ""
    approval: Approval | None = None  # `kit promote --to ENV` waits for this approval (DESIGN section 12)


class ToolSpec(Strict):
    """A tool a model may call from an agent step: `FILE.py:FUNCTION` in the workflow's folder."""

    function: str
    requires: list[str] = []
    effects: bool = False  # true: never executed again in replay (its recorded result is served)
    timeout: float | None = Field(None, gt=0)
    description: str = ""


class Policy(Strict):
    redact: list[str] = []
    retention: dict[str, Text] = {}


class WorkflowSpec(Strict):
    workflow: str
    version: Text
    description: str = ""
    tags: list[str] = []  # how the workflow store finds it (`kit store search`)
    params: dict[str, ParamSpec] = {}
    steps: dict[str, StepSpec]
    components: dict[str, Component] = {}
    environments: dict[str, Environment] = {}
    policy: Policy = Policy()
    evals: dict[str, Any] = {}
    tools: dict[str, ToolSpec] = {}


@dataclass
class Step:
    id: str
    spec: StepSpec
    notebook: Path | None  # None for an approval gate or a workflow step
    info: NotebookInfo | None
    depends_on: set[str] = field(default_factory=set)
    #: input name -> (origin, name): ("params", X), (STEP, OUTPUT), or ("", value) for a fixed value
    wires: dict[str, tuple[str, Any]] = field(default_factory=dict)
    home: Path | None = None  # the folder of the workflow the step comes from (a nested one's, once expanded)
    within: str | None = None  # the workflow step this step runs inside, once expanded
    tools: dict[str, Any] = field(default_factory=dict)  # name -> kit.spec.tools.Tool, the tools it lists
    optional: set[str] = field(default_factory=set)  # inputs that arrive as None when their step was skipped
    condition: Condition | None = None  # its `when:`, checked

    @property
    def is_approval(self) -> bool:
        return self.spec.approval is not None

    @property
    def is_workflow(self) -> bool:
        """A step that is a published workflow (`workflow: NAME@SPEC`), run as its own steps."""
        return self.spec.workflow is not None


@dataclass
class Workflow:
    path: Path
    spec: WorkflowSpec
    steps: dict[str, Step]
    order: list[str]  # a dependency order of step ids
    warnings: list[str]
    doc: Located | None = None  # the manifest as parsed, for errors that name a line

    def where(self, loc: tuple) -> str:
        """`file:line` of a field of the manifest."""
        return self.doc.where(loc) if self.doc is not None else str(self.path)

    def downstream(self, step_id: str) -> list[str]:
        """Every step that depends on `step_id`, directly or not, in the graph's order."""
        below: set[str] = {step_id}
        for sid in self.order:
            if self.steps[sid].depends_on & below:
                below.add(sid)
        return [sid for sid in self.order if sid in below and sid != step_id]

    @property
    def name(self) -> str:
        return self.spec.workflow

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def dir(self) -> Path:
        return self.path.parent

    def resolve_params(self, given: dict[str, Any]) -> dict[str, Any]:
        """The run's parameters: `given` checked against `params`, defaults filled in."""
        problems = []
        declared = self.spec.params
        for name, value in given.items():
            if name not in declared:
                known = ", ".join(declared) or "none"
                problems.append(f"unknown parameter {name!r} (the workflow's parameters: {known})")
                continue
            problem = json_problem(value, f"parameter {name!r}")
            if problem:
                problems.append(problem)
                continue
            spec = declared[name]
            if spec.type is not None:
                allowed = [spec.type] if isinstance(spec.type, str) else spec.type
                if not any(contracts.is_json_type(value, t) for t in allowed if t in contracts.JSON_TYPES):
                    problems.append(f"parameter {name!r} must be {spec.type}, got {describe(value)}: {value!r}")
                    continue
            if spec.enum is not None and value not in spec.enum:
                problems.append(f"parameter {name!r} must be one of {spec.enum}, got {value!r}")
        resolved = {}
        for name, spec in declared.items():
            if name in given:
                resolved[name] = given[name]
            elif spec.required:
                problems.append(f"parameter {name!r} is required (give it with -p {name}=VALUE)")
            else:
                resolved[name] = spec.default
        if problems:
            raise InvalidInput("\n".join(f"{self.path}: {p}" for p in problems))
        return resolved


def parse_wire(source: Any) -> tuple[str, str] | None:
    """`params.X` or `STEP.OUTPUT` (Python identifiers, unicode included) as a pair, or None."""
    if not isinstance(source, str):
        return None
    parts = source.strip().split(".")
    if len(parts) != 2 or not all(p.isidentifier() for p in parts):
        return None
    return parts[0], parts[1]


INPUT_FORM = "an input is params.NAME, STEP.OUTPUT or {from: STEP.OUTPUT, optional: true}"


def _input_source(source: Any, problem, iloc: tuple) -> tuple[Any, bool] | None:
    """An input as written: `STEP.OUTPUT`, or `{from: STEP.OUTPUT, optional: true}`; (source, optional),
    or None after saying what is wrong."""
    if not isinstance(source, dict):
        return source, False
    ok = True
    for key in source:
        if key not in ("from", "optional"):
            problem(iloc + (key,), f"unknown key ({INPUT_FORM})")
            ok = False
    if "from" not in source:
        problem(iloc, f"`from` is missing ({INPUT_FORM})")
        ok = False
    optional = source.get("optional", False)
    if not isinstance(optional, bool):
        problem(iloc + ("optional",), f"expected true or false, found {describe(optional)}: {optional!r}")
        ok = False
    return (source.get("from"), optional) if ok else None


def _identifier_problem(name: Any, what: str) -> str | None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        return f"{what} {name!r} is not a valid identifier"
    return None


def _range_problem(text: str) -> str | None:
    """Why `text` is not a PEP 440 version range (`~=5.7`, `>=1.2,<2`, `==1.3.0`), or None."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        return f"{text!r} is not a version range (PEP 440: ~=5.7, >=1.2,<2, ==1.3.0)"
    return None


def _workflow_ref_problem(text: str) -> str | None:
    """Why `text` is not NAME@SPEC, or None."""
    name, _, spec = text.partition("@")
    if not name.strip() or not spec.strip():
        return f"expected NAME@SPEC (e.g. refunds@~=1.2), found {text!r}"
    return _range_problem(spec.strip())


def load_workflow(path: str | Path) -> Workflow:
    """Parse and check a manifest and its notebooks; raise InvalidInput listing every problem."""
    path = Path(path).resolve()
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise doc.error((), "expected a mapping with workflow, version and steps")
    try:
        spec = WorkflowSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise validation_error(doc, exc) from None
    return _check(path, doc, spec)


def _check(path: Path, doc: Located, spec: WorkflowSpec) -> Workflow:
    problems: list[str] = []
    warnings: list[str] = []

    def problem(loc: tuple, message: str) -> None:
        field_name = ".".join(str(p) for p in loc)
        problems.append(f"{doc.where(loc)}: {field_name}: {message}")

    for name in spec.params:
        if p := _identifier_problem(name, "parameter name"):
            problem(("params", name), p)
    if not spec.steps:
        problem(("steps",), "a workflow needs at least one step")

    for name, component in spec.components.items():
        if (component.path is None) == (component.store is None):
            problem(("components", name), "a component has either a `path` or a `store` (and a version range)")
            continue
        if component.store is not None:
            if p := _range_problem(component.version):
                problem(("components", name, "version"), p)
            continue
        try:
            inside(path.parent, component.path)
        except OutsideRoot as exc:
            problem(("components", name, "path"), f"{exc}: a component lives in the workflow's folder")
    for name, environment in spec.environments.items():
        if environment.config is not None:
            try:
                inside(path.parent, environment.config)
            except OutsideRoot as exc:
                problem(("environments", name, "config"), f"{exc}: a config lives in the workflow's folder")

    declared_tools = check_tools(path.parent, spec, problem)
    steps: dict[str, Step] = {}
    for step_id, step_spec in spec.steps.items():
        loc = ("steps", step_id)
        if p := _identifier_problem(step_id, "step id"):
            problem(loc, p)
            continue
        if step_id == "params":
            problem(loc, "a step may not be named 'params': `params.X` names the workflow's parameters")
            continue
        kinds = [k for k in ("notebook", "approval", "workflow") if getattr(step_spec, k) is not None]
        if len(kinds) != 1:
            problem(loc, "a step has exactly one of a notebook, an approval or a workflow (NAME@SPEC)")
            continue
        if step_spec.workflow is not None and (p := _workflow_ref_problem(step_spec.workflow)):
            problem(loc + ("workflow",), p)
            continue
        for out_name, out_spec in step_spec.outputs.items():
            if p := _identifier_problem(out_name, "output name"):
                problem(loc + ("outputs", out_name), p)
            elif p := contracts.spec_problem(out_spec):
                problem(loc + ("outputs", out_name), p)
        notebook_path, info = None, None
        if step_spec.notebook is not None:
            try:
                notebook_path = inside(path.parent, step_spec.notebook)
            except OutsideRoot as exc:
                problem(loc + ("notebook",), f"{exc}: a step's notebook lives in the workflow's folder")
                continue
            if not notebook_path.is_file():
                problem(loc + ("notebook",), f"no such notebook: {notebook_path}")
            else:
                try:
                    info = inspect_notebook(notebook_path)
                    warnings.extend(info.warnings)
                except InvalidInput as exc:
                    problem(loc + ("notebook",), exc.message)
        elif step_spec.approval is not None and (step_spec.inputs or step_spec.outputs):
            problem(loc, "an approval step has no inputs or outputs; use `after` and `approval.show`")
        steps[step_id] = Step(step_id, step_spec, notebook_path, info, home=path.parent)
        if step_spec.tools:
            if step_spec.notebook is None:
                problem(loc + ("tools",), "only a notebook step can let a model use tools")
            steps[step_id].tools = step_tools(step_id, step_spec.tools, declared_tools, set(spec.tools), problem)

    for step in steps.values():
        loc = ("steps", step.id)
        for input_name, source in step.spec.inputs.items():
            iloc = loc + ("inputs", input_name)
            if p := _identifier_problem(input_name, "input name"):
                problem(iloc, p)
                continue
            written = _input_source(source, problem, iloc)
            if written is None:
                continue
            source, optional = written
            wire = parse_wire(source)
            if wire is None:
                problem(iloc, f"expected params.NAME or STEP.OUTPUT, found {source!r}")
                continue
            if optional:
                oloc = iloc + ("optional",)
                if wire[0] == "params":
                    problem(oloc, "a parameter is always there: optional applies to STEP.OUTPUT inputs")
                    continue
                if step.info is None:
                    problem(oloc, "optional inputs are for notebook steps")
                    continue
                param = step.info.parameters.get(input_name)
                admits = contracts.annotation_types(param.annotation) if param is not None else None
                if admits is not None and "null" not in admits:
                    problem(
                        oloc,
                        f"{step.notebook.name} annotates {input_name}: {param.annotation}, which does not admit None "
                        f"(an optional input arrives as None when its step was skipped: annotate it "
                        f"{param.annotation} | None)",
                    )
                    continue
                step.optional.add(input_name)
            param = step.info.parameters.get(input_name) if step.info else None
            if step.info is not None and param is None:
                known = ", ".join(step.info.parameters) or "none"
                problem(
                    iloc, f"notebook {step.notebook.name} has no parameter {input_name!r} (its parameters: {known})"
                )
            origin, name = wire
            step.wires[input_name] = wire
            if origin == "params":
                if name not in spec.params:
                    problem(iloc, f"wires params.{name}, but the workflow declares no parameter {name!r}")
                elif param is not None and spec.params[name].type is not None:
                    if not contracts.accepts(param.annotation, {"type": spec.params[name].type}):
                        problem(
                            iloc,
                            f"params.{name} is {spec.params[name].type}, but {step.notebook.name} annotates {input_name}: {param.annotation}",
                        )
                continue
            if origin not in spec.steps:
                problem(iloc, f"wires {source}, but there is no step {origin!r}")
                continue
            if origin == step.id:
                problem(iloc, f"step {step.id!r} cannot take its own output")
                continue
            outputs = spec.steps[origin].outputs
            if name not in outputs:
                known = ", ".join(outputs) or "none"
                problem(iloc, f"wires {source}, but step {origin!r} declares no output {name!r} (its outputs: {known})")
                continue
            if param is not None and not contracts.accepts(param.annotation, outputs[name]):
                kind = outputs[name] if isinstance(outputs[name], str) else "a JSON Schema type"
                hint = (
                    " (a table arrives as a reference string: annotate it str)"
                    if contracts.is_table(outputs[name])
                    else ""
                )
                problem(
                    iloc,
                    f"{source} is {kind}, but {step.notebook.name} annotates {input_name}: {param.annotation}{hint}",
                )
            step.depends_on.add(origin)
        for index, other in enumerate(step.spec.after):
            if other not in spec.steps:
                problem(loc + ("after", index), f"no step {other!r}")
            elif other == step.id:
                problem(loc + ("after", index), "a step cannot come after itself")
            else:
                step.depends_on.add(other)
        if step.spec.approval is not None:
            for index, shown in enumerate(step.spec.approval.show):
                wire = parse_wire(shown)
                if wire is None or wire[0] not in spec.steps or wire[1] not in spec.steps[wire[0]].outputs:
                    problem(loc + ("approval", "show", index), f"{shown!r} names no declared STEP.OUTPUT")

    order: list[str] = []
    if not problems:
        sorter = graphlib.TopologicalSorter({s.id: s.depends_on for s in steps.values()})
        try:
            order = list(sorter.static_order())
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            problem(("steps", cycle[0]), "the steps form a cycle: " + " -> ".join(cycle))

    if not problems:
        _check_conditions(spec, steps, order, problem)
    if problems:
        raise InvalidInput("\n".join(problems))
    return Workflow(path=path, spec=spec, steps=steps, order=order, warnings=warnings, doc=doc)


def _check_conditions(spec: WorkflowSpec, steps: dict[str, Step], order: list[str], problem) -> None:
    """Each `when:` parsed and type-checked against the declared types of the parameters and of the
    outputs of the steps upstream of it (kit.spec.conditions)."""
    upstream: dict[str, set[str]] = {}
    for sid in order:  # dependencies first: each step's upstream is its dependencies' and theirs
        upstream[sid] = set().union(*(upstream[d] | {d} for d in steps[sid].depends_on))
    params = {name: _param_type(p) for name, p in spec.params.items()}
    for sid in order:
        step = steps[sid]
        if step.spec.when is None:
            continue
        loc = ("steps", sid, "when")
        if step.is_workflow:
            problem(loc, "a workflow step cannot carry when: (its inner steps run before it); put it on the steps")
            continue
        scope = Scope(
            step=sid,
            params=params,
            upstream={u: dict(steps[u].spec.outputs) for u in order if u in upstream[sid]},
            others=[o for o in order if o not in upstream[sid]],
        )
        try:
            step.condition = compile_condition(step.spec.when, scope)
        except ConditionError as exc:
            problem(loc, f"{exc} (in {step.spec.when!r})" if step.spec.when not in str(exc) else str(exc))


def _param_type(param: ParamSpec) -> dict[str, Any] | None:
    """A parameter's declared type as a JSON Schema fragment, for conditions."""
    if param.type is not None:
        return {"type": param.type}
    if param.enum is not None:
        return {"enum": param.enum}
    return None
