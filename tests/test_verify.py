"""`kit verify`: scenarios, notebooks, paths, secrets and boundary cases of one bundle id, recorded
in the ledger and in an in-toto record (DESIGN section 12).

The end-to-end tests run the real CLI on small workflows with few generated cases; the
casework example is verified once. The scan, the path heuristic, the classification of
boundary runs and shrinking are also tested directly, without kernels.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import Project, copy_example, key_pair

from kit.bundles import attestation
from kit.errors import InvalidInput
from kit.verification.boundary import BoundaryCase, BoundaryCheck, classify
from kit.verification.secret_scan import scan_bundle, scan_line
from kit.verification.verify import outside_bundle, path_literals

PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----"


def _output(result) -> str:
    return result.stdout + result.stderr


def _demo(project: Project, body: str, outputs: str = "{greeting: string}", expected: str | None = "hello x") -> None:
    """A one-step workflow `demo` with a string parameter `name`, and (unless `expected` is None) one scenario."""
    project.notebook("a.ipynb", "name: str = 'x'", "import kit\n" + textwrap.dedent(body))
    project.manifest(
        f"""
        workflow: demo
        version: 1.0.0
        params:
          name: {{type: string, default: x}}
        steps:
          a:
            notebook: a.ipynb
            inputs: {{name: params.name}}
            outputs: {outputs}
        """
    )
    if expected is not None:
        scenario = project.root / "scenarios" / "demo" / "hello.yaml"
        scenario.parent.mkdir(parents=True, exist_ok=True)
        scenario.write_text(
            f"scenario: demo/hello\nworkflow: demo\nparams: {{name: x}}\nexpect:\n  a.greeting: {{equals: {expected}}}\n"
        )


def _record(project: Project, verification_id: str | None = None) -> tuple[Path, dict]:
    rows = project.sql("select verification_id, record_path from verifications order by verification_id")
    row = rows[-1] if verification_id is None else next(r for r in rows if r["verification_id"] == verification_id)
    path = Path(row["record_path"])
    return path, json.loads(path.read_text())


# ---- end to end -----------------------------------------------------------------


def test_the_casework_example_verifies(project: Project):
    from kit.bundles.lock import compute_lock
    from kit.spec.manifest import load_workflow

    copy_example(project.root, scenarios=True)
    result = project.kit("verify", "notebooks/casework", "--as", "alice", "--examples", "4")
    assert result.returncode == 0, _output(result)
    assert "8/8 scenarios passed" in result.stdout and "verified" in result.stdout

    lock = compute_lock(load_workflow(project.root / "notebooks" / "casework" / "workflow.yaml"))
    [row] = project.sql("select * from verifications")
    assert row["verdict"] == "verified" and row["bundle_id"] == lock["bundle_id"] and row["env"] == "dev"
    assert row["principal"] == "alice" and row["signed"] is False
    path, envelope = _record(project)
    assert path.parent.name == lock["bundle_id"] and str(path) in result.stdout
    statement = attestation.statement_of(envelope)
    assert attestation.record_digest(envelope) == row["record_digest"]
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert attestation.bundle_id_of(statement) == lock["bundle_id"]
    assert attestation.files_of(statement) == lock["files"]

    predicate = statement["predicate"]
    scenarios = predicate["checks"]["scenarios"]["scenarios"]
    assert len(scenarios) == 8 and all(
        s["verdict"] == "pass" and s["bundle_id"] == lock["bundle_id"] for s in scenarios
    )
    assert all(s["llm_mode"] == "replay" and len(s["recordings"]["sha256"]) == 64 for s in scenarios)
    assert {e["comparator"] for s in scenarios for e in s["expectations"]} >= {"equals", "approx", "table"}
    assert predicate["evals"] == {"pass_rate": 1.0} and predicate["environment"] == "dev"
    assert predicate["runtime"]["kit_version"] and predicate["runtime"]["python_version"]
    boundary = predicate["checks"]["boundary"]
    assert {c["verdict"] for c in boundary["cases"]} <= {"succeeded", "failed"}
    assert {"", 0} <= {v for c in boundary["cases"] for v in c["params"].values() if not isinstance(v, dict)}

    runs = project.sql("select distinct scenario_id, principal from runs where scenario_id = 'verify:boundary'")
    assert runs == [{"scenario_id": "verify:boundary", "principal": "alice"}]
    audit = project.sql("select action, subject from audit where action like 'bundle.%'")
    assert audit == [{"action": "bundle.verified", "subject": lock["bundle_id"]}]


def test_a_broken_expectation_fails_naming_the_scenario(project: Project):
    _demo(project, "kit.output('greeting', 'hello ' + name)", expected="hello y")
    result = project.kit("verify", "wf", "--examples", "0")
    assert result.returncode == 1, _output(result)
    assert "scenario demo/hello: a.greeting [equals] fail" in result.stdout
    assert "NOT verified" in result.stdout
    [row] = project.sql("select verdict, checks from verifications")
    assert row["verdict"] == "failed" and row["checks"]["scenarios"]["passed"] is False
    assert project.sql("select action from audit where action like 'bundle.%'") == [
        {"action": "bundle.verification_failed"}
    ]


def test_an_output_of_the_wrong_type_on_an_empty_string_names_the_input(project: Project):
    _demo(
        project,
        """
        kit.output("greeting", "hello " + name)
        kit.output("length", len(name) if name else "empty")
        """,
        outputs="{greeting: string, length: integer}",
    )
    result = project.kit("verify", "wf", "--examples", "3")
    assert result.returncode == 1, _output(result)
    assert "boundary case {name: ''}: step a: OutputError: output 'length' must be integer" in result.stdout
    _, envelope = _record(project)
    failing = attestation.statement_of(envelope)["predicate"]["checks"]["boundary"]["failing_case"]
    assert failing["params"] == {"name": ""} and failing["verdict"] == "violation"


def test_a_planted_private_key_fails_the_secret_scan_naming_file_and_line(project: Project):
    _demo(project, "kit.output('greeting', 'hello ' + name)")
    (project.root / "wf" / "data").mkdir()
    (project.root / "wf" / "data" / "notes.txt").write_text(f"notes\n\n{PRIVATE_KEY}\nb3BlbnNzaC1rZXk=\n")
    result = project.kit("verify", "wf", "--examples", "0")
    assert result.returncode == 1, _output(result)
    assert "secret in the bundle: data/notes.txt: line 3: a private key block" in result.stdout
    assert "scenarios  ok" in result.stdout


def test_a_signed_record_checks_with_its_key_and_not_with_another(project: Project, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys")
    signing, _ = key_pair(keys, "team")
    _, other_public = key_pair(keys, "other")
    _demo(project, "kit.output('greeting', 'hello ' + name)")
    result = project.kit("verify", "wf", "--examples", "0", "--sign", str(signing))
    assert result.returncode == 0, _output(result)
    assert "(signed)" in result.stdout
    _, envelope = _record(project)
    keyid = attestation.check_signature(envelope, [keys / "team.pub"])
    assert keyid == envelope["signatures"][0]["keyid"] and len(keyid) == 64
    assert project.sql("select signed from verifications") == [{"signed": True}]
    with pytest.raises(attestation.AttestationError, match="none of them trusted"):
        attestation.check_signature(envelope, [other_public])
    other_signing = keys / "other.key"
    both = attestation.countersigned(envelope, other_signing)
    assert len(both["signatures"]) == 2 and attestation.check_signature(both, [other_public]) != keyid

    statement = attestation.statement_of(envelope)  # a changed verdict no longer matches the signature
    statement["predicate"]["verdict"] = "verified, honestly"
    forged = {**attestation.envelope(statement), "signatures": envelope["signatures"]}
    with pytest.raises(attestation.AttestationError, match="does not verify"):
        attestation.check_signature(forged, [keys / "team.pub"])
    with pytest.raises(attestation.AttestationError, match="not signed"):
        attestation.check_signature(attestation.envelope(statement), [keys / "team.pub"])


def test_a_workflow_without_scenarios_is_not_verified(project: Project):
    _demo(project, "kit.output('greeting', 'hello ' + name)", expected=None)
    result = project.kit("verify", "wf", "--examples", "0")
    assert result.returncode == 1, _output(result)
    assert "no scenarios: the workflow demo has none under" in result.stdout


def test_bad_input_is_refused_before_anything_runs(project: Project, tmp_path):
    _demo(project, "kit.output('greeting', 'hello ' + name)")
    unknown_env = project.kit("verify", "wf", "--env", "prod")
    assert unknown_env.returncode == 2 and "no environment 'prod'" in unknown_env.stderr
    (tmp_path / "not-a-key.pem").write_text("hello\n")
    bad_key = project.kit("verify", "wf", "--sign", str(tmp_path / "not-a-key.pem"))
    assert bad_key.returncode == 2 and "not a PEM or OpenSSH private key" in bad_key.stderr
    assert project.run_count() == 0


# ---- the pieces, without kernels --------------------------------------------------


def test_the_scan_finds_key_shapes_and_leaves_the_example_alone(monkeypatch):
    from conftest import EXAMPLE

    files = [p.relative_to(EXAMPLE).as_posix() for p in EXAMPLE.rglob("*") if p.is_file()]
    assert scan_bundle(EXAMPLE, files, ["OPENAI_API_KEY"]) == []
    shapes = {
        "key = 'sk-proj-" + "a1B2" * 8 + "'": "OpenAI",
        "AKIA" + "ABCDEFGHIJKLMNOP": "AWS",
        "token: ghp_" + "x1Y2" * 9: "GitHub",
        "xoxb-" + "1234567890-abcdef": "Slack",
        "Authorization: Bearer " + "eyJhbGciOi" * 3: "bearer",
        "blob = 'q8Zr1Kx0Vm3Tn7Pa2Wc9Ld4Yh6Bf5Gj'": "high-entropy",
        "password = 'S3cr3t-hunter2-Xq'": "hard-coded credential",
    }
    for line, kind in shapes.items():
        assert any(kind in found for found in scan_line(line, {})), line
    for harmless in ("sha256: " + "0123456789abcdef" * 4, "api_key_env: OPENAI_API_KEY", "see notebooks/casework/data"):
        assert list(scan_line(harmless, {})) == [], harmless
    assert list(scan_line("the key is abcdefgh12", {"CRM_TOKEN": "abcdefgh12"})) == ["the value of $CRM_TOKEN"]


def test_the_scan_looks_for_the_values_that_kit_secret_names(project: Project, monkeypatch):
    from kit.verification.secret_scan import secret_names

    notebook = project.notebook("a.ipynb", "x: int = 1", "import kit\ntoken = kit.secret('CRM_TOKEN')")
    assert secret_names([notebook], [{"provider": "openai", "api_key_env": "OPENAI_API_KEY"}]) == [
        "CRM_TOKEN",
        "OPENAI_API_KEY",
    ]
    (project.root / "wf" / "cache.json").write_text('{"token": "value-of-the-crm-token"}\n')
    monkeypatch.setenv("CRM_TOKEN", "value-of-the-crm-token")
    [finding] = scan_bundle(project.root / "wf", ["a.ipynb", "cache.json"], ["CRM_TOKEN"])
    assert str(finding) == "cache.json: line 1: the value of $CRM_TOKEN"


def test_the_path_heuristic():
    code = textwrap.dedent(
        """
        %matplotlib inline
        import pandas as pd
        a = pd.read_csv("data/cases.csv")
        b = pd.read_csv("/etc/passwd")
        c = open("../secrets.txt")
        d = duckdb.sql("SELECT * FROM read_csv_auto('/srv/x.csv')")
        e = f"{first} .. {last}"
        f = "https://example.org/a/../b"
        """
    )
    found = [(line, outside_bundle(text)) for line, text in path_literals(code) if outside_bundle(text)]
    assert [line for line, _ in found] == [5, 6, 7]
    assert "absolute path" in found[0][1] and "climbs out" in found[1][1] and "/srv/x.csv" in found[2][1]


def test_boundary_runs_are_classified():
    from kit.execution.coordinator import RunOutcome
    from kit.execution.task import StepResult

    def outcome(status: str, *failures: tuple[str | None, str]) -> RunOutcome:
        steps = [StepResult("s", 1, "failed", "", "", 0.0, error_type=t, error_message=m) for t, m in failures]
        return RunOutcome(run_id="r", status=status, steps={}, failures=steps)

    verdicts = {}
    for name, run in {
        "ok": outcome("succeeded"),
        "clean": outcome("failed", ("ValueError", "unknown case")),
        "contract": outcome("failed", ("OutputError", "output 'x' must be integer")),
        "hang": outcome("failed", ("Timeout", "ran past its timeout of 60s")),
        "silent": outcome("failed", (None, "")),
    }.items():
        case = BoundaryCase(params={"x": 1}, varied=["x"], explicit=True)
        classify(case, run)
        verdicts[name] = case.verdict
    assert verdicts == {
        "ok": "succeeded",
        "clean": "failed",
        "contract": "violation",
        "hang": "violation",
        "silent": "violation",
    }


class _Crashing:
    """A coordinator whose run fails as kit itself would: a refusal, or a crash."""

    def __init__(self, error: Exception):
        self.error = error

    def run(self, request):
        raise self.error


def _check(coordinator, spec: dict, base: dict, examples: int = 0) -> BoundaryCheck:
    from kit.spec.manifest import ParamSpec

    workflow = type("W", (), {"spec": type("S", (), {"params": {k: ParamSpec(**v) for k, v in spec.items()}})()})()
    return BoundaryCheck(coordinator, workflow, None, "alice", base, engine="warm", llm_mode="live", examples=examples)


def test_a_crash_of_kit_is_a_violation_and_a_refusal_is_not():
    crash = _check(_Crashing(TypeError("boom")), {"n": {"type": "integer"}}, {"n": 1}).run()
    assert crash.failure is not None and crash.failure.detail == "kit crashed: TypeError: boom"
    assert crash.problem().startswith("boundary case {n: 0}: kit crashed")
    refused = _check(_Crashing(InvalidInput("bad parameter")), {"n": {"type": "integer"}}, {"n": 1}).run()
    assert refused.passed and {c.verdict for c in refused.cases} == {"refused"}
    assert [c.params["n"] for c in refused.cases] == [0, -1, 10**18, -(10**18)]


def test_a_generated_failure_is_shrunk():
    class Fussy(BoundaryCheck):
        def explicit_cases(self):
            return []

        def run_case(self, params):
            case = BoundaryCase(params=params, varied=["s"], explicit=False)
            case.verdict = "violation" if len(params["s"]) >= 3 else "succeeded"
            return case

    result = Fussy(None, _workflow_with({"s": {"type": "string"}}), None, "a", {"s": ""}, "warm", "live", 50).run()
    assert result.failure is not None and len(result.failure.params["s"]) == 3


def _workflow_with(spec: dict):
    return _check(None, spec, {}).workflow


def test_a_secret_a_scenario_reads_from_the_environment_stays_out_of_the_record(project: Project):
    project.notebook("a.ipynb", "crm_token: str = 'x'", "import kit\nkit.output('greeting', 'hello')")
    project.manifest(
        """
        workflow: demo
        version: 1.0.0
        params:
          crm_token: {type: string}
        steps:
          a:
            notebook: a.ipynb
            inputs: {crm_token: params.crm_token}
            outputs: {greeting: string}
        policy:
          redact: ["*token*"]
        """
    )
    scenario = project.root / "scenarios" / "demo" / "hello.yaml"
    scenario.parent.mkdir(parents=True)
    scenario.write_text(
        "scenario: demo/hello\nworkflow: demo\nparams: {crm_token: {env: DEMO_TOKEN}}\n"
        "expect:\n  a.greeting: {equals: hello}\n"
    )
    secret = "tok-8c1e5f0a9d"
    result = project.kit("verify", "wf", "--examples", "2", env={"DEMO_TOKEN": secret})
    assert result.returncode == 0, _output(result)
    path, envelope = _record(project)
    assert secret not in attestation.payload_of(envelope).decode() and secret not in _output(result)
    settings = attestation.statement_of(envelope)["predicate"]["checks"]["boundary"]["settings"]
    assert settings["base"] == {"crm_token": "[REDACTED]"}


def test_a_step_without_a_timeout_gets_the_default_one():
    from kit.execution.task import StepTask
    from kit.verification.boundary import DEFAULT_STEP_TIMEOUT, DefaultTimeout

    class Keeps:
        def __init__(self):
            self.tasks = []

        def submit(self, task):
            self.tasks.append(task)

    inner = Keeps()
    executor = DefaultTimeout(inner, DEFAULT_STEP_TIMEOUT)
    for timeout in (None, 5.0):
        executor.submit(StepTask("r", "s", 1, "nb", ".", {}, {}, "out", "spool", "objects", timeout=timeout))
    assert [t.timeout for t in inner.tasks] == [DEFAULT_STEP_TIMEOUT, 5.0]


def test_a_generated_failing_input_is_shrunk_end_to_end(project: Project):
    project.notebook(
        "a.ipynb",
        "name: str = 'x'\nn: int = 1",
        "import kit\nkit.output('greeting', 'hello ' + name)\nkit.output('size', 'big' if 100 < n < 10**12 else n)",
    )
    project.manifest(
        """
        workflow: demo
        version: 1.0.0
        params:
          name: {type: string, default: x}
          n: {type: integer, default: 1}
        steps:
          a:
            notebook: a.ipynb
            inputs: {name: params.name, n: params.n}
            outputs: {greeting: string, size: integer}
        """
    )
    scenario = project.root / "scenarios" / "demo" / "hello.yaml"
    scenario.parent.mkdir(parents=True)
    scenario.write_text("scenario: demo/hello\nworkflow: demo\nexpect:\n  a.greeting: {equals: hello x}\n")
    result = project.kit("verify", "wf", "--examples", "30")
    assert result.returncode == 1, _output(result)
    assert "boundary case {n: 101}: step a: OutputError: output 'size' must be integer" in result.stdout
