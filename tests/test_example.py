"""The bundled casework example, run the way a new user runs it (README's first command)."""

from __future__ import annotations

import time

import pytest
from conftest import Project, copy_example

from kit.spec.manifest import load_workflow


@pytest.fixture(scope="module")
def casework(tmp_path_factory):
    project = Project(tmp_path_factory.mktemp("casework"))
    copy_example(project.root, scenarios=True)
    return project


def test_the_example_runs_through_its_approval_and_records_every_declared_output(casework):
    started = casework.kit("run", "notebooks/casework", "-p", "case_id=C-1001", "--as", "alice")
    assert started.returncode == 3, started.stderr  # waiting for the reviewer
    run_id = started.stdout.split()[1]
    assert "step review waits for approval by a reviewer" in started.stdout
    assert casework.kit("approve", run_id, "review", "--as", "bob").returncode == 0
    resumed = casework.kit("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr

    workflow = load_workflow(casework.root / "notebooks" / "casework" / "workflow.yaml")
    assert len([s for s in workflow.steps.values() if not s.is_approval]) >= 5

    shown = casework.kit("show", run_id)
    assert shown.returncode == 0 and f"run {run_id}: succeeded" in shown.stdout
    steps = {
        s["step_id"]: s
        for s in casework.sql(f"select step_id, status, attempts, duration_ms from steps where run_id = '{run_id}'")
    }
    assert set(steps) == set(workflow.steps)
    routed_away = {"draft_note"}  # a billing case: the agent step's when: rule is false
    assert {sid: s["status"] for sid, s in steps.items()} == {
        sid: ("approved" if step.is_approval else "skipped" if sid in routed_away else "succeeded")
        for sid, step in workflow.steps.items()
    }
    assert all(s["attempts"] == 1 for sid, s in steps.items() if sid not in routed_away | {"review"})

    recorded = {
        (o["step_id"], o["name"]): o["type"] for o in casework.sql(f"select * from outputs where run_id = '{run_id}'")
    }
    declared = {
        (sid, name) for sid, step in workflow.steps.items() for name in step.spec.outputs if sid != "draft_note"
    }
    assert set(recorded) == declared
    assert "table" in recorded.values() and "schema" in recorded.values()

    by_name = {
        s["step_id"]: s
        for s in casework.sql(
            f"select step_id, started_at, ended_at from spans where run_id = '{run_id}' and kind = 'step'"
        )
    }
    a, b = by_name["check_policy"], by_name["retrieve_similar"]
    assert a["started_at"] < b["ended_at"] and b["started_at"] < a["ended_at"], "the fan-out steps did not overlap"

    values = {o["name"]: o["value"] for o in casework.sql(f"select name, value from outputs where run_id = '{run_id}'")}
    assert values["decision"]["action"] == "apply_discount"
    assert values["registration"]["state"] == "candidate_regression_test"
    llm = casework.sql(f"select attributes from spans where run_id = '{run_id}' and kind = 'llm'")
    assert len(llm) == 1 and llm[0]["attributes"]["gen_ai.usage.input_tokens"] > 0
    assert llm[0]["attributes"]["gen_ai.provider.name"] == "fake"  # the dev environment's model


def test_an_unknown_case_fails_the_first_step_and_skips_the_rest(casework):
    result = casework.kit("run", "notebooks/casework", "-p", "case_id=C-0000", "--as", "alice")
    assert result.returncode == 1
    run_id = result.stdout.split()[1]
    statuses = {
        s["step_id"]: s["status"] for s in casework.sql(f"select step_id, status from steps where run_id = '{run_id}'")
    }
    assert statuses["fetch_case"] == "failed"
    assert {s for k, s in statuses.items() if k != "fetch_case"} == {"skipped"}


def test_scenarios_replay_offline_and_a_changed_prompt_fails_closed(casework):
    scenario = "scenarios/casework/C-1004-wrong-vat-france.yaml"
    offline = {"OPENAI_API_KEY": "", "KIT_LLM_MODE": ""}
    passed = casework.kit("test", scenario, env=offline)
    assert passed.returncode == 0, passed.stdout
    replayed = casework.sql("select attributes from spans where kind = 'llm' order by started_at desc limit 1")[0]
    assert replayed["attributes"]["kit.llm.replayed"] is True

    prompt = casework.root / "notebooks" / "casework" / "prompts" / "summarize.md"
    prompt.write_text(prompt.read_text().replace("three sentences at most", "two sentences at most"))
    failed = casework.kit("test", scenario, env=offline)
    assert failed.returncode == 1
    assert "ReplayMiss" in failed.stdout and "replay miss in step 'summarize'" in failed.stdout
    assert "-" in failed.stdout and "+" in failed.stdout and "two sentences at most" in failed.stdout


def test_a_finished_run_counts_its_approved_gate_as_done(casework):
    started = casework.kit("run", "notebooks/casework", "-p", "case_id=C-1002", "--as", "alice")
    run_id = started.stdout.split()[1]
    assert casework.kit("approve", run_id, "review", "--as", "bob").returncode == 0
    assert casework.kit("resume", run_id).returncode == 0
    listed = casework.kit("runs", "--format", "json")
    (row,) = [r for r in __import__("json").loads(listed.stdout) if r["run_id"] == run_id]
    assert row["status"] == "succeeded" and row["steps"] == "8/8"  # the step routed away counts as done


def test_a_scenario_may_decide_its_gate_through_the_policy(tmp_path):
    casework = Project(tmp_path)
    copy_example(casework.root, scenarios=True)
    scenarios = casework.root / "scenarios" / "casework"
    text = (scenarios / "C-1001-missing-loyalty-discount.yaml").read_text()
    decided = scenarios / "decided.yaml"
    decided.write_text(
        text.replace("scenario: casework/C-1001-missing-loyalty-discount", "scenario: casework/decided")
        .replace("recordings: recordings/", "approve: {review: bob}\nrecordings: recordings/")
        .replace("expect:\n", "expect:\n  register_case.registration.state: {equals: candidate_regression_test}\n")
    )
    passed = casework.kit("test", str(decided), env={"KIT_LLM_MODE": ""})
    assert passed.returncode == 0, passed.stdout
    run = casework.sql("select run_id, status from runs where scenario_id = 'casework/decided'")[0]
    assert run["status"] == "succeeded"
    approvals = casework.sql(f"select principal, comment from approvals where run_id = '{run['run_id']}'")
    assert approvals == [{"principal": "bob", "comment": "declared by the scenario"}]

    by_starter = decided.with_name("self.yaml")
    by_starter.write_text(decided.read_text().replace("approve: {review: bob}", "approve: {review: alice}"))
    refused = casework.kit("test", str(by_starter), env={"KIT_LLM_MODE": ""})
    assert refused.returncode == 2 and "approve: review: 'alice' may not decide" in refused.stdout
    assert casework.sql("select count(*) as n from runs where status = 'running'")[0]["n"] == 0


def test_an_account_case_skips_the_recommendation_and_a_model_drafts_the_note_with_tools(casework):
    """The example routes by rule and has a bounded agent step (issue 13): for account cases the
    automatic recommendation is skipped and the model investigates with the declared tools."""
    started = casework.kit("run", "notebooks/casework", "-p", "case_id=C-1007", "--as", "alice")
    assert started.returncode == 3, started.stderr
    run_id = started.stdout.split()[1]
    assert "recommend.decision: null" in started.stdout and "KB-041" in started.stdout  # what bob sees
    assert casework.kit("approve", run_id, "review", "--as", "bob").returncode == 0
    assert casework.kit("resume", run_id).returncode == 0

    steps = {s["step_id"]: s for s in casework.sql(f"select * from steps where run_id = '{run_id}'")}
    assert steps["recommend"]["status"] == "skipped" and steps["recommend"]["routed"]
    assert "fetch_case.case.category='account'" in steps["recommend"]["reason"]
    assert steps["draft_note"]["status"] == steps["register_case"]["status"] == "succeeded"
    shown = casework.kit("show", run_id).stdout
    assert 'step recommend skipped by rule: when fetch_case.case.category != "account" was false' in shown

    spans = casework.sql(f"select name, kind from spans where run_id = '{run_id}' and step_id = 'draft_note'")
    assert sorted(s["name"] for s in spans if s["kind"] == "tool") == ["lookup_orders", "search_kb"]
    assert [s["kind"] for s in spans].count("llm") == 2 and {"kind": "agent", "name": "agent"} in spans
    values = {o["name"]: o["value"] for o in casework.sql(f"select name, value from outputs where run_id = '{run_id}'")}
    assert "KB-041" in values["note"] and "lookup_orders" in values["note"]
    assert values["registration"]["action"] == "escalate_to_human" and values["registration"]["confidence"] is None


def test_a_principal_without_a_tools_entitlement_is_refused_before_any_kernel(tmp_path):
    project = Project(tmp_path)
    copy_example(project.root)
    config = project.root / "kit.yaml"
    config.write_text(config.read_text().replace("orders:read, ", ""))
    denied = project.kit("run", "notebooks/casework", "-p", "case_id=C-1001", "--as", "alice")
    assert denied.returncode == 4, denied.stderr
    assert "lookup_orders" in denied.stderr and "orders:read" in denied.stderr
    assert project.sql("select count(*) as n from steps") == [{"n": 0}]  # no step started, no kernel
    assert project.sql("select action from audit where action = 'run.denied'")


def test_gc_keeps_what_an_agent_steps_tool_calls_recorded(tmp_path):
    """A tool call's content is an object like a model turn's: `kit gc` keeps it, `kit fsck` checks it,
    and `kit capture` can still write the agent's recordings after a collection."""
    project = Project(tmp_path)
    copy_example(project.root)
    started = project.kit("run", "notebooks/casework", "-p", "case_id=C-1007", "--as", "alice")
    assert started.returncode == 3, started.stderr
    run_id = started.stdout.split()[1]
    tools = project.sql(
        f"select attributes->>'kit.llm.content' as ref from spans where run_id = '{run_id}' and kind = 'tool'"
    )
    assert len(tools) == 2 and all(t["ref"] for t in tools)

    failed = project.kit("run", "notebooks/casework", "-p", "case_id=C-0000", "--as", "alice")  # ends at once
    assert failed.returncode == 1
    time.sleep(1.2)
    collected = project.kit("gc", "--older-than", "1s", "--as", "alice")  # deletes that run, sweeps objects
    assert collected.returncode == 0, collected.stderr
    assert project.sql("select count(*) as n from runs") == [{"n": 1}]  # the waiting agent run is kept
    objects = project.root / ".kit" / "objects"
    for t in tools:
        digest = t["ref"].split("sha256:", 1)[1]
        assert (objects / digest[:2] / digest[2:]).exists(), f"gc deleted a tool call's content {digest[:12]}"
    assert project.kit("fsck").returncode == 0
    captured = project.kit("capture", run_id, "-o", "scenarios/casework/again.yaml")
    assert captured.returncode == 0, captured.stderr
