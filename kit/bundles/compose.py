"""Composition: components and steps taken from the workflow store by version range (DESIGN section 12).

A manifest may take a component from the store (``components: {prompts: {store:
prompt-pack, version: "~=5.7"}}``): any published bundle, whose files the steps find
through `kit.component("prompts")`. A step may be a published workflow (``workflow:
refunds@~=1.2``), its inputs and outputs wired like a notebook's: it runs as its own
steps, nested under it (``STEP/INNER`` in the ledger, their spans under its span), and
its outputs are the inner steps' outputs of the same names.

`resolve` turns every range into an exact version and bundle id, newest match not
yanked; `kit lock` writes them into the lock (so they are part of the bundle id), every
run records them, and ``--locked`` refuses a range that would now resolve differently.
`expand` fetches the resolved bundles into `.kit/installed/`, admitted as `kit install`
admits them (a passing verification record, signed when kit.yaml trusts keys; every
file re-hashed), and returns the workflow with each workflow step's inner steps in
place. A bundle fetched from the store runs with the resolutions it was published with
(`pinned`).
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kit.bundles.admission import check_records, trusted_keys
from kit.bundles.lock import compute_lock
from kit.bundles.store import LOCK_FILE, WorkflowStore, configured_url, fetched_lock, installed_dir, open_configured
from kit.errors import InvalidInput
from kit.spec.manifest import Step, Workflow
from kit.spec.project import Project

SEPARATOR = "/"  # STEP/INNER: an inner step's id in the run (never a valid step id of a manifest)


def takes_from_store(workflow: Workflow) -> bool:
    """Whether the workflow names anything in the store: a component or a workflow step."""
    return any(c.store for c in workflow.spec.components.values()) or any(
        s.is_workflow for s in workflow.steps.values()
    )


def pinned(workflow: Workflow) -> dict[str, Any] | None:
    """The resolutions a bundle fetched from the store was published with (its checked `.lock.json`), or None
    for a workflow of the working tree. A fetched bundle runs with the parts it was verified with: its
    ranges are not resolved again."""
    if not (workflow.dir / LOCK_FILE).is_file():
        return None
    return fetched_lock(workflow.dir, workflow.dir.name).get("resolved") or {}


def lock_now(
    project: Project, workflow: Workflow, resolved: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any], WorkflowStore | None]:
    """The workflow's lock as a run computes it now, with what its ranges resolve to and the store they
    resolve in (None when it takes nothing from the store, or is a fetched bundle and no store is named).
    `resolved`: a recorded resolution to use instead (a resumed run). Runs, `kit verify`, `kit publish` and
    `--locked` all ask here, so they agree on the bundle id."""
    if not takes_from_store(workflow):
        return compute_lock(workflow), {}, None
    if resolved is None:
        resolved = pinned(workflow)
    if resolved is not None and not configured_url(project):
        return compute_lock(workflow, resolved), resolved, None  # its parts are installed beside it
    store = open_configured(project, None, f"{workflow.path}: the workflow takes parts from the workflow store: ")
    if resolved is None:
        resolved = resolve(workflow, store)
    return compute_lock(workflow, resolved), resolved, store


def resolve(workflow: Workflow, store: WorkflowStore) -> dict[str, dict[str, Any]]:
    """Every range of the workflow, resolved: {"components": {NAME: {...}}, "steps": {STEP: {...}}}, each
    with the name, the range, the version chosen and its bundle id."""
    resolved: dict[str, dict[str, Any]] = {"components": {}, "steps": {}}
    for name, component in sorted(workflow.spec.components.items()):
        if component.store:
            version, bundle_id = store.resolve(component.store, component.version)
            resolved["components"][name] = {
                "store": component.store,
                "range": component.version,
                "version": version,
                "bundle_id": bundle_id,
            }
    for sid, step in sorted(workflow.steps.items()):
        if step.is_workflow:
            name, _, spec = step.spec.workflow.partition("@")
            version, bundle_id = store.resolve(name.strip(), spec.strip())
            resolved["steps"][sid] = {
                "workflow": name.strip(),
                "range": spec.strip(),
                "version": version,
                "bundle_id": bundle_id,
            }
    return {k: v for k, v in resolved.items() if v}


@dataclass
class Expanded:
    """A workflow with its store parts in place: the steps to run, where each component's files are, and the
    lock and workflow of every nested bundle (by folder), for cache keys and step environments."""

    workflow: Workflow
    components: dict[str, str] = field(default_factory=dict)  # component -> folder, for kit.component()
    nested: dict[Path, tuple[Workflow, dict[str, Any]]] = field(default_factory=dict)  # folder -> (workflow, lock)


def expand(workflow: Workflow, resolved: dict[str, Any], project: Project, store: WorkflowStore | None) -> Expanded:
    """The workflow to run: store components fetched, each workflow step replaced by its inner steps
    (``STEP/INNER``) followed by the step itself, which then only gathers their outputs."""
    out = Expanded(workflow)
    for name, component in workflow.spec.components.items():
        if component.path is not None:
            out.components[name] = str((workflow.dir / component.path).resolve())
    for name, part in (resolved.get("components") or {}).items():
        out.components[name] = str(_fetch(project, store, part["bundle_id"]).parent)
    steps_resolved = resolved.get("steps") or {}
    if not steps_resolved:
        return out
    steps: dict[str, Step] = {}
    for sid, step in workflow.steps.items():
        if not step.is_workflow:
            steps[sid] = step
            continue
        part = steps_resolved.get(sid)
        if part is None:
            raise InvalidInput(f"{workflow.path}: step {sid}: {step.spec.workflow} was not resolved (run `kit lock`)")
        manifest = _fetch(project, store, part["bundle_id"])
        inner = project.load_workflow(manifest)
        lock = store.lock_of(part["bundle_id"]) if store is not None else _installed_lock(manifest)
        out.nested[inner.dir] = (inner, lock)
        what = f"{workflow.path}: step {sid}: {part['workflow']} {part['version']}"
        _check_contract(step, inner, what)
        for iid in inner.order:
            inner_step = inner.steps[iid]
            if inner_step.condition is not None:
                raise InvalidInput(
                    f"{what}: its step {iid} has a when:, which kit does not route inside a workflow step yet"
                )
            nested_id = f"{sid}{SEPARATOR}{iid}"
            wires = {}
            for name, (origin, value) in inner_step.wires.items():
                if origin == "params":
                    if value in step.wires:
                        wires[name] = step.wires[value]
                    else:
                        wires[name] = ("", inner.spec.params[value].default)
                elif origin == "":
                    wires[name] = (origin, value)
                else:
                    wires[name] = (f"{sid}{SEPARATOR}{origin}", value)
            steps[nested_id] = replace(
                inner_step,
                id=nested_id,
                depends_on={f"{sid}{SEPARATOR}{d}" for d in inner_step.depends_on} | set(step.depends_on),
                wires=wires,
                within=sid,
            )
        steps[sid] = replace(step, depends_on=set(step.depends_on) | {f"{sid}{SEPARATOR}{i}" for i in inner.order})
    order = list(graphlib.TopologicalSorter({s.id: s.depends_on for s in steps.values()}).static_order())
    out.workflow = replace(workflow, steps=steps, order=order)
    return out


def gathered_outputs(workflow: Workflow, sid: str) -> dict[str, str]:
    """A workflow step's outputs: output name -> the inner step (``STEP/INNER``) that makes it."""
    step = workflow.steps[sid]
    inner = {s.id: s for s in workflow.steps.values() if s.within == sid}
    found = {}
    for name in step.spec.outputs:
        makers = [i for i, s in inner.items() if name in s.spec.outputs]
        found[name] = makers[0]
    return found


def _check_contract(step: Step, inner: Workflow, what: str) -> None:
    """A workflow step's inputs name the inner workflow's parameters, every required one is given, and each
    declared output is made by exactly one inner step."""
    problems = []
    unknown = sorted(set(step.spec.inputs) - set(inner.spec.params))
    if unknown:
        problems.append(
            f"has no parameter {', '.join(map(repr, unknown))} (its parameters: "
            f"{', '.join(inner.spec.params) or 'none'})"
        )
    missing = sorted(n for n, p in inner.spec.params.items() if p.required and n not in step.spec.inputs)
    if missing:
        problems.append(f"needs the parameter(s) {', '.join(missing)}: wire them in the step's inputs")
    for name in step.spec.outputs:
        makers = [i for i, s in inner.steps.items() if name in s.spec.outputs]
        if len(makers) != 1:
            why = "no step makes it" if not makers else f"several steps make it ({', '.join(sorted(makers))})"
            problems.append(f"output {name!r}: {why}")
    if problems:
        raise InvalidInput("\n".join(f"{what} {p}" for p in problems))


def _fetch(project: Project, store: WorkflowStore | None, bundle_id: str) -> Path:
    """The bundle's files under .kit/installed/<id>/ (fetched and checked once; re-checked after); its manifest."""
    target = installed_dir(project, bundle_id)
    if store is None:
        if not target.is_dir():
            raise InvalidInput(f"bundle {bundle_id[:12]} is not installed and no store is configured")
        return target / fetched_lock(target, bundle_id).get("manifest", "workflow.yaml")
    if not target.exists():  # admitted once, as `kit install` admits: a passing record, signed when asked
        check_records(store, store.lock_of(bundle_id), trusted_keys(project))
    return store.fetch(bundle_id, target)


def _installed_lock(manifest: Path) -> dict[str, Any]:
    """The lock of an installed bundle, its files re-hashed against it (bytes are checked before use)."""
    return fetched_lock(manifest.parent, manifest.parent.name)
