"""Where a project lives, its settings (`kit.yaml`) and where its state goes (DESIGN section 3).

The project root is the nearest ancestor of the working directory holding
``kit.yaml`` or ``pyproject.toml``; ``--project`` overrides. State lives in
``<root>/.kit`` unless ``KIT_HOME`` says otherwise. ``kit.yaml`` is checked like a
manifest: unknown keys, a principal holding an undefined role, a malformed name are
refused with the file and line. Workflows are loaded through the project
(`Project.load_workflow`), so an approval no principal could ever give is refused
before anything runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from kit.errors import InvalidInput

MARKERS = ("kit.yaml", "pyproject.toml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApprovalSettings(_Strict):
    self_approve: bool = False


class StoreSettings(_Strict):
    url: str
    trust: list[str] = []


class Settings(_Strict):
    """`kit.yaml`, as written."""

    default_env: str | None = None
    principals: dict[str, list[str]] = {}
    roles: dict[str, list[str]] = {}
    approvals: ApprovalSettings = ApprovalSettings()
    store: StoreSettings | None = None


def find_root(start: Path | None = None) -> Path:
    start = (start or Path.cwd()).resolve()
    for candidate in (start, *start.parents):
        if any((candidate / marker).is_file() for marker in MARKERS):
            return candidate
    return start


@dataclass
class Project:
    root: Path
    home: Path = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        if self.home is None:
            env_home = os.environ.get("KIT_HOME")
            self.home = Path(env_home).resolve() if env_home else self.root / ".kit"

    @classmethod
    def discover(cls, project_dir: str | Path | None = None) -> Project:
        if project_dir is not None:
            root = Path(project_dir)
            if not root.is_dir():
                raise InvalidInput(f"--project {project_dir}: no such directory")
            return cls(root)
        return cls(find_root())

    @property
    def ledger_path(self) -> Path:
        return self.home / "ledger.duckdb"

    @property
    def objects_dir(self) -> Path:
        return self.home / "objects"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    def ensure_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        gitignore = self.home / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("*\n")

    @cached_property
    def settings(self) -> dict[str, Any]:
        """The optional ``kit.yaml``: principals, roles, default environment, store; checked."""
        path = self.root / "kit.yaml"
        if not path.is_file():
            return {}
        from kit.base.yamlio import load_mapping, validation_error
        from kit.spec.policy import principal_problem

        data, doc = load_mapping(path)
        try:
            settings = Settings.model_validate(data)
        except ValidationError as exc:
            raise validation_error(doc, exc) from None
        problems = []
        for principal, roles in settings.principals.items():
            problem = principal_problem(principal)
            if problem:
                problems.append(f"{doc.where(('principals', principal))}: principals: {problem}")
            for index, role in enumerate(roles):
                if role not in settings.roles:
                    defined = ", ".join(settings.roles) or "none"
                    problems.append(
                        f"{doc.where(('principals', principal, index))}: principals.{principal}: role {role!r} "
                        f"is not defined under roles: (defined: {defined})"
                    )
        if problems:
            raise InvalidInput("\n".join(problems))
        return data

    @cached_property
    def access(self):
        """Who may do what here (`kit.spec.policy.AccessPolicy`), from kit.yaml."""
        from kit.spec.policy import AccessPolicy

        return AccessPolicy.from_settings(self.settings, str(self.root / "kit.yaml"))

    def load_workflow(self, path: str | Path):
        """A manifest, checked, and checked against this project: every approval must be one some
        principal of kit.yaml can give, or a run would wait for ever."""
        from kit.spec.manifest import load_workflow

        workflow = load_workflow(path)
        problems = []
        for step in workflow.steps.values():
            if not step.is_approval:
                continue
            for index, role in enumerate(step.spec.approval.approvers):
                if not self.access.holders_of(role):
                    problems.append(
                        f"{workflow.where(('steps', step.id, 'approval', 'approvers', index))}: steps.{step.id}."
                        f"approval.approvers: no principal in {self.root / 'kit.yaml'} holds the role {role!r}, "
                        "so nobody could ever approve it"
                    )
        if problems:
            raise InvalidInput("\n".join(problems))
        return workflow

    def find_workflow(self, ref: str) -> Path:
        """A `workflow.yaml`, a folder holding one, or a workflow name found under the project."""
        path = Path(ref)
        if path.is_file():
            return path.resolve()
        if path.is_dir() and (path / "workflow.yaml").is_file():
            return (path / "workflow.yaml").resolve()
        found = self.find_workflow_by_name(ref)
        if found is not None:
            return found
        if path.is_dir():
            raise InvalidInput(f"{ref}: this folder holds no workflow.yaml")
        raise InvalidInput(
            f"{ref}: no such workflow: expected a workflow.yaml, a folder holding one, "
            f"or the name of a workflow under {self.root}"
        )

    def find_workflow_by_name(self, name: str) -> Path | None:
        """The manifest under the project root whose folder or `workflow:` field is `name`."""
        preferred = self.root / "notebooks" / name / "workflow.yaml"
        if preferred.is_file():
            return preferred.resolve()
        by_field = None
        for manifest in sorted(self.root.glob("**/workflow.yaml")):
            relative = manifest.relative_to(self.root).parts
            if any(part.startswith(".") for part in relative):
                continue  # .kit/bundles, .git, ...
            if manifest.parent.name == name:
                return manifest.resolve()
            if by_field is None and declared_name(manifest) == name:
                by_field = manifest.resolve()
        return by_field


def declared_name(manifest: Path) -> str | None:
    """The `workflow:` name a manifest declares, read cheaply (a regex, not a YAML parse), or None."""
    import re

    try:
        match = re.search(r"^workflow:\s*['\"]?([^'\"\s#]+)", manifest.read_text(), re.MULTILINE)
    except OSError:
        return None
    return match.group(1) if match else None
