"""kit's pytest plugin: `pytest scenarios/` runs scenario files as test items.

Each test builds a small project (the casework example plus scenario files) in
pytester's folder and runs pytest on it in a subprocess, so the plugin is found
through its `pytest11` entry point exactly as in a user's project.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import copy_example

import kit.spec.scenario  # noqa: F401  (imported here, not first inside an in-process pytest run, which unloads it after)

pytest_plugins = ["pytester"]

PASSING = """
scenario: casework/discount-applies
workflow: casework
description: A gold customer's missing loyalty discount is applied
params: {case_id: C-1001}
as: alice
llm_mode: live
expect:
  recommend.decision.action: {equals: apply_discount}
  fetch_case.case.tier: {equals: gold}
tags: [pricing]
"""

FAILING = """
scenario: casework/wrong-action
workflow: casework
params: {case_id: C-1001}
as: alice
llm_mode: live
expect:
  recommend.decision.action: {equals: something_else}
  fetch_case.case.tier: {equals: gold}
"""

INVALID = """
scenario: casework/broken
workflow: casework
params: {case_id: C-1001}
expect:
  recommend.decision.action: {equalz: apply_discount}
"""

UNKNOWN_WORKFLOW = """
scenario: nowhere/lost
workflow: nowhere
expect:
  a.b: {equals: 1}
"""

# YAML that is not a scenario: `scenario:` only nested, never at the top level
OTHER_YAML = """
name: settings
nested:
  scenario: not-a-scenario
"""


# Options for the inner pytest runs. Hypothesis's plugin, when installed, costs seconds
# a session (its terminal summary imports hypothesis); it has nothing to do here.
INNER = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


@pytest.fixture
def scenario_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("KIT_HOME", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    # the project is a subfolder; pytest runs from its parent, where a decoy `casework/`
    # folder (no workflow.yaml) must not be taken for the scenarios' workflow
    (pytester.path / "casework").mkdir()
    root = pytester.path / "proj"
    root.mkdir()
    copy_example(root)
    scenarios = root / "scenarios"
    scenarios.mkdir()
    for name, text in [
        ("passing.yaml", PASSING),
        ("failing.yaml", FAILING),
        ("invalid.yaml", INVALID),
        ("unknown_workflow.yml", UNKNOWN_WORKFLOW),
    ]:
        (scenarios / name).write_text(textwrap.dedent(text).lstrip())
    (root / "settings.yaml").write_text(textwrap.dedent(OTHER_YAML).lstrip())
    return root


def test_importing_the_plugin_is_cheap():
    code = (
        "import sys, pytest; before = set(sys.modules)\n"
        "import kit.pytest_plugin\n"
        "heavy = {'kit.scenario', 'kit.testing', 'kit.runner', 'pydantic', 'pandas', 'duckdb', 'yaml',\n"
        "         'papermill', 'nbformat', 'pytest_notebook'}\n"
        "print(sorted(heavy & (set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_only_scenario_files_are_collected_and_tags_become_markers(pytester, scenario_project):
    # collecting starts no kernel: in this process (a subprocess pays pytest's start-up again)
    result = pytester.runpytest_inprocess("--collect-only", "-q", *INNER)
    items = [line for line in result.outlines if "::" in line]
    assert sorted(items) == [
        "proj/scenarios/failing.yaml::casework/wrong-action",
        "proj/scenarios/invalid.yaml::invalid.yaml",
        "proj/scenarios/passing.yaml::casework/discount-applies",
        "proj/scenarios/unknown_workflow.yml::nowhere/lost",
    ], result.stdout.str()
    assert not (scenario_project / ".kit").exists(), "collecting must not run anything"

    tagged = pytester.runpytest_inprocess(
        "--collect-only",
        "-q",
        *INNER,
        "--strict-markers",
        "-W",
        "error::pytest.PytestUnknownMarkWarning",
        "-m",
        "pricing",
        "proj/scenarios",
    )
    assert tagged.ret == 0, tagged.stdout.str() + tagged.stderr.str()
    assert [line for line in tagged.outlines if "::" in line] == [
        "proj/scenarios/passing.yaml::casework/discount-applies"
    ]

    kit_only = pytester.runpytest_inprocess("--collect-only", "-q", *INNER, "-m", "kit_scenario", "proj/scenarios")
    assert len([line for line in kit_only.outlines if "::" in line]) == 4


def test_scenarios_pass_fail_and_explain_themselves(pytester, scenario_project):
    result = pytester.runpytest_subprocess("proj/scenarios", "-v", *INNER, "--junitxml=report.xml", timeout=900)
    out = result.stdout.str()
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            "proj/scenarios/failing.yaml::casework/wrong-action FAILED*",
            "proj/scenarios/invalid.yaml::invalid.yaml FAILED*",
            "proj/scenarios/passing.yaml::casework/discount-applies PASSED*",
            "proj/scenarios/unknown_workflow.yml::nowhere/lost FAILED*",
        ]
    )

    # the failing scenario: only the failing expectation, expected and actual side by side
    failing = _section(out, "scenario casework/wrong-action")
    assert "1 of 2 expectation(s) failed" in failing
    assert "recommend.decision.action  [equals] fail" in failing
    assert "failing.yaml:7" in failing
    assert 'expected: "something_else"' in failing
    assert 'actual:   "apply_discount"' in failing
    assert "fetch_case.case.tier" not in failing

    # the invalid ones: the loader's message with file, line and key; no traceback
    invalid = _section(out, "scenario invalid.yaml")
    assert "invalid.yaml:5: expect 'recommend.decision.action': unknown comparator 'equalz'" in invalid
    unknown = _section(out, "scenario nowhere/lost")
    assert "unknown_workflow.yml" in unknown and "workflow 'nowhere'" in unknown
    for section in (failing, invalid, unknown):
        assert "Traceback" not in section and ".py:" not in section, section

    # recorded in the ledger as `kit test` does
    from kit.ledger.database import Database

    rows = Database(scenario_project / ".kit" / "ledger.duckdb").rows(
        "SELECT scenario_id, expectation, verdict, run_id FROM comparisons ORDER BY scenario_id, expectation"
    )
    assert [(r["scenario_id"], r["expectation"], r["verdict"]) for r in rows] == [
        ("casework/discount-applies", "fetch_case.case.tier", "pass"),
        ("casework/discount-applies", "recommend.decision.action", "pass"),
        ("casework/wrong-action", "fetch_case.case.tier", "pass"),
        ("casework/wrong-action", "recommend.decision.action", "fail"),
    ]
    runs = Database(scenario_project / ".kit" / "ledger.duckdb").rows("SELECT run_id, scenario_id, status FROM runs")
    assert sorted((r["scenario_id"], r["status"]) for r in runs) == [
        ("casework/discount-applies", "succeeded"),
        ("casework/wrong-action", "succeeded"),
    ]  # up to the review gate: scenario runs do not wait there (nor pile up waiting)

    # each run's id reaches the JUnit report as a property
    props = {
        p.get("value") for p in ET.parse(pytester.path / "report.xml").iter("property") if p.get("name") == "run_id"
    }
    assert props == {r["run_id"] for r in runs}


def _section(text: str, title: str) -> str:
    """One failure's section of pytest's report: from its `____ title ____` header to the next."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip("_ ") == title)
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("____") or lines[i].startswith("====")),
        len(lines),
    )
    return "\n".join(lines[start:end])
