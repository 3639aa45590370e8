"""`kit.explore()`: the ipywidgets app over the ledger, driven in pure Python the way a browser drives it
(setting widget values, clicking buttons), on real runs of the casework example and small workflows.

Each view is checked twice: what the live widgets show and what its static copy (the separate HTML
output a saved notebook keeps) holds must both carry the content.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
from types import SimpleNamespace

import ipywidgets as widgets
import pytest
from conftest import Project, copy_example

from kit.review.explorer import explore

WARM = ("--engine", "warm", "--workers", "1")
OFFLINE = {"OPENAI_API_KEY": "", "KIT_LLM_MODE": ""}
C1001 = "scenarios/casework/C-1001-missing-loyalty-discount.yaml"
C1004 = "scenarios/casework/C-1004-wrong-vat-france.yaml"


def run_id_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout.split()[1]  # "run <id> ..."


@pytest.fixture(scope="module")
def casework(tmp_path_factory):
    """The example with a run waiting for review, a failed run, two scenario runs and a replay."""
    project = Project(tmp_path_factory.mktemp("explorer"))
    copy_example(project.root, scenarios=True)
    waiting = project.kit("run", "notebooks/casework", "-p", "case_id=C-1001", "--as", "alice", *WARM)
    assert waiting.returncode == 3, waiting.stderr
    failed = project.kit("run", "notebooks/casework", "-p", "case_id=C-0000", "--as", "alice", *WARM)
    assert failed.returncode == 1, failed.stderr
    tested = project.kit("test", C1001, C1004, env=OFFLINE)
    assert tested.returncode == 0, tested.stdout
    scenario_run = project.sql(
        "select run_id from runs where scenario_id = 'casework/C-1004-wrong-vat-france' order by run_id desc limit 1"
    )[0]["run_id"]
    replayed = project.kit("replay", C1004, "--baseline", scenario_run, "--format", "json", env=OFFLINE)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    replay = json.loads(replayed.stdout)["scenarios"][0]
    return SimpleNamespace(
        project=project,
        root=project.root,
        waiting=run_id_of(waiting),
        failed=run_id_of(failed),
        replay=replay,
    )


def walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def live_text(app) -> str:
    """What the live app shows: its HTML, its buttons' and its choices' text."""
    parts = []
    for w in walk(app.widget):
        if isinstance(w, widgets.HTML):
            parts.append(w.value)
        elif isinstance(w, widgets.Button):
            parts.append(w.description)
        elif isinstance(w, widgets.Dropdown):
            parts.append(str(w.label))
    return html.unescape("\n".join(parts))


def shows(app, *texts: str) -> None:
    """Each text is in the live app and in its static copy."""
    live, static = live_text(app), html.unescape(app.static_html)
    for text in texts:
        assert text in live, f"{text!r} not in the live view {app.view}"
        assert text in static, f"{text!r} not in the static copy of {app.view}"


def row(app, css_class: str, starts: str) -> widgets.Button:
    (found,) = [b for b in app.find(css_class) if b.description.startswith(starts)]
    return found


def test_kit_explore_is_imported_on_first_use_only():
    code = (
        "import sys, kit\n"
        "assert 'ipywidgets' not in sys.modules and 'kit.review.explorer' not in sys.modules\n"
        "assert callable(kit.explore) and 'ipywidgets' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_runs_table_lists_runs_newest_first_and_filters_them(casework):
    app = explore(as_="bob", project=casework.root)
    assert app.view == "runs" and app.message == ""
    runs = casework.project.sql("select run_id, status from runs order by run_id desc")
    rows = app.find("kit-run-row")
    assert [r.description.split()[0] for r in rows] == [r["run_id"] for r in runs]
    shows(app, *[r["run_id"] for r in runs])
    assert app.latest_run() == runs[0]["run_id"]

    status = app.find("kit-filter-status")[0]
    assert {"failed", "succeeded", "waiting"} <= {v for _, v in status.options}
    status.value = "failed"
    assert [r.description.split()[0] for r in app.find("kit-run-row")] == [casework.failed]
    shows(app, casework.failed)
    assert "filtered by status failed" in app.static_html  # live, the filters say it themselves
    assert casework.waiting not in app.static_html
    status.value = ""

    app.find("kit-filter-scenario")[0].value = "casework/C-1004-wrong-vat-france"
    listed = {r.description.split()[0] for r in app.find("kit-run-row")}
    assert listed and casework.waiting not in listed and casework.replay["current_run"] in listed
    app.find("kit-filter-scenario")[0].value = "-"
    assert {r.description.split()[0] for r in app.find("kit-run-row")} == {casework.waiting, casework.failed}
    app.find("kit-filter-scenario")[0].value = ""

    app.find("kit-filter-since")[0].value = "2999-01-01"
    assert app.find("kit-run-row") == [] and "no runs match these filters" in app.static_html
    app.find("kit-filter-since")[0].value = "yesterday"
    assert "'yesterday' is not a date or time" in app.message and app.find("kit-filter-since")
    app.open_runs()
    assert len(app.find("kit-run-row")) == len(runs) and app.message == ""


def test_a_run_shows_its_graph_and_timeline_and_a_click_opens_a_step_in_both(casework):
    app = explore(as_="bob", project=casework.root)
    row(app, "kit-run-row", casework.waiting).click()
    assert app.view == "run" and app.run_id == casework.waiting and app.message == ""
    steps = [b.description.split()[0] for b in app.find("kit-step-row")]
    assert steps[0] == "fetch_case" and steps[-2:] == ["review", "register_case"]  # the graph's order
    assert set(steps) == {
        "fetch_case",
        "check_policy",
        "retrieve_similar",
        "summarize",
        "recommend",
        "draft_note",
        "review",
        "register_case",
    }
    shows(app, f"run {casework.waiting}", "waiting for a decision until", "C-1001", *steps)
    assert app.static_html.count("<svg") == 2 and "<script" not in app.static_html
    graph = app.find("kit-step-graph")[0].value

    row(app, "kit-step-row", "fetch_case").click()
    assert app.view == "step" and app.step_id == "fetch_case"
    assert [b.description.split()[0] for b in app.find("kit-selected")] == ["fetch_case"]
    assert app.find("kit-step-graph")[0].value != graph  # the selection is drawn in the graph
    assert "stroke: #000000" in app.find("kit-timeline")[0].value  # and outlined in the timeline
    shows(
        app,
        "parameters",
        "parameter case_id",  # the input, from the run's own manifest
        "outputs",
        "4 row(s) × 14 column(s)",  # the table output's preview, from its verified object
        "order_id",
        "O-50262",
        '"customer_name": "Aoife Dubois"',  # a JSON output
        "spans",
        "cell 3",
        "executed notebook",
        f".kit/runs/{casework.waiting}/fetch_case.ipynb",
    )

    app.find("kit-render-notebook")[0].click()
    notebook = app.find("kit-notebook")[0].value
    assert app.message == "" and "kit run" in notebook and "read_csv_auto" in notebook
    assert "<script" not in notebook and "<script" not in app.static_html
    assert notebook in app.static_html

    app.find("kit-back")[-1].click()  # back to the run
    assert app.view == "run" and app.find("kit-selected") == []


def test_a_failed_step_shows_its_error_and_failing_cell(casework):
    app = explore(as_="bob", project=casework.root)
    app.open_run(casework.failed)
    shows(app, "failed", "skipped")
    row(app, "kit-step-row", "fetch_case").click()
    step = casework.project.sql(
        f"select error_type, error_message, error_cell, error_source from steps where run_id = '{casework.failed}' "
        "and step_id = 'fetch_case'"
    )[0]
    shows(app, f"error in cell {step['error_cell']}", step["error_type"], step["error_source"].splitlines()[0])


def test_llm_calls_show_model_tokens_latency_how_answered_and_the_messages(casework):
    app = explore(as_="bob", project=casework.root)
    app.open_step("summarize", casework.waiting)
    (call,) = app.find("kit-llm-row")
    assert "casework-summarizer" in call.description and "live" in call.description
    call.click()
    assert app.view == "llm" and app.llm_span and app.message == ""
    attributes = casework.project.sql(
        f"select attributes from spans where run_id = '{casework.waiting}' and kind = 'llm'"
    )[0]["attributes"]
    shows(
        app,
        "casework-summarizer",
        f"{attributes['gen_ai.usage.input_tokens']}",
        f"{attributes['gen_ai.usage.output_tokens']}",
        "live",
        "You are a careful support analyst",  # the request, read from the call's artifact
        "assistant (reply)",
        "Case C-1001 (category missing_discount)",  # the answer
    )

    app.find("kit-llm-scope")[0].value = ""  # every run's calls
    modes = {b.description.split()[-1] for b in app.find("kit-llm-row")}
    assert modes == {"live", "replayed"}  # the scenarios' calls came from their recordings
    assert app.view == "llm" and app.message == "" and not app.find("kit-selected")


def test_scenarios_show_the_verdict_matrix_and_expected_beside_actual(casework):
    app = explore(as_="bob", project=casework.root)
    app.find("kit-nav")[0].value = "scenarios"
    assert app.view == "scenarios" and app.message == ""
    shows(app, "casework/C-1001-missing-loyalty-discount", "casework/C-1004-wrong-vat-france")
    assert app.static_html.count("<svg") == 1
    app.find("kit-scenario-select")[0].value = "casework/C-1001-missing-loyalty-discount"
    comparisons = casework.project.sql(
        "select expectation, comparator, verdict from comparisons where scenario_id = "
        "'casework/C-1001-missing-loyalty-discount'"
    )
    shows(app, "expected", "actual", "apply_discount", "C-1001-missing-loyalty-discount.yaml:")
    shows(app, *{c["expectation"] for c in comparisons}, *{c["comparator"] for c in comparisons})
    run_choice = app.find("kit-scenario-run-select")[0]
    assert run_choice.value and run_choice.value in app.static_html


def test_replays_show_baseline_current_and_expected_side_by_side(casework):
    app = explore(as_="bob", project=casework.root)
    app.open_replays()
    (replay_row,) = app.find("kit-replay-row")
    assert casework.replay["baseline_run"] in replay_row.description
    replay_row.click()
    assert app.replay_run == casework.replay["baseline_run"] and app.message == ""
    keys = [e["expectation"] for e in casework.replay["expectations"]]
    shows(app, "expected", "baseline", "current", "6 still-passing", *keys, "wrong_tax")
    app.find("kit-open-run")[0].click()
    assert app.view == "run" and app.run_id == casework.replay["baseline_run"]


def approve_button(app, run_id: str) -> widgets.Button:
    (pending,) = [r for r in app.find("kit-approval-row") if run_id in r.children[0].value]
    (button,) = [b for b in pending.children if "kit-approve" in b._dom_classes]
    return button


def test_approving_in_the_app_goes_through_the_policy_and_the_audit(casework):
    project = casework.project
    settings = casework.root / "kit.yaml"  # dana may both start a run and review one, but not her own
    settings.write_text(
        settings.read_text().replace("  bob: [reviewer]", "  bob: [reviewer]\n  dana: [analyst, reviewer]")
    )
    started = project.kit("run", "notebooks/casework", "-p", "case_id=C-1002", "--as", "dana", *WARM)
    assert started.returncode == 3, started.stderr
    run_id = run_id_of(started)

    starter = explore(as_="dana", project=casework.root)
    starter.find("kit-nav")[0].value = "approvals"
    approve_button(starter, run_id).click()
    assert starter.message.startswith("refused: 'dana' started this run and may not approve it")
    shows(starter, "refused: 'dana' started this run")
    assert starter.last_error is None

    analyst = explore(as_="alice", project=casework.root)
    analyst.open_approvals()
    approve_button(analyst, run_id).click()
    assert "refused: 'alice' may not decide this approval: it needs one of the roles reviewer" in analyst.message

    reviewer = explore(as_="bob", project=casework.root)
    reviewer.open_approvals()
    reviewer.find("kit-approval-comment")[0].value = "looked at the policy check"
    approve_button(reviewer, run_id).click()
    assert reviewer.message == f"review approved by bob in run {run_id}; continue: kit resume {run_id}"
    shows(reviewer, "review approved by bob")
    assert not [r for r in reviewer.find("kit-approval-row") if run_id in r.children[0].value]

    shown = project.kit("show", run_id, "--format", "json")
    steps = {s["step_id"]: s["status"] for s in json.loads(shown.stdout)["steps"]}
    assert steps["review"] == "approved"
    assert project.sql(f"select principal, decision, comment from approvals where run_id = '{run_id}'") == [
        {"principal": "bob", "decision": "approved", "comment": "looked at the policy check"}
    ]
    audit = project.sql(f"select actor, action from audit where subject = '{run_id}/review' order by seq")
    assert audit == [
        {"actor": "dana", "action": "approval.denied"},
        {"actor": "alice", "action": "approval.denied"},
        {"actor": "bob", "action": "approval.approved"},
    ]
    assert project.kit("audit", "verify").returncode == 0

    again = explore(as_="bob", project=casework.root)
    again.approve(run_id, "review")
    assert again.message.startswith("refused:") and "decisions are final" in again.message


def test_the_static_copy_is_its_own_display_output_and_follows_the_view(casework):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    app = explore(as_="bob", project=casework.root)
    with capture_output() as captured:
        app._ipython_display_()
        app.open_run(casework.failed)
    widget_output, static_output, *updates = captured.outputs
    assert "application/vnd.jupyter.widget-view+json" in widget_output.data
    assert "text/html" not in widget_output.data  # nbconvert would keep only the widget of a mixed output
    assert "kit-static" in static_output.data["text/html"]
    display_id = static_output.transient["display_id"]
    assert updates and all(u.update and u.transient["display_id"] == display_id for u in updates)
    assert casework.failed in updates[-1].data["text/html"] and updates[-1].data["text/html"] == app.static_html


def test_retries_and_cached_steps_are_visible(project):
    project.notebook(
        "flaky.ipynb",
        "fail_times: int = 1",
        """
        import kit, pathlib
        marker = pathlib.Path("../attempts.txt")  # outside the workflow's files, so the next run may reuse
        n = int(marker.read_text()) + 1 if marker.exists() else 1
        marker.write_text(str(n))
        if n <= fail_times:
            raise ConnectionError(f"flaky attempt {n}")
        kit.output("n", 7)
        """,
    )
    project.manifest(
        """
        workflow: flaky
        version: 1
        steps:
          flaky:
            notebook: flaky.ipynb
            outputs: {n: integer}
            retries: {attempts: 2, backoff: 0.05}
        """
    )
    first = project.kit("run", "wf", *WARM)
    second = project.kit("run", "wf", *WARM)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    app = explore(as_="bob", project=project.root)
    app.open_run(run_id_of(first))
    shows(app, "retried: 2 attempts")
    assert "attempt 2" in app.find("kit-timeline")[0].value
    app.open_step("flaky")
    shows(app, "ConnectionError")  # the first attempt's error stays on its span
    app.open_run(run_id_of(second))
    assert row(app, "kit-step-row", "flaky").description.split()[1] == "cached"
    shows(app, f"cached from {run_id_of(first)}")


def test_parameters_are_shown_redacted_as_recorded(project):
    project.notebook("use.ipynb", "api_token: str = ''\ncity: str = ''", "import kit\nkit.output('ok', city)")
    project.manifest(
        """
        workflow: secretive
        version: 1
        params:
          api_token: {type: string}
          city: {type: string}
        policy: {redact: ['*token*']}
        steps:
          use:
            notebook: use.ipynb
            inputs: {api_token: params.api_token, city: params.city}
            outputs: {ok: string}
        """
    )
    result = project.kit("run", "wf", "-p", "api_token=s3cr3t-abcdef", "-p", "city=Lyon", *WARM)
    assert result.returncode == 0, result.stderr
    app = explore(as_="bob", project=project.root)
    app.open_step("use", "last")
    shows(app, "parameter api_token", "[REDACTED]", "Lyon")
    assert "s3cr3t-abcdef" not in app.static_html and "s3cr3t-abcdef" not in live_text(app)


LOOP = """
import json, subprocess, sys
codes = []
for i in range(int(sys.argv[1])):
    done = subprocess.run([sys.executable, "-m", "kit.cli", "run", "wf", "-p", f"x={100 + i}", "--engine", "warm",
                           "--workers", "1"], capture_output=True, text=True)
    codes.append(done.returncode)
print(json.dumps(codes))
"""


def test_the_explorer_keeps_working_while_another_process_runs_workflows(chain):
    first = chain.kit("run", "wf", *WARM)
    assert first.returncode == 0, first.stderr
    app = explore(as_="bob", project=chain.root)
    loop = subprocess.Popen(
        [sys.executable, "-c", LOOP, "4"], cwd=chain.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    clicks, seen = 0, set()
    try:
        while loop.poll() is None or clicks < 5:
            app.refresh()
            rows = app.find("kit-run-row")
            seen.update(r.description.split()[0] for r in rows)
            rows[0].click()  # the newest run, perhaps still running
            assert app.view == "run", app.message
            app.find("kit-step-row")[-1].click()
            for view in ("llm", "scenarios", "replays", "approvals", "runs"):
                app.find("kit-nav")[0].value = view
                assert app.view == view and app.message == "", app.message
            assert app.last_error is None, app.message
            clicks += 1
    finally:
        out, err = loop.communicate(timeout=300)
    assert json.loads(out) == [0, 0, 0, 0], err
    statuses = chain.sql("select status, count(*) as n from runs group by status")
    assert statuses == [{"status": "succeeded", "n": 5}]
    assert chain.sql("select count(*) as n from steps where status <> 'succeeded'") == [{"n": 0}]
    app.refresh()
    assert len(app.find("kit-run-row")) == 5 and len(seen) >= 2 and clicks >= 5
