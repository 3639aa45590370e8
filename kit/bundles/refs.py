"""Bundle references: naming a past version of a workflow so it can run again.

A reference is a bundle id or a unique prefix of one, `NAME@VERSION` (the newest
recorded bundle of that version), a run id (the bundle that run used), or `git:REV`
(the workflow as it stood at that revision, read with `git archive`, never by
checking out the working tree). Each resolves to a materialized copy of the bundle
under `.kit/bundles/`, loaded as a `Workflow`.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from kit.bundles.lock import materialize
from kit.errors import InvalidInput, KitError
from kit.ledger.ledger import Ledger
from kit.ledger.objects import ObjectStore
from kit.spec.manifest import Workflow
from kit.spec.project import Project


def resolve_bundle_id(ledger: Ledger, ref: str, workflow: str | None = None) -> str:
    """The bundle id a non-git reference names."""
    if "@" in ref:
        name, version = ref.split("@", 1)
        found = ledger.bundle_of_version(name, version)
        if found is None:
            raise InvalidInput(f"--baseline {ref}: no recorded bundle of {name} version {version}")
        return found
    try:  # a run: its id, a unique prefix, or `last`
        run = ledger.run(ledger.resolve_run(ref)) if ref == "last" or len(ref) >= 8 else None
    except KitError:
        run = None
    if run is not None:
        return run["bundle_id"]
    bundles = ledger.bundles_with_prefix(ref)
    if workflow:
        bundles = [b for b in bundles if b["workflow"] == workflow] or bundles
    if len(bundles) == 1:
        return bundles[0]["bundle_id"]
    if len(bundles) > 1:
        raise InvalidInput(f"--baseline {ref}: ambiguous, it starts {len(bundles)} bundle ids; give more of it")
    raise InvalidInput(
        f"--baseline {ref}: no bundle id, run id or NAME@VERSION matches (a run by its id, a prefix or `last`)"
    )


def _git(root: Path, *args: str, binary: bool = False):
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=60)
    except OSError as exc:
        raise InvalidInput(f"git is not available: {exc}") from None
    if out.returncode != 0:
        raise InvalidInput(f"git {' '.join(args)}: {out.stderr.decode(errors='replace').strip()}")
    return out.stdout if binary else out.stdout.decode().strip()


def git_workflow(project: Project, current: Workflow, rev: str) -> Workflow:
    """The workflow as it stood at git revision `rev`, extracted under .kit/bundles/."""
    top = Path(_git(project.root, "rev-parse", "--show-toplevel"))
    sha = _git(top, "rev-parse", "--verify", f"{rev}^{{commit}}")
    relative = Path(os.path.relpath(current.dir, top)).as_posix()
    target = project.home / "bundles" / f"git-{sha}"
    done = target / ".complete"
    if not done.exists():
        paths = [relative]
        archive = _git(top, "archive", "--format=tar", sha, "--", *paths, binary=True)
        try:
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(target, filter="data")
        except tarfile.FilterError as exc:  # a symlink out of the folder, an absolute path: never extracted
            shutil.rmtree(target, ignore_errors=True)
            raise InvalidInput(
                f"--baseline git:{rev}: the workflow at {sha[:12]} holds what cannot be extracted safely ({exc}); "
                "a bundle holds only its folder's own files"
            ) from None
        done.write_text(sha)
    manifest = target / relative / current.path.name
    if not manifest.is_file():
        raise InvalidInput(f"--baseline git:{rev}: {relative}/{current.path.name} did not exist at {sha[:12]}")
    return project.load_workflow(manifest)


def baseline_workflow(project: Project, ledger: Ledger, store: ObjectStore, current: Workflow, ref: str) -> Workflow:
    """The workflow a baseline reference names, materialized and loaded."""
    if ref.startswith("git:"):
        return git_workflow(project, current, ref[4:])
    bundle_id = resolve_bundle_id(ledger, ref, current.name)
    lock = ledger.bundle_lock(bundle_id)
    if lock.get("workflow") != current.name:
        raise InvalidInput(
            f"--baseline {ref}: bundle {bundle_id[:12]} is of workflow {lock.get('workflow')!r}, not {current.name!r}"
        )
    manifest = materialize(lock, store, project.home / "bundles" / bundle_id)
    return project.load_workflow(manifest)
