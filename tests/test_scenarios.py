"""Acceptance tests for scenarios: the shipped casework suite, run for real.

Each scenario runs the casework workflow in fresh kernels (~5-7 s), so the copy of the
example and the full `kit test` are made once per module; the other tests run only the
scenario files they need.
"""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, Project, copy_example

from kit.spec.scenario import discover
from kit.verification.scenarios import load_scenario

SCENARIOS = REPO / "scenarios" / "casework"
ALL_COMPARATORS = {"equals", "approx", "contains", "matches", "one_of", "schema", "table"}


def _copy_example(root: Path) -> Project:
    project = Project(root)
    copy_example(root, scenarios=True)
    return project


def _shipped() -> list:
    return [load_scenario(p) for p in discover([SCENARIOS])]


def _output(result) -> str:
    return result.stdout + result.stderr


def _runs_of(project: Project, scenario_id: str) -> list[str]:
    rows = project.sql(f"select run_id from runs where scenario_id = '{scenario_id}' order by run_id")
    return [r["run_id"] for r in rows]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The example and its scenarios copied into a project, and `kit test` run once over all of them."""
    project = _copy_example(tmp_path_factory.mktemp("scenarios"))
    result = project.kit("test")
    comparisons = project.sql(
        "select c.run_id, c.scenario_id, c.expectation, c.comparator, c.verdict, r.scenario_id as run_scenario "
        "from comparisons c join runs r using (run_id)"
    )
    runs = project.sql("select run_id, scenario_id, status from runs")
    return project, result, comparisons, runs


def test_the_shipped_scenarios_cover_the_cases_and_every_comparator():
    scenarios = _shipped()
    assert len(scenarios) >= 6
    assert len({s.params["case_id"] for s in scenarios}) == len(scenarios)
    for s in scenarios:
        assert s.workflow == "casework"
        assert s.description and s.tags and s.source, s.path
        assert s.env == "dev" and s.principal == "alice", s.path  # the example's steps require entitlements
        assert s.recordings_path.is_file(), s.path  # kit test replays the summarize step's LLM call
        # the two deliberate mismatches of the example are not part of the green suite
        assert s.params["case_id"] not in ("C-1013", "C-1016"), s.path
    used = {e.comparator for s in scenarios for e in s.expect}
    assert ALL_COMPARATORS <= used
    tables = [e for s in scenarios for e in s.expect if e.comparator == "table"]
    assert any(e.spec.get("ignore_order") or e.spec.get("columns") for e in tables)
    approx = [e for s in scenarios for e in s.expect if e.comparator == "approx"]
    assert any("abs" in e.spec or "rel" in e.spec for e in approx)


def test_kit_test_passes_and_records_every_expectation(suite):
    _, result, comparisons, runs = suite
    assert result.returncode == 0, _output(result)
    assert "Traceback" not in _output(result)

    expected = {(s.id, e.key) for s in _shipped() for e in s.expect}
    recorded = {(c["scenario_id"], c["expectation"]) for c in comparisons}
    assert recorded == expected
    assert len(comparisons) == len(expected)
    failing = [c for c in comparisons if c["verdict"] != "pass"]
    assert not failing, failing

    # every comparison's run is linked to its scenario; one run per scenario
    assert all(c["run_scenario"] == c["scenario_id"] for c in comparisons)
    assert {r["scenario_id"] for r in runs} == {s.id for s in _shipped()}
    assert len(runs) == len(_shipped())
    assert {r["status"] for r in runs} == {"succeeded"}  # every run reached the review gate: nothing failed


def test_a_changed_business_rule_fails_the_scenario_that_guards_it(tmp_path):
    project = _copy_example(tmp_path)
    # the tempting "fix" for C-1013: loyalty discount from 2 years instead of 3
    nb_path = project.root / "notebooks" / "casework" / "02_check_policy.ipynb"
    nb = nbformat.read(str(nb_path), as_version=4)
    changed = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and '"loyalty_min_years": 3,' in cell.source:
            cell.source = cell.source.replace('"loyalty_min_years": 3,', '"loyalty_min_years": 2,')
            changed += 1
    assert changed == 1
    nbformat.write(nb, str(nb_path))

    target = "scenarios/casework/C-1012-return-not-received.yaml"
    scenario = load_scenario(project.root / target)
    result = project.kit("test", target, "--junit", "j.xml")
    out = _output(result)
    assert result.returncode == 1, out
    assert "Traceback" not in out
    assert f"FAIL {scenario.id}" in out
    key = "recommend.decision.action"
    assert f"{key}  [equals] fail" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith(key))
    block = out[out.index(line) :].splitlines()
    assert block[1].strip() == 'expected: "close_no_action"'
    assert block[2].strip() == 'actual:   "apply_discount"'

    cases = ET.parse(project.root / "j.xml").getroot().findall(".//testcase")
    assert [c.get("name") for c in cases] == [scenario.id]
    failure = cases[0].find("failure")
    assert failure is not None
    assert f"{key}: fail" in failure.get("message")
    assert '"close_no_action"' in failure.text and '"apply_discount"' in failure.text

    verdicts = {c["expectation"]: c["verdict"] for c in project.sql("select expectation, verdict from comparisons")}
    assert verdicts[key] == "fail"
    assert set(verdicts) == {e.key for e in scenario.expect}


BAD = {
    "malformed.yaml": """
        scenario: casework/malformed
        workflow: casework
        params: {case_id: C-1004}
        expect:
          recommend.decision.action: {equals: [correct_tax}
        """,
    "unknown-comparator.yaml": """
        scenario: casework/unknown-comparator
        workflow: casework
        params: {case_id: C-1004}
        expect:
          recommend.decision.action: {same_as: correct_tax}
        """,
    "unknown-step.yaml": """
        scenario: casework/unknown-step
        workflow: casework
        params: {case_id: C-1004}
        expect:
          recommend.decision.action: {equals: correct_tax}
          triage.decision.action: {equals: correct_tax}
        """,
    "unknown-output.yaml": """
        scenario: casework/unknown-output
        workflow: casework
        params: {case_id: C-1004}
        expect:
          recommend.verdict: {equals: correct_tax}
        """,
    "missing-table.yaml": """
        scenario: casework/missing-table
        workflow: casework
        params: {case_id: C-1004}
        expect:
          fetch_case.payload: {table: expected/no-such-file.csv, ignore_order: true}
        """,
}


def test_invalid_scenarios_are_reported_and_do_not_stop_the_others(suite):
    project = suite[0]
    bad = project.root / "bad"
    bad.mkdir()
    for name, text in BAD.items():
        (bad / name).write_text(textwrap.dedent(text).lstrip())
    good = load_scenario(SCENARIOS / "C-1004-wrong-vat-france.yaml")
    before = _runs_of(project, good.id)

    result = project.kit("test", *(f"bad/{n}" for n in BAD), "scenarios/casework/C-1004-wrong-vat-france.yaml")
    out = _output(result)
    assert result.returncode == 2, out
    assert "Traceback" not in out
    lines = out.splitlines()

    def message(name: str) -> str:
        hits = [ln for ln in lines if ln.strip().startswith(f"bad/{name}:")]
        assert hits, f"no message for {name} in:\n{out}"
        return hits[0]

    assert "bad/malformed.yaml:5:" in message("malformed.yaml")
    assert "malformed YAML" in message("malformed.yaml")
    m = message("unknown-comparator.yaml")
    assert "'recommend.decision.action'" in m and "unknown comparator 'same_as'" in m
    m = message("unknown-step.yaml")
    assert "bad/unknown-step.yaml:6:" in m and "'triage.decision.action'" in m and "unknown step 'triage'" in m
    m = message("unknown-output.yaml")
    assert "'recommend.verdict'" in m and "no output 'verdict'" in m
    m = message("missing-table.yaml")
    assert "'fetch_case.payload'" in m and "no-such-file.csv" in m and "does not exist" in m
    for name in BAD:
        assert f"INVALID bad/{name}" in out

    # the valid scenario ran, passed and was recorded; the invalid ones started no run
    after = _runs_of(project, good.id)
    assert len(after) == len(before) + 1
    new_run = after[-1]
    verdicts = project.sql(f"select expectation, verdict from comparisons where run_id = '{new_run}'")
    assert {v["expectation"] for v in verdicts} == {e.key for e in good.expect}
    assert {v["verdict"] for v in verdicts} == {"pass"}
    bad_ids = ", ".join(f"'casework/{Path(n).stem}'" for n in BAD)
    assert project.sql(f"select count(*) as n from runs where scenario_id in ({bad_ids})")[0]["n"] == 0
    assert "1 passed, 0 failed, 5 error" in out


def test_a_captured_run_passes_and_an_edited_expectation_fails(suite):
    project = suite[0]
    run_id = _runs_of(project, "casework/C-1004-wrong-vat-france")[0]
    out_file = "captured/c1004.yaml"
    result = project.kit(
        "capture",
        run_id,
        "--expect",
        "recommend.decision.action",
        "--expect",
        "check_policy.policy.violations.0.expected",
        "--expect",
        "fetch_case.payload",
        "-o",
        out_file,
        "--note",
        "captured in the acceptance test",
    )
    assert result.returncode == 0, _output(result)
    captured = load_scenario(project.root / out_file)
    assert captured.params["case_id"] == "C-1004"
    assert captured.source["run"] == run_id
    assert {e.key: e.comparator for e in captured.expect} == {
        "recommend.decision.action": "equals",
        "check_policy.policy.violations.0.expected": "equals",
        "fetch_case.payload": "table",
    }
    table = next(e for e in captured.expect if e.comparator == "table")
    assert (captured.base_dir / table.spec["table"]).is_file()
    # the run's LLM call became the captured scenario's recording: kit test replays it offline
    assert captured.recordings_path.is_file()
    assert '"provider": "fake"' in captured.recordings_path.read_text()

    result = project.kit("test", out_file)
    assert result.returncode == 0, _output(result)
    assert "1 passed, 0 failed" in result.stdout

    path = project.root / out_file
    text = path.read_text()
    assert "equals: correct_tax" in text
    path.write_text(text.replace("equals: correct_tax", "equals: apply_discount"))
    result = project.kit("test", out_file)
    out = _output(result)
    assert result.returncode == 1, out
    assert f"FAIL {captured.id}" in out
    assert "recommend.decision.action  [equals] fail" in out
    assert 'expected: "apply_discount"' in out and 'actual:   "correct_tax"' in out


def test_tag_and_workflow_filters_select_scenarios(suite):
    project = suite[0]
    # a scenario of another workflow, tagged like the casework tax case: selecting it
    # would be reported invalid (there is no such workflow)
    other = project.root / "other"
    other.mkdir()
    (other / "elsewhere.yaml").write_text(
        "scenario: elsewhere/tax\nworkflow: elsewhere\nparams: {}\nexpect:\n  a.b: {equals: 1}\ntags: [tax]\n"
    )
    shipped = _shipped()
    tax = [s for s in shipped if "tax" in s.tags]
    assert len(tax) == 1
    counts = {s.id: len(_runs_of(project, s.id)) for s in shipped}
    total = project.sql("select count(*) as n from runs")[0]["n"]

    result = project.kit("test", "scenarios", "other", "--tag", "tax", "--workflow", "casework")
    out = _output(result)
    assert result.returncode == 0, out
    assert "casework: 1/1 scenarios passed" in out
    assert "elsewhere" not in out
    for s in shipped:
        assert len(_runs_of(project, s.id)) == counts[s.id] + (1 if s in tax else 0), s.id
    assert project.sql("select count(*) as n from runs")[0]["n"] == total + 1

    # --workflow alone: only the other workflow's file is chosen (and reported invalid), no run starts
    result = project.kit("test", "scenarios", "other", "--workflow", "elsewhere")
    out = _output(result)
    assert result.returncode == 2, out
    assert "INVALID other/elsewhere.yaml" in out
    assert "0 passed, 0 failed, 1 error" in out
    # nothing matches: refused before anything runs
    result = project.kit("test", "--tag", "no-such-tag")
    assert result.returncode == 2
    assert "no scenario under" in _output(result) and "has the tag 'no-such-tag'" in _output(result)
    assert project.sql("select count(*) as n from runs")[0]["n"] == total + 1
