"""What a run refuses to do: approvals, entitlements, redaction, and the audit trail."""

from __future__ import annotations

import time

import duckdb
import pytest

KIT_YAML = """
principals:
  alice: [analyst]
  bob: [reviewer]
  carol: [guest]
roles:
  analyst: [cases:read]
  reviewer: [cases:read]
  guest: []
approvals: {self_approve: false}
"""


@pytest.fixture
def gated(project):
    (project.root / "kit.yaml").write_text(KIT_YAML)
    project.notebook(
        "fetch.ipynb",
        "case_id: str = 'C-1'",
        "import kit, pathlib\npathlib.Path('fetched').write_text('1')\nkit.output('decision', {'action': 'refund', 'case': case_id})",
    )
    project.notebook("apply.ipynb", "decision: dict = {}", "import kit\nkit.output('applied', decision['action'])")
    project.manifest(
        """
        workflow: gated
        version: 1
        params: {case_id: {type: string, default: C-7}}
        steps:
          fetch:
            notebook: fetch.ipynb
            inputs: {case_id: params.case_id}
            outputs: {decision: object}
            requires: [cases:read]
          review:
            approval: {approvers: [reviewer], show: [fetch.decision], timeout: 3d}
            after: [fetch]
          apply:
            notebook: apply.ipynb
            inputs: {decision: fetch.decision}
            outputs: {applied: string}
            after: [review]
        """
    )
    return project


def test_the_approval_path_end_to_end(gated):
    started = gated.kit("run", "wf", "--as", "alice")
    assert started.returncode == 3, started.stderr
    assert "waits for approval by a reviewer" in started.stdout and '"action": "refund"' in started.stdout
    run_id = started.stdout.split()[1]
    assert f"kit approve {run_id} review" in started.stdout
    statuses = {s["step_id"]: s["status"] for s in gated.sql("select step_id, status from steps")}
    assert statuses == {"fetch": "succeeded", "review": "waiting", "apply": "pending"}
    assert gated.sql("select status from runs")[0]["status"] == "waiting"

    by_starter = gated.kit("approve", run_id, "review", "--as", "alice")
    assert by_starter.returncode == 4 and "may not" in by_starter.stderr
    by_guest = gated.kit("approve", run_id, "review", "--as", "carol")
    assert by_guest.returncode == 4 and "reviewer" in by_guest.stderr
    by_reviewer = gated.kit("approve", run_id, "review", "--as", "bob", "--comment", "looks right")
    assert by_reviewer.returncode == 0, by_reviewer.stderr

    resumed = gated.kit("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    statuses = {s["step_id"]: s for s in gated.sql("select * from steps")}
    assert statuses["review"]["status"] == "approved" and statuses["apply"]["status"] == "succeeded"
    assert statuses["fetch"]["attempts"] == 1
    approvals = gated.sql("select decision, principal, comment from approvals")
    assert approvals == [{"decision": "approved", "principal": "bob", "comment": "looks right"}]
    actions = [a["action"] for a in gated.sql("select action from audit order by seq")]
    assert actions.count("approval.denied") == 2 and "approval.approved" in actions and actions[-1] == "run.succeeded"


def test_the_rejection_path_ends_rejected(gated):
    started = gated.kit("run", "wf", "--as", "alice")
    run_id = started.stdout.split()[1]
    rejected = gated.kit("approve", run_id, "review", "--as", "bob", "--reject", "--comment", "wrong")
    assert rejected.returncode == 0 and "kit resume" not in rejected.stdout
    # the rejection ends the run at once: no resume needed
    statuses = {s["step_id"]: s["status"] for s in gated.sql("select step_id, status from steps")}
    assert statuses == {"fetch": "succeeded", "review": "rejected", "apply": "skipped"}
    assert gated.sql("select status from runs")[0]["status"] == "rejected"
    assert gated.kit("resume", run_id).returncode == 2  # a rejected run cannot be resumed


def test_an_expired_approval_rejects_the_run(gated):
    started = gated.kit("run", "wf", "--as", "alice")
    run_id = started.stdout.split()[1]
    # the run waited since long ago: its 3d deadline has passed
    with duckdb.connect(str(gated.root / ".kit" / "ledger.duckdb")) as con:
        con.execute("UPDATE steps SET deadline = deadline - INTERVAL 4 DAY WHERE step_id = 'review'")
    resumed = gated.kit("resume", run_id)
    assert resumed.returncode == 2 and "rejected" in resumed.stderr
    assert gated.sql("select status from runs")[0]["status"] == "rejected"
    assert gated.sql("select decision, principal from approvals") == [{"decision": "rejected", "principal": "kit"}]


def test_self_approval_when_the_policy_allows_it(gated):
    (gated.root / "kit.yaml").write_text(
        KIT_YAML.replace("self_approve: false", "self_approve: true").replace(
            "bob: [reviewer]", "bob: [reviewer, analyst]"
        )
    )
    started = gated.kit("run", "wf", "--as", "bob")
    assert gated.kit("approve", started.stdout.split()[1], "review", "--as", "bob").returncode == 0


def test_a_principal_without_the_entitlement_is_denied_before_anything_runs(gated):
    for principal in ("carol", "mallory"):  # a role without it, and an unknown principal
        result = gated.kit("run", "wf", "--as", principal)
        assert result.returncode == 4, result.stderr
        assert "step 'fetch' requires cases:read" in result.stderr and "Traceback" not in result.stderr
    assert not (gated.root / "wf" / "fetched").exists()
    assert gated.sql("select count(*) as n from runs")[0]["n"] == 0
    denials = gated.sql("select actor, action, subject from audit")
    assert denials == [
        {"actor": "carol", "action": "run.denied", "subject": "gated"},
        {"actor": "mallory", "action": "run.denied", "subject": "gated"},
    ]
    via_env = gated.kit("run", "wf", env={"KIT_PRINCIPAL": "carol"})
    assert via_env.returncode == 4


SECRET = "s3cr3t-Tok3n-9f8e7d"


def test_a_secret_is_found_nowhere_under_dot_kit(project):
    project.notebook(
        "leak.ipynb",
        "api_token: str = ''\ncase_id: str = 'C-1'",
        """
        import kit
        key = kit.secret("CRM_TOKEN")
        print("the key is", key, "and the token is", api_token)
        kit.output("echo", {"key": key, "note": f"used {key}"})
        kit.output("api_token", api_token)
        with kit.span("call", kind="tool", auth=key):
            pass
        """,
        "raise RuntimeError(f'could not connect with {key}')",
    )
    project.manifest(
        """
        workflow: leak
        version: 1
        params:
          api_token: {type: string}
          case_id: {type: string, default: C-1}
        steps:
          leak:
            notebook: leak.ipynb
            inputs: {api_token: params.api_token, case_id: params.case_id}
            outputs: {echo: object, api_token: string}
        policy:
          redact: ["*token*"]
        """
    )
    param_secret = "param-Secret-4242"
    result = project.kit("run", "wf", "-p", f"api_token={param_secret}", env={"CRM_TOKEN": SECRET})
    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    # The step is changed to succeed, so outputs are recorded too.
    nb = project.root / "wf" / "leak.ipynb"
    import nbformat

    doc = nbformat.read(nb, as_version=4)
    doc.cells[-1].source = "print('ok')"
    nbformat.write(doc, nb)
    ok = project.kit("run", "wf", "-p", f"api_token={param_secret}", env={"CRM_TOKEN": SECRET})
    assert ok.returncode == 0, ok.stderr
    project.sql("select 1")  # applies anything journaled

    offenders = []
    for path in (project.root / ".kit").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if SECRET.encode() in data or param_secret.encode() in data:
                offenders.append(path)
    assert offenders == []
    # and the places where it was redacted say so
    assert project.sql("select params from runs")[0]["params"]["api_token"] == "[REDACTED]"
    failed = project.sql("select error_message, traceback from steps where status = 'failed'")[0]
    assert "[REDACTED]" in failed["error_message"]
    executed = (project.root / ".kit" / "runs").rglob("leak.ipynb")
    assert all("[REDACTED]" in p.read_text() for p in executed)
    echo = project.sql("select value from outputs where name = 'echo'")[0]["value"]
    assert echo == {"key": "[REDACTED]", "note": "used [REDACTED]"}


def test_audit_verify_names_the_altered_entry(chain):
    assert chain.kit("run", "wf").returncode == 0
    assert chain.kit("run", "wf", "-p", "x=9").returncode == 0
    ok = chain.kit("audit", "verify")
    assert ok.returncode == 0 and "4 entries" in ok.stdout
    with duckdb.connect(str(chain.root / ".kit" / "ledger.duckdb")) as con:
        con.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    broken = chain.kit("audit", "verify")
    assert broken.returncode == 1 and "audit entry 2" in broken.stderr and "altered" in broken.stderr


def test_audit_verify_names_a_removed_entry(chain):
    assert chain.kit("run", "wf").returncode == 0
    assert chain.kit("run", "wf", "-p", "x=9").returncode == 0
    with duckdb.connect(str(chain.root / ".kit" / "ledger.duckdb")) as con:
        con.execute("DELETE FROM audit WHERE seq = 3")
    broken = chain.kit("audit", "verify")
    assert broken.returncode == 1 and "audit entry 3 is missing" in broken.stderr


def test_gc_deletes_old_runs_keeps_what_scenarios_name_and_audits_it(chain):
    first = chain.kit("run", "wf").stdout.split()[1]
    second = chain.kit("run", "wf", "-p", "x=8").stdout.split()[1]
    (chain.root / "scenarios").mkdir()
    (chain.root / "scenarios" / "kept.yaml").write_text(
        f"scenario: kept\nworkflow: wf\nsource: {{run: {first}}}\nexpect:\n  a.n: {{equals: 4}}\n"
    )
    table = chain.sql(f"select artifact from outputs where run_id = '{second}' and name = 'rows'")[0]["artifact"]
    digest = table.split(":")[-1]
    assert (chain.root / ".kit" / "objects" / digest[:2] / digest[2:]).is_file()

    time.sleep(1.1)  # both runs are now older than the retention given below
    dry = chain.kit("gc", "--older-than", "1s", "--dry-run")
    assert dry.returncode == 0 and f"would delete 1 run(s): {second}" in dry.stdout
    assert chain.sql("select count(*) as n from runs")[0]["n"] == 2

    done = chain.kit("gc", "--older-than", "1s", "--as", "alice")
    assert done.returncode == 0 and f"kept 1 run(s) that scenarios name: {first}" in done.stdout
    assert [r["run_id"] for r in chain.sql("select run_id from runs")] == [first]
    for table_name in ("steps", "spans", "outputs"):
        assert chain.sql(f"select count(*) as n from {table_name} where run_id = '{second}'")[0]["n"] == 0
    assert not (chain.root / ".kit" / "runs" / second).exists()
    assert not (chain.root / ".kit" / "objects" / digest[:2] / digest[2:]).exists()  # only the deleted run had it
    deleted = chain.sql("select actor, subject from audit where action = 'run.deleted'")
    assert deleted == [{"actor": "alice", "subject": second}]
    assert chain.kit("audit", "verify").returncode == 0
    # what the kept run refers to is still there
    kept_table = chain.sql(f"select artifact from outputs where run_id = '{first}' and name = 'rows'")[0]["artifact"]
    kept = kept_table.split(":")[-1]
    assert (chain.root / ".kit" / "objects" / kept[:2] / kept[2:]).is_file()


# --------------------------------------------------------------------------- decisions are final


def test_a_decision_is_final(gated):
    run_id = gated.kit("run", "wf", "--as", "alice").stdout.split()[1]
    assert gated.kit("approve", run_id, "review", "--as", "bob").returncode == 0
    again = gated.kit("approve", run_id, "review", "--as", "bob")
    assert again.returncode == 2 and "already approved by bob" in again.stderr and "final" in again.stderr
    reject = gated.kit("approve", run_id, "review", "--as", "bob", "--reject")
    assert reject.returncode == 2
    assert gated.sql("select decision from approvals") == [{"decision": "approved"}]
    assert gated.kit("resume", run_id).returncode == 0


def test_a_decision_after_the_timeout_is_refused_and_the_run_ends_rejected(gated):
    manifest = gated.root / "wf" / "workflow.yaml"
    manifest.write_text(manifest.read_text().replace("timeout: 3d", "timeout: 2s"))
    run_id = gated.kit("run", "wf", "--as", "alice").stdout.split()[1]
    time.sleep(2.5)
    late = gated.kit("approve", run_id, "review", "--as", "bob")
    assert late.returncode == 2 and "expired" in late.stderr
    assert gated.sql("select status from runs")[0]["status"] == "rejected"
    steps = {s["step_id"]: s["status"] for s in gated.sql("select step_id, status from steps")}
    assert steps == {"fetch": "succeeded", "review": "rejected", "apply": "skipped"}
    assert gated.sql("select decision, principal, comment from approvals") == [
        {"decision": "rejected", "principal": "kit", "comment": "no decision within 2s"}
    ]


def test_the_first_command_that_looks_ends_an_expired_run(gated):
    manifest = gated.root / "wf" / "workflow.yaml"
    manifest.write_text(manifest.read_text().replace("timeout: 3d", "timeout: 1s"))
    run_id = gated.kit("run", "wf", "--as", "alice").stdout.split()[1]
    time.sleep(1.5)
    shown = gated.kit("show", run_id)
    assert shown.returncode == 0 and f"run {run_id}: rejected" in shown.stdout
    assert "expired" in shown.stderr


def test_resume_acts_as_someone_and_checks_their_entitlements(gated):
    manifest = gated.root / "wf" / "workflow.yaml"
    manifest.write_text(
        manifest.read_text().replace(
            "outputs: {applied: string}", "outputs: {applied: string}\n    requires: [cases:read]"
        )
    )
    run_id = gated.kit("run", "wf", "--as", "alice").stdout.split()[1]
    assert gated.kit("approve", run_id, "review", "--as", "bob").returncode == 0
    for who in ("mallory", "carol"):
        denied = gated.kit("resume", run_id, "--as", who)
        assert denied.returncode == 4 and "requires cases:read" in denied.stderr and "'apply'" in denied.stderr
    statuses = {s["step_id"]: s["status"] for s in gated.sql("select step_id, status from steps")}
    assert statuses["apply"] == "pending"
    denials = gated.sql("select actor from audit where action = 'run.denied' order by seq")
    assert [d["actor"] for d in denials] == ["mallory", "carol"]
    assert gated.kit("resume", run_id, "--as", "bob").returncode == 0
    resumed = gated.sql("select actor from audit where action = 'run.resumed'")
    assert resumed == [{"actor": "bob"}]


def test_an_approval_nobody_can_give_and_a_bad_kit_yaml_are_refused_with_their_lines(gated):
    manifest = gated.root / "wf" / "workflow.yaml"
    good = manifest.read_text()
    manifest.write_text(good.replace("approvers: [reviewer]", "approvers: [auditor]"))
    result = gated.kit("run", "wf", "--as", "alice")
    assert result.returncode == 2 and "workflow.yaml:" in result.stderr and "holds the role 'auditor'" in result.stderr
    manifest.write_text(good.replace("  apply:", "  params:"))
    named = gated.kit("run", "wf", "--as", "alice")
    assert named.returncode == 2 and "may not be named 'params'" in named.stderr

    kit_yaml = gated.root / "kit.yaml"
    manifest.write_text(good)
    kit_yaml.write_text(KIT_YAML + "aprovals: {self_approve: true}\n")
    typo = gated.kit("run", "wf", "--as", "alice")
    assert typo.returncode == 2 and "kit.yaml:11: aprovals: unknown key" in typo.stderr
    kit_yaml.write_text(KIT_YAML.replace("bob: [reviewer]", "bob: [reviewer, approver]"))
    undefined = gated.kit("run", "wf", "--as", "alice")
    assert undefined.returncode == 2 and "role 'approver' is not defined" in undefined.stderr
    assert "kit.yaml:4" in undefined.stderr
