"""Shared fixtures: tiny projects with real notebooks, and ways to call `kit`.

Everything here runs for real: notebooks execute in Jupyter kernels through
papermill and the ledger is a DuckDB file in the test's temporary project.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "notebooks" / "casework"
SCENARIOS = REPO / "scenarios" / "casework"
IGNORE = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "workflow.lock")

# `python -m kit.cli` subprocesses import the kit under test (a git worktree's), not the one the
# virtualenv has installed in editable mode from another checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


def copy_example(root: Path, scenarios: bool = False) -> None:
    """The casework example (and its project settings, and optionally its scenarios) under `root`."""
    shutil.copytree(EXAMPLE, root / "notebooks" / "casework", ignore=IGNORE)
    shutil.copy(REPO / "kit.yaml", root / "kit.yaml")
    if scenarios:
        shutil.copytree(SCENARIOS, root / "scenarios" / "casework", ignore=IGNORE)


def write_notebook(path: Path, parameters: str | None, *cells: str) -> Path:
    """A notebook whose first code cell (tagged `parameters`) holds `parameters`."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(new_markdown_cell(f"# {path.stem}"))
    if parameters is not None:
        cell = new_code_cell(textwrap.dedent(parameters).strip())
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells.extend(new_code_cell(textwrap.dedent(c).strip()) for c in cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


class Project:
    """A throwaway kit project in a temporary folder."""

    def __init__(self, root: Path):
        self.root = root
        (root / "kit.yaml").write_text("{}\n")

    def notebook(self, name: str, parameters: str | None, *cells: str) -> Path:
        return write_notebook(self.root / "wf" / name, parameters, *cells)

    def manifest(self, text: str, folder: str = "wf") -> Path:
        path = self.root / folder / "workflow.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def kit(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        """`kit ARGS` as a real process in the project's folder."""
        full_env = {**os.environ, **(env or {})}
        full_env.pop("KIT_HOME", None)
        return subprocess.run(
            [sys.executable, "-m", "kit.cli", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=600,
        )

    def start(self, *args: str, **popen: Any) -> subprocess.Popen:
        """`kit ARGS` started as a real process in the project's folder, its output piped, not waited for
        (to signal or kill it mid-run); `popen` adds to or overrides subprocess.Popen's arguments."""
        return subprocess.Popen(
            [sys.executable, "-m", "kit.cli", *args],
            **{"cwd": self.root, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen},
        )

    def cli(self, *args: str):
        """`kit ARGS` in this process (fast; for checks that start no kernel)."""
        from kit.cli import cli

        return CliRunner().invoke(cli, ["--project", str(self.root), *args], catch_exceptions=False)

    def sql(self, query: str) -> list[dict]:
        result = self.kit("sql", query, "--format", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def ledger(self):
        from kit.ledger.database import Database

        return Database(self.root / ".kit" / "ledger.duckdb")

    def run_count(self) -> int:
        ledger_path = self.root / ".kit" / "ledger.duckdb"
        if not ledger_path.exists():
            return 0
        return self.ledger().rows("SELECT count(*) AS n FROM runs")[0]["n"]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


@pytest.fixture
def chain(project: Project) -> Project:
    """A three-step workflow: `a` feeds `b` and `c` (a fan-out), with a table and JSON outputs."""
    project.notebook(
        "a.ipynb",
        "x: int = 1\nlabel: str = 'none'",
        """
        import kit, pandas as pd
        kit.output("n", x + 1)
        kit.output("label", label)
        kit.output("rows", pd.DataFrame({"v": [x, x + 1]}))
        """,
    )
    project.notebook(
        "b.ipynb",
        "n: int = 0\nrows: str = ''",
        """
        import kit
        df = kit.load(rows)
        with kit.span("work", kind="tool", size=len(df)) as s:
            s["total"] = int(df.v.sum())
        kit.output("m", {"n": n, "total": s["total"]})
        """,
    )
    project.notebook("c.ipynb", "n: int = 0", "import kit\nkit.output('s', str(n))")
    project.manifest(
        """
        workflow: demo
        version: 1.0.0
        params:
          x: {type: integer, default: 3}
          label: {type: string, default: plain}
        steps:
          a:
            notebook: a.ipynb
            inputs: {x: params.x, label: params.label}
            outputs: {n: integer, label: string, rows: table}
          b:
            notebook: b.ipynb
            inputs: {n: a.n, rows: a.rows}
            outputs: {m: {type: object, required: [n, total]}}
          c:
            notebook: c.ipynb
            inputs: {n: a.n}
            outputs: {s: string}
        """
    )
    return project


def key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """An ed25519 key pair written as PEM files: FOLDER/NAME.key and FOLDER/NAME.pub."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public
