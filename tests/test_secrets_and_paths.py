"""Secrets stay out of everything kit keeps and prints, verification included; paths stay inside
the project (DESIGN section 11)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

SECRET = "S3cr3t-token-value-9d7f"
PASSWORD = "hunter2-correct-horse"


@pytest.fixture
def secretive(project):
    project.notebook(
        "leak.ipynb",
        "db_password: str = ''",
        """
        import kit, pandas as pd
        token = kit.secret("API_TOKEN")
        print("calling the CRM with", token, db_password)
        kit.output("echo", {"token": token, "note": f"used {token}"})
        kit.output("frame", pd.DataFrame({token: [1], "who": [db_password]}))
        kit.output("plain", "nothing secret here")
        kit.output("keyed", {token: "a secret as a key"})
        """,
    )
    project.manifest(
        """
        workflow: leaky
        version: 1
        params: {db_password: {type: string}}
        steps:
          leak:
            notebook: leak.ipynb
            inputs: {db_password: params.db_password}
            outputs: {echo: object, frame: table, plain: string, keyed: object}
        policy:
          redact: ["*password*"]
        """
    )
    return project


def _hits(root: Path, *texts: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path} holds {t[:6]}…" for t in texts if t.encode() in data]
    return found


def test_a_secret_is_nowhere_after_run_test_capture_and_replay(secretive):
    env = {"API_TOKEN": SECRET}
    printed = []
    run = secretive.kit("run", "wf", "-p", f"db_password={PASSWORD}", env=env)
    printed.append(run.stdout + run.stderr)
    assert run.returncode == 0, run.stderr
    run_id = run.stdout.split()[1]

    scenario = secretive.root / "scenarios" / "leaky" / "caught.yaml"
    captured = secretive.kit("capture", run_id, "-o", str(scenario), env=env)
    printed.append(captured.stdout + captured.stderr)
    assert captured.returncode == 0, captured.stderr
    doc = yaml.safe_load(scenario.read_text())
    assert doc["params"] == {"db_password": {"env": "DB_PASSWORD"}}  # a redacted parameter comes back from the env
    assert "[REDACTED]" not in scenario.read_text()
    assert "leak.echo" not in doc["expect"] and "leak.plain" in doc["expect"]
    assert "holds a redacted value" in captured.stderr

    # a failing expectation shows expected and actual: the secret must not be among them
    doc["expect"]["leak.echo.note"] = {"equals": "something else"}
    doc["expect"]["leak.frame"] = {"table": [{"x": 1}]}
    scenario.write_text(yaml.safe_dump(doc))
    tested = secretive.kit("test", str(scenario), env={**env, "DB_PASSWORD": PASSWORD})
    printed.append(tested.stdout + tested.stderr)
    assert tested.returncode == 1, tested.stdout
    assert "leak.echo.note" in tested.stdout and "[REDACTED]" in tested.stdout

    replayed = secretive.kit("replay", str(scenario), "--baseline", run_id, env={**env, "DB_PASSWORD": PASSWORD})
    printed.append(replayed.stdout + replayed.stderr)
    assert replayed.returncode in (0, 1), replayed.stderr

    shown = secretive.kit("show", run_id)
    printed.append(shown.stdout + shown.stderr)
    rows = secretive.sql("select * from comparisons")
    printed.append(repr(rows))

    assert _hits(secretive.root / ".kit", SECRET, PASSWORD) == []
    assert _hits(secretive.root / "scenarios", SECRET, PASSWORD) == []
    for text in printed:
        assert SECRET not in text and PASSWORD not in text


def test_a_captured_scenario_with_an_env_parameter_runs_and_says_what_is_missing(secretive):
    env = {"API_TOKEN": SECRET}
    run = secretive.kit("run", "wf", "-p", f"db_password={PASSWORD}", env=env)
    scenario = secretive.root / "scenarios" / "leaky" / "again.yaml"
    assert secretive.kit("capture", run.stdout.split()[1], "-o", str(scenario), env=env).returncode == 0
    assert "DB_PASSWORD" not in os.environ
    without = secretive.kit("test", str(scenario), env=env)
    assert without.returncode == 2 and "DB_PASSWORD is not set" in without.stdout
    passed = secretive.kit("test", str(scenario), env={**env, "DB_PASSWORD": PASSWORD})
    assert passed.returncode == 0, passed.stdout


def test_capture_does_not_overwrite_a_scenario_unless_forced(secretive):
    run = secretive.kit("run", "wf", "-p", "db_password=x-y-z-w", env={"API_TOKEN": SECRET})
    target = secretive.root / "scenarios" / "leaky" / "keep.yaml"
    target.parent.mkdir(parents=True)
    target.write_text("precious\n")
    refused = secretive.kit("capture", run.stdout.split()[1], "-o", str(target))
    assert refused.returncode == 2 and "--force" in refused.stderr and target.read_text() == "precious\n"
    forced = secretive.kit("capture", run.stdout.split()[1], "-o", str(target), "--force")
    assert forced.returncode == 0 and "scenario:" in target.read_text()


# --------------------------------------------------------------------------- confinement


@pytest.fixture
def one_step(project):
    project.notebook("a.ipynb", "x: int = 1", "import kit\nkit.output('y', x)")
    project.manifest(
        """
        workflow: one
        version: 1
        steps:
          a: {notebook: a.ipynb, outputs: {y: integer}}
        """
    )
    return project


def _scenario(project, name: str, text: str) -> Path:
    path = project.root / "scenarios" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("recordings", ["../../../../outside/x.jsonl", "/etc/passwd"])
def test_scenario_recordings_outside_the_project_are_refused(one_step, tmp_path, recordings):
    path = _scenario(
        one_step,
        "r.yaml",
        f"scenario: r\nworkflow: one\nrecordings: {recordings}\nllm_mode: record\nexpect:\n  a.y: {{equals: 1}}\n",
    )
    result = one_step.kit("test", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert "recordings:" in result.stdout and "is outside" in result.stdout
    assert not (tmp_path.parent / "outside").exists()


def test_scenario_table_files_outside_the_project_or_linked_out_are_refused(one_step, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "rows.csv"
    outside.write_text("y\n1\n")
    link = one_step.root / "scenarios" / "linked.csv"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    for source in (str(outside), "linked.csv"):
        path = _scenario(one_step, "t.yaml", f"scenario: t\nworkflow: one\nexpect:\n  a.y: {{table: {source}}}\n")
        result = one_step.kit("test", str(path))
        assert result.returncode == 2, result.stdout
        assert "t.yaml:4" in result.stdout and "is outside" in result.stdout


@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_a_notebook_outside_the_workflow_folder_is_refused(one_step, tmp_path_factory, where):
    outside = tmp_path_factory.mktemp("nb") / "b.ipynb"
    outside.write_text((one_step.root / "wf" / "a.ipynb").read_text())
    name = {"absolute": str(outside), "parent": os.path.relpath(outside, one_step.root / "wf"), "symlink": "b.ipynb"}[
        where
    ]
    if where == "symlink":
        (one_step.root / "wf" / "b.ipynb").symlink_to(outside)
    text = (one_step.root / "wf" / "workflow.yaml").read_text()
    (one_step.root / "wf" / "workflow.yaml").write_text(
        text + f"  b: {{notebook: '{name}', outputs: {{y: integer}}}}\n"
    )
    result = one_step.kit("run", "wf")
    assert result.returncode == 2, result.stderr
    assert "steps.b.notebook" in result.stderr and "is outside" in result.stderr


def test_a_symlink_out_of_the_workflow_folder_is_not_bundled(one_step):
    (one_step.root / "wf" / "passwd").symlink_to("/etc/passwd")
    for command in (("lock", "wf"), ("run", "wf")):
        result = one_step.kit(*command)
        assert result.returncode == 2 and "leads outside it" in result.stderr and "passwd" in result.stderr
    assert not (one_step.root / ".kit" / "objects").exists() or not any(
        b"root:" in p.read_bytes() for p in (one_step.root / ".kit" / "objects").rglob("*") if p.is_file()
    )


def test_a_symlinked_folder_or_a_symlink_loop_in_a_workflow_is_refused_when_bundled(one_step, tmp_path_factory):
    """A bundle would silently miss a linked folder's files (a step reading through the link then fails
    where it is installed), and a looping link cannot be followed: `kit lock` refuses both, naming them."""
    outside = tmp_path_factory.mktemp("elsewhere")
    (outside / "data.csv").write_text("y\n1\n")
    linked = one_step.root / "wf" / "ext"
    linked.symlink_to(outside, target_is_directory=True)
    result = one_step.kit("lock", "wf")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "ext" in result.stderr and "symlinked folder" in result.stderr
    linked.unlink()
    loop = one_step.root / "wf" / "loop"
    loop.symlink_to(loop)
    result = one_step.kit("lock", "wf")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "loop" in result.stderr and "cannot be followed" in result.stderr
    loop.unlink()
    assert one_step.kit("lock", "wf").returncode == 0
