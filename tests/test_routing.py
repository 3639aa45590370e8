"""Routing by rule: `when:` on a step (DESIGN section 15), optional inputs, skips in scenarios.

Real kernels through the default engine; the bad-input checks run in-process (nothing starts).
"""

from __future__ import annotations

import html
import json
import textwrap

import pytest

RISK = "import kit\nkit.output('score', 0.9 if amount > 1000 else 0.2)\nkit.output('detail', {'level': 'high' if amount > 1000 else 'low'})"

MANIFEST = """
workflow: routed
version: 1.0.0
params:
  amount: {type: number}
  region: {type: string, default: eu}
steps:
  risk:
    notebook: risk.ipynb
    inputs: {amount: params.amount}
    outputs:
      score: number
      detail: {type: object, properties: {level: {type: string}}}
  auto:
    notebook: auto.ipynb
    when: "risk.score < 0.7"
    inputs: {score: risk.score}
    outputs: {action: string}
  manual:
    notebook: manual.ipynb
    when: "risk.score >= 0.7 && params.amount > 100"
    inputs: {amount: params.amount}
    after: [risk]
    outputs: {action: string}
  notify:
    notebook: notify.ipynb
    inputs: {action: manual.action}
    outputs: {sent: string}
  join:
    notebook: join.ipynb
    inputs:
      auto_action: {from: auto.action, optional: true}
      manual_action: {from: manual.action, optional: true}
    outputs: {final: string}
"""


def routed(project, manifest: str = MANIFEST):
    project.notebook("risk.ipynb", "amount: float = 0.0", RISK)
    project.notebook("auto.ipynb", "score: float = 0.0", "import kit\nkit.output('action', f'auto@{score}')")
    project.notebook("manual.ipynb", "amount: float = 0.0", "import kit\nkit.output('action', f'manual@{amount}')")
    project.notebook("notify.ipynb", "action: str = ''", "import kit\nkit.output('sent', 'told ' + action)")
    project.notebook(
        "join.ipynb",
        "auto_action: str | None = None\nmanual_action: str | None = None",
        "import kit\nkit.output('final', repr((auto_action, manual_action)))",
    )
    project.manifest(manifest)
    return project


def _steps(project, run_id: str) -> dict[str, dict]:
    rows = project.sql(f"select step_id, status, reason, attempts from steps where run_id = '{run_id}'")
    return {r["step_id"]: r for r in rows}


def _final(project, run_id: str):
    rows = project.sql(f"select value from outputs where run_id = '{run_id}' and step_id = 'join'")
    return rows[0]["value"]


def test_a_small_amount_takes_the_automatic_branch(project):
    routed(project)
    result = project.kit("run", "wf", "-p", "amount=250")
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[1]
    steps = _steps(project, run_id)
    assert steps["risk"]["status"] == "succeeded" and steps["auto"]["status"] == "succeeded"
    assert steps["manual"]["status"] == "skipped"
    assert steps["manual"]["reason"] == (
        "when risk.score >= 0.7 && params.amount > 100 was false: risk.score=0.2, params.amount=250"
    )
    assert steps["manual"]["attempts"] == 0  # no kernel ran
    assert steps["notify"]["status"] == "skipped" and steps["notify"]["reason"] == "upstream manual skipped"
    assert steps["join"]["status"] == "succeeded"
    assert _final(project, run_id) == "('auto@0.2', None)"
    assert project.sql(f"select status from runs where run_id = '{run_id}'")[0]["status"] == "succeeded"
    assert not (project.root / ".kit" / "runs" / run_id / "manual.ipynb").exists()

    shown = project.kit("show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "when risk.score >= 0.7 && params.amount > 100 was false: risk.score=0.2, params.amount=250" in shown.stdout
    assert "upstream manual skipped" in shown.stdout
    assert "step manual skipped by rule: when risk.score >= 0.7" in shown.stdout

    # the review layer: the report and the explorer show the skip and its reason
    report = project.kit("report", run_id, "-o", "report.html")
    assert report.returncode == 0, report.stderr
    page = html.unescape((project.root / "report.html").read_text())
    assert "skipped" in page and "upstream manual skipped" in page and "params.amount=250" in page
    from kit.review.explorer import explore

    app = explore(project=project.root)
    app.open_run(run_id)
    static = html.unescape(app.static_html)
    assert "skipped" in static and "upstream manual skipped" in static


def test_a_large_amount_takes_the_manual_branch_and_a_cached_rerun_routes_the_same(project):
    routed(project)
    result = project.kit("run", "wf", "-p", "amount=5000")
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[1]
    steps = _steps(project, run_id)
    assert steps["auto"]["status"] == "skipped"
    assert steps["auto"]["reason"] == "when risk.score < 0.7 was false: risk.score=0.9"
    assert steps["manual"]["status"] == "succeeded" and steps["notify"]["status"] == "succeeded"
    assert steps["join"]["status"] == "succeeded"
    assert _final(project, run_id) == "(None, 'manual@5000')"
    assert "when risk.score < 0.7 was false: risk.score=0.9" in project.kit("show", run_id).stdout

    again = project.kit("run", "wf", "-p", "amount=5000")
    assert again.returncode == 0, again.stderr
    second = again.stdout.split()[1]
    steps = _steps(project, second)
    assert {s: r["status"] for s, r in steps.items()} == {
        "risk": "cached",
        "auto": "skipped",
        "manual": "cached",
        "notify": "cached",
        "join": "cached",
    }
    assert steps["auto"]["reason"] == "when risk.score < 0.7 was false: risk.score=0.9"


def test_a_non_optional_input_from_a_skipped_step_skips_the_consumer(project):
    manifest = MANIFEST.replace(
        "      manual_action: {from: manual.action, optional: true}", "      manual_action: manual.action"
    )
    routed(project, manifest)
    result = project.kit("run", "wf", "-p", "amount=250")
    assert result.returncode == 0, result.stderr
    steps = _steps(project, result.stdout.split()[1])
    assert steps["join"]["status"] == "skipped"
    assert steps["join"]["reason"] == "input manual_action needs manual.action, and manual was skipped"


def test_field_access_into_an_object_output_and_param_strings(project):
    manifest = MANIFEST.replace(
        'when: "risk.score < 0.7"', "when: \"risk.detail.level == 'low' && params.region in ['eu', 'uk']\""
    )
    routed(project, manifest)
    result = project.kit("run", "wf", "-p", "amount=5000", "-p", "region=eu")
    assert result.returncode == 0, result.stderr
    steps = _steps(project, result.stdout.split()[1])
    assert steps["auto"]["status"] == "skipped"
    assert steps["auto"]["reason"] == (
        "when risk.detail.level == 'low' && params.region in ['eu', 'uk'] was false: "
        "risk.detail.level='high', params.region='eu'"
    )


# ---- bad input: exit 2, the file and the line of the `when:` ------------------------------------


def _refused(project, manifest: str, *expected: str) -> str:
    routed(project, manifest)
    result = project.cli("run", "wf", "-p", "amount=5")
    assert result.exit_code == 2, result.output
    path = str(project.root / "wf" / "workflow.yaml")
    for text in expected:
        assert text in result.output, result.output
    assert path in result.output, result.output
    assert not (project.root / ".kit" / "runs").exists() or not any((project.root / ".kit" / "runs").iterdir())
    return result.output


def _line_of(text: str, needle: str) -> int:
    lines = textwrap.dedent(text).lstrip().splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


def test_an_expression_that_does_not_parse(project):
    manifest = MANIFEST.replace('when: "risk.score < 0.7"', 'when: "risk.score < "')
    out = _refused(project, manifest, "steps.auto.when", "does not parse")
    line = _line_of(manifest, 'when: "risk.score < "')
    assert f"workflow.yaml:{line}:" in out


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("rsk.score < 0.7", "unknown name 'rsk'"),
        ("risk.scor < 0.7", "step risk has no output 'scor' (its outputs: score, detail)"),
        ("params.amout > 1", "no parameter 'amout' (parameters: amount, region)"),
        ("risk.detail.levl == 'x'", "no field 'levl'"),
    ],
)
def test_an_unknown_name(project, expression, expected):
    manifest = MANIFEST.replace('when: "risk.score < 0.7"', f'when: "{expression}"')
    out = _refused(project, manifest, "steps.auto.when", expected)
    assert f"workflow.yaml:{_line_of(manifest, expression)}:" in out


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("risk.score < 'high'", "cannot compare number with string"),
        ("params.region > 3", "cannot compare string with integer"),
        ("params.amount && true", "&& expects boolean operands, found number"),
        ("risk.score + 1", "a when: must be a boolean, found number"),
        ("!params.region", "! expects a boolean, found string"),
    ],
)
def test_a_wrong_type(project, expression, expected):
    manifest = MANIFEST.replace('when: "risk.score < 0.7"', f'when: "{expression}"')
    out = _refused(project, manifest, "steps.auto.when", expected)
    assert f"workflow.yaml:{_line_of(manifest, expression)}:" in out


def test_a_step_that_is_not_upstream(project):
    manifest = MANIFEST.replace('when: "risk.score < 0.7"', "when: \"manual.action == 'x'\"")
    _refused(project, manifest, "steps.auto.when", "manual is not upstream of auto")


def test_a_construct_outside_the_supported_subset_is_refused_by_name(project):
    manifest = MANIFEST.replace('when: "risk.score < 0.7"', 'when: "[1, 2].exists(x, x > 1)"')
    _refused(project, manifest, "steps.auto.when", "not supported", "exists")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "inputs: {amount: params.amount}\n    after: [risk]",
            "inputs: {amount: {from: params.amount, optional: true}}\n    after: [risk]",
            "a parameter is always there: optional applies to STEP.OUTPUT inputs",
        ),
        (
            "manual_action: {from: manual.action, optional: true}",
            "manual_action: {from: manual.action, optional: maybe}",
            "steps.join.inputs.manual_action.optional",
        ),
        (
            "manual_action: {from: manual.action, optional: true}",
            "manual_action: {from: manual.action, optinal: true}",
            "unknown key",
        ),
        (
            "inputs: {action: manual.action}",
            "inputs: {action: {from: manual.action, optional: true}}",
            "notify.ipynb annotates action: str, which does not admit None",
        ),
    ],
)
def test_optional_on_something_weird(project, old, new, expected):
    assert old in MANIFEST
    manifest = MANIFEST.replace(old, new)
    _refused(project, manifest, expected)


# ---- scenarios expect a skip ----------------------------------------------------------------------


def _scenario(project, name: str, amount: int, expect: str):
    path = project.root / "scenarios" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"scenario: routed/{name}\nworkflow: routed\nparams: {{amount: {amount}}}\nexpect:\n"
        + textwrap.indent(textwrap.dedent(expect).strip(), "  ")
        + "\n"
    )
    return path


def test_scenarios_expect_a_step_to_be_skipped_or_to_run(project):
    routed(project)
    good = _scenario(
        project,
        "small",
        250,
        """
        manual: {status: skipped}
        notify: {status: skipped}
        auto: {status: succeeded}
        join.final: {equals: "('auto@0.2', None)"}
        """,
    )
    passed = project.kit("test", str(good))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    rows = project.sql("select expectation, comparator, expected, actual, verdict from comparisons order by line")
    assert rows[0] == {
        "expectation": "manual",
        "comparator": "status",
        "expected": "skipped",
        "actual": "skipped",
        "verdict": "pass",
    }

    bad = _scenario(project, "wrong", 250, "auto: {status: skipped}\nmanual: {status: succeeded}")
    failed = project.kit("test", str(bad))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    out = failed.stdout + failed.stderr
    assert "step auto was expected skipped, but it succeeded" in out
    assert "step manual was expected succeeded, but it was skipped: when risk.score >= 0.7" in out
    verdicts = project.sql("select expectation, verdict, detail from comparisons where scenario_id = 'routed/wrong'")
    assert {r["expectation"]: r["verdict"] for r in verdicts} == {"auto": "fail", "manual": "fail"}

    # replay: the same routing on the baseline bundle; a rule that changes is a regression
    baseline = project.sql("select run_id from runs where scenario_id = 'routed/small'")[0]["run_id"]
    project.manifest(MANIFEST.replace('when: "risk.score >= 0.7 && params.amount > 100"', 'when: "true"'))
    replayed = project.kit("replay", str(good), "--baseline", baseline, "--format", "json")
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    classes = {
        e["expectation"]: e["classification"] for e in json.loads(replayed.stdout)["scenarios"][0]["expectations"]
    }
    assert classes["manual"] == "regressed" and classes["auto"] == "still-passing"


def test_a_status_expectation_on_an_unknown_step_or_status_is_refused(project):
    routed(project)
    bad = _scenario(project, "typo", 250, "manul: {status: skipped}")
    result = project.kit("test", str(bad))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unknown step 'manul'" in result.stdout + result.stderr
    worse = _scenario(project, "status", 250, "manual: {status: skiped}")
    result = project.kit("test", str(worse))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "status.yaml:5" in result.stdout + result.stderr and "skiped" in result.stdout + result.stderr


# ---- durable: resume keeps the decision -----------------------------------------------------------

KIT_YAML = """
principals:
  alice: [analyst]
  bob: [reviewer]
roles:
  analyst: []
  reviewer: []
approvals: {self_approve: false}
"""


def test_resume_after_an_approval_keeps_the_recorded_skip(project):
    (project.root / "kit.yaml").write_text(KIT_YAML)
    manifest = MANIFEST + textwrap.indent(
        textwrap.dedent(
            """
            review:
              approval: {approvers: [reviewer]}
              after: [join]
            """
        ),
        "  ",
    )
    routed(project, manifest)
    started = project.kit("run", "wf", "-p", "amount=250", "--as", "alice")
    assert started.returncode == 3, started.stdout + started.stderr
    run_id = started.stdout.split()[1]
    assert _steps(project, run_id)["manual"]["status"] == "skipped"

    # the rule changes before the run goes on: the recorded decision stands
    project.manifest(manifest.replace('when: "risk.score >= 0.7 && params.amount > 100"', 'when: "true"'))
    assert project.kit("approve", run_id, "review", "--as", "bob").returncode == 0
    resumed = project.kit("resume", run_id, "--as", "bob")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    steps = _steps(project, run_id)
    assert steps["manual"]["status"] == "skipped" and steps["manual"]["attempts"] == 0
    assert steps["manual"]["reason"].startswith("when risk.score >= 0.7 && params.amount > 100 was false")
    assert steps["notify"]["status"] == "skipped" and steps["review"]["status"] == "approved"
    assert project.sql(f"select status from runs where run_id = '{run_id}'")[0]["status"] == "succeeded"


def test_a_when_that_cannot_be_evaluated_fails_the_step(project):
    project.notebook("a.ipynb", "x: int = 0", "import kit\nkit.output('info', {})")
    project.notebook("b.ipynb", "x: int = 0", "import kit\nkit.output('done', True)")
    project.manifest(
        """
        workflow: undecidable
        version: 1
        steps:
          a: {notebook: a.ipynb, outputs: {info: object}}
          b: {notebook: b.ipynb, when: "a.info.level == 'high'", after: [a], outputs: {done: boolean}}
        """
    )
    result = project.kit("run", "wf")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "step b failed: ConditionError: when a.info.level == 'high': no such member" in result.stderr
    (row,) = project.sql("select status, error_type, attempts from steps where step_id = 'b'")
    assert row == {"status": "failed", "error_type": "ConditionError", "attempts": 1}
    assert not list((project.root / ".kit" / "runs").glob("*/b.ipynb"))  # no kernel ran


def test_resume_after_a_kill_keeps_the_recorded_skip(project):
    import os
    import signal
    import subprocess
    import sys
    import time

    routed(project)
    project.notebook(
        "auto.ipynb",
        "score: float = 0.0",
        "import time, pathlib\npathlib.Path('started').write_text('1')\ntime.sleep(float(open('delay').read()))",
        "import kit\nkit.output('action', f'auto@{score}')",
    )
    (project.root / "wf" / "delay").write_text("600")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kit.cli", "run", "wf", "-p", "amount=250"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started, deadline = project.root / "wf" / "started", time.monotonic() + 120
    while not started.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the auto step never started"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_id = project.sql("select run_id from runs")[0]["run_id"]
    assert _steps(project, run_id)["manual"]["status"] == "skipped"  # decided and recorded before the kill

    project.manifest(MANIFEST.replace('when: "risk.score >= 0.7 && params.amount > 100"', 'when: "true"'))
    (project.root / "wf" / "delay").write_text("0")
    resumed = project.kit("resume", run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    steps = _steps(project, run_id)
    assert steps["auto"]["status"] == "succeeded" and steps["join"]["status"] == "succeeded"
    assert steps["manual"]["status"] == "skipped" and steps["manual"]["attempts"] == 0
    assert steps["manual"]["reason"].endswith("was false: risk.score=0.2, params.amount=250")
    assert steps["notify"]["status"] == "skipped"
    assert _final(project, run_id) == "('auto@0.2', None)"


# ---- the CEL subset, in-process -------------------------------------------------------------------

SCOPE_PARAMS = {"amount": {"type": "number"}, "n": {"type": "integer"}, "region": {"type": "string"}}
SCOPE_OUTPUTS = {
    "risk": {
        "score": "number",
        "tags": {"type": "array", "items": {"type": "string"}},
        "detail": {"type": "object", "properties": {"level": {"type": "string"}}, "required": ["level", "note"]},
        "extra": "object",
    }
}
VALUES = {
    "params": {"amount": 250, "n": 3, "region": "eu"},
    "risk": {"score": 0.25, "tags": ["vip", "eu"], "detail": {"level": "low", "note": "x"}, "extra": {"k": 1}},
}


@pytest.mark.parametrize(
    ("expression", "verdict"),
    [
        ("params.n > 2.5", True),  # an int meets a double: promoted
        ("params.amount == 250", True),  # a number given as 250 is a double
        ("params.n * 2.0 > params.amount", False),
        ("params.n % 2 == 1 && -params.n < 0", True),
        ("'vip' in risk.tags && size(risk.tags) == 2 && risk.tags[1] == 'eu'", True),
        ("'k' in risk.extra && has(risk.extra.k) && !has(risk.extra.z)", True),
        ("has(risk.detail.note) && risk.detail.level.startsWith('lo')", True),
        ("params.region.matches('^e') ? risk.score < 0.5 : false", True),
        ("int(params.amount) + 1 == 251 && string(params.n) == '3' && double(params.n) == 3.0", True),
        ("risk.score >= 0.7 || params.region != 'eu'", False),
    ],
)
def test_the_supported_subset_evaluates(expression, verdict):
    from kit.spec.conditions import Scope, compile_condition

    condition = compile_condition(expression, Scope("s", SCOPE_PARAMS, SCOPE_OUTPUTS, ["later"]))
    assert condition.evaluate(VALUES)[0] is verdict


def test_the_reason_names_every_value_the_condition_read():
    from kit.spec.conditions import Scope, compile_condition

    condition = compile_condition(
        "risk.detail.level == 'high' || params.amount > 1000", Scope("s", SCOPE_PARAMS, SCOPE_OUTPUTS)
    )
    verdict, seen = condition.evaluate(VALUES)
    assert not verdict
    assert condition.reason(seen) == (
        "when risk.detail.level == 'high' || params.amount > 1000 was false: risk.detail.level='low', params.amount=250"
    )
