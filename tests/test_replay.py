"""Bundles and three-way replay: old bundle, current workflow, and what was expected."""

from __future__ import annotations

import json
import subprocess

import pytest

SCENARIO = """
scenario: demo/threshold
workflow: wf
description: a value above the limit must be flagged
params: {x: 5}
expect:
  rule.verdict: {equals: flagged}
  rule.limit: {equals: 4}
  echo.s: {equals: "6"}
"""


@pytest.fixture
def ruled(project):
    project.notebook(
        "rule.ipynb",
        "x: int = 0",
        "import kit\nlimit = 4\nkit.output('limit', limit)\nkit.output('verdict', 'flagged' if x > limit else 'ok')",
    )
    project.notebook("echo.ipynb", "x: int = 0", "import kit\nkit.output('s', str(x + 1))")
    project.manifest(
        """
        workflow: wf
        version: 1.0.0
        params: {x: {type: integer, default: 1}}
        steps:
          rule: {notebook: rule.ipynb, inputs: {x: params.x}, outputs: {verdict: string, limit: integer}}
          echo: {notebook: echo.ipynb, inputs: {x: params.x}, outputs: {s: string}}
        """
    )
    (project.root / "scenarios").mkdir()
    (project.root / "scenarios" / "threshold.yaml").write_text(SCENARIO)
    return project


def set_limit(project, limit: int) -> None:
    project.notebook(
        "rule.ipynb",
        "x: int = 0",
        f"import kit\nlimit = {limit}\nkit.output('limit', limit)\nkit.output('verdict', 'flagged' if x > limit else 'ok')",
    )


def git(project, *args):
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=project.root, check=True, capture_output=True
    )


def test_replay_against_a_git_revision(ruled):
    (ruled.root / ".gitignore").write_text(".kit/\n")
    git(ruled, "init", "-q")
    git(ruled, "add", "-A")
    git(ruled, "commit", "-qm", "limit 4")
    set_limit(ruled, 9)  # a changed business rule
    git(ruled, "commit", "-qam", "limit 9")

    result = ruled.kit("replay", "scenarios/threshold.yaml", "--baseline", "git:HEAD~1", "--format", "json")
    assert result.returncode == 1, result.stderr  # something regressed
    report = json.loads(result.stdout)
    by_key = {e["expectation"]: e for e in report["scenarios"][0]["expectations"]}
    assert by_key["rule.verdict"]["classification"] == "regressed"
    assert by_key["rule.verdict"]["old"] == "flagged" and by_key["rule.verdict"]["current"] == "ok"
    assert by_key["rule.limit"]["classification"] == "regressed"
    assert by_key["echo.s"]["classification"] == "still-passing" and not by_key["echo.s"]["changed"]
    assert report["totals"] == {"regressed": 2, "fixed": 0, "still-failing": 0, "still-passing": 1}

    runs = ruled.sql("select run_id, baseline_of, bundle_id from runs order by run_id")
    baseline = [r for r in runs if r["baseline_of"]]
    assert len(baseline) == 1 and baseline[0]["baseline_of"] in {r["run_id"] for r in runs}
    assert baseline[0]["bundle_id"] != [r for r in runs if not r["baseline_of"]][0]["bundle_id"]
    verdicts = ruled.sql("select count(*) as n from comparisons")
    assert verdicts[0]["n"] == 6  # both runs' comparisons are in the ledger

    md = ruled.kit("replay", "scenarios/threshold.yaml", "--baseline", "git:HEAD~1", "--format", "md")
    assert "### kit replay against `git:HEAD~1`: regressions found" in md.stdout
    assert "| 🔴 regressed | `rule.verdict` |" in md.stdout

    # and the other way round: the old limit is fixed relative to the new one
    set_limit(ruled, 4)
    fixed = ruled.kit("replay", "scenarios/threshold.yaml", "--baseline", "git:HEAD", "--format", "json")
    assert fixed.returncode == 0
    classes = {e["expectation"]: e["classification"] for e in json.loads(fixed.stdout)["scenarios"][0]["expectations"]}
    assert classes == {"rule.verdict": "fixed", "rule.limit": "fixed", "echo.s": "still-passing"}


def test_replay_against_a_run_uses_the_snapshot_not_the_edited_file(ruled):
    first = ruled.kit("run", "wf", "-p", "x=5")
    assert first.returncode == 0
    run_id = first.stdout.split()[1]
    set_limit(ruled, 9)  # edit the notebook after the run

    result = ruled.kit("replay", "scenarios/threshold.yaml", "--baseline", run_id, "--format", "json")
    report = json.loads(result.stdout)
    by_key = {e["expectation"]: e for e in report["scenarios"][0]["expectations"]}
    assert by_key["rule.limit"]["old"] == 4 and by_key["rule.limit"]["current"] == 9
    baseline = ruled.sql(f"select * from runs where run_id = '{report['scenarios'][0]['baseline_run']}'")[0]
    assert ".kit/bundles/" in baseline["manifest"]
    assert (ruled.root / "wf" / "rule.ipynb").read_text().count("limit = 9") == 1  # the working tree was not touched

    by_version = ruled.kit("replay", "scenarios/threshold.yaml", "--baseline", "wf@1.0.0", "--format", "json")
    assert by_version.returncode in (0, 1) and json.loads(by_version.stdout)["scenarios"][0]["baseline_bundle"]
    prefix = ruled.sql(f"select bundle_id from runs where run_id = '{run_id}'")[0]["bundle_id"][:10]
    by_prefix = ruled.kit("replay", "scenarios/threshold.yaml", "--baseline", prefix, "--format", "json")
    old = {e["expectation"]: e["old"] for e in json.loads(by_prefix.stdout)["scenarios"][0]["expectations"]}
    assert old["rule.limit"] == 4


def test_an_unknown_baseline_is_refused(ruled):
    result = ruled.kit("replay", "scenarios/threshold.yaml", "--baseline", "nothing-like-this")
    assert result.returncode == 2 and "no bundle id, run id or NAME@VERSION matches" in result.stdout + result.stderr


def test_lock_and_locked_runs(ruled):
    locked = ruled.kit("lock", "wf")
    assert locked.returncode == 0
    lock = json.loads((ruled.root / "wf" / "workflow.lock").read_text())
    assert {"workflow.yaml", "rule.ipynb", "echo.ipynb"} <= set(lock["files"]) and len(lock["bundle_id"]) == 64

    ok = ruled.kit("run", "wf", "--locked")
    assert ok.returncode == 0
    assert ruled.sql("select bundle_id from runs")[0]["bundle_id"] == lock["bundle_id"]

    set_limit(ruled, 7)
    warned = ruled.kit("run", "wf")
    assert warned.returncode == 0 and "workflow.lock is stale: changed rule.ipynb" in warned.stderr
    refused = ruled.kit("run", "wf", "--locked")
    assert refused.returncode == 2 and "stale" in refused.stderr


def test_a_git_baseline_holding_a_symlink_out_is_refused_in_one_line(ruled):
    """`git archive` keeps symlinks: one to an absolute path is never extracted (tarfile's data filter),
    and the refusal is one line and exit 2, not a tarfile traceback."""
    (ruled.root / ".gitignore").write_text(".kit/\n")
    (ruled.root / "wf" / "passwords").symlink_to("/etc/passwd")
    git(ruled, "init", "-q")
    git(ruled, "add", "-A")
    git(ruled, "commit", "-qm", "a link out")
    (ruled.root / "wf" / "passwords").unlink()
    result = ruled.kit("replay", "scenarios/threshold.yaml", "--baseline", "git:HEAD")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "cannot be extracted safely" in result.stderr
    assert not list((ruled.root / ".kit" / "bundles").glob("git-*"))
