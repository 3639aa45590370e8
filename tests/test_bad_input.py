"""Every bad manifest or parameter is refused before anything runs: exit 2, file and field named."""

from __future__ import annotations

import json

import pytest

BAD_MANIFESTS = {
    "malformed YAML": ("workflow: demo\nversion: 1\nsteps:\n  a: {notebook: a.ipynb\n", "flow mapping at line 4"),
    "unknown key": (
        "workflow: demo\nversion: 1\nsteps:\n  a:\n    notebook: a.ipynb\n    retry: 3\n",
        "steps.a.retry: unknown key",
    ),
    "unknown top-level key": ("workflow: demo\nversion: 1\nstep: {}\nsteps: {}\n", "step: unknown key"),
    "cycle": (
        "workflow: demo\nversion: 1\nsteps:\n  a:\n    notebook: a.ipynb\n    inputs: {n: b.n}\n    outputs: {n: integer}\n"
        "  b:\n    notebook: a.ipynb\n    inputs: {n: a.n}\n    outputs: {n: integer}\n",
        "cycle",
    ),
    "unknown step": (
        "workflow: demo\nversion: 1\nsteps:\n  a:\n    notebook: a.ipynb\n    inputs: {n: zz.n}\n",
        "no step 'zz'",
    ),
    "unknown output": (
        "workflow: demo\nversion: 1\nsteps:\n  a:\n    notebook: a.ipynb\n    outputs: {n: integer}\n"
        "  b:\n    notebook: a.ipynb\n    inputs: {n: a.nope}\n",
        "declares no output 'nope'",
    ),
    "missing notebook": ("workflow: demo\nversion: 1\nsteps:\n  a:\n    notebook: missing.ipynb\n", "no such notebook"),
    "no parameters cell": (
        "workflow: demo\nversion: 1\nsteps:\n  a:\n    notebook: plain.ipynb\n",
        "no cell tagged 'parameters'",
    ),
    "input without parameter": (
        "workflow: demo\nversion: 1\nparams: {y: {type: integer}}\nsteps:\n  a:\n    notebook: a.ipynb\n    inputs: {y: params.y}\n",
        "has no parameter 'y'",
    ),
    "bad output type": (
        "workflow: demo\nversion: 1\nsteps:\n  a:\n    notebook: a.ipynb\n    outputs: {n: tabel}\n",
        "unknown type 'tabel'",
    ),
    "bad wiring": (
        "workflow: demo\nversion: 1\nsteps:\n  a:\n    notebook: a.ipynb\n    inputs: {n: 5}\n",
        "expected params.NAME or STEP.OUTPUT",
    ),
    "type mismatch in wiring": (
        "workflow: demo\nversion: 1\nsteps:\n  a:\n    notebook: a.ipynb\n    outputs: {n: object}\n"
        "  b:\n    notebook: a.ipynb\n    inputs: {n: a.n}\n",
        "annotates n: int",
    ),
    "injected input name": (
        'workflow: demo\nversion: 1\nsteps:\n  a:\n    notebook: a.ipynb\n    inputs: {"n\\nimport os": params.x}\n',
        "not a valid identifier",
    ),
}


@pytest.fixture
def bad(project):
    project.notebook("a.ipynb", "n: int = 0", "open('ran', 'w').write('yes')")
    project.notebook("plain.ipynb", None, "print(1)")
    return project


def assert_refused(project, result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert not (project.root / "wf" / "ran").exists()
    assert project.run_count() == 0


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifest_is_refused_naming_file_and_field(bad, case):
    text, needle = BAD_MANIFESTS[case]
    bad.manifest(text)
    result = bad.cli("run", "wf")
    assert_refused(bad, result, "workflow.yaml", needle)


def test_a_line_number_is_given(bad):
    bad.manifest("workflow: demo\nversion: 1\nsteps:\n  a:\n    notebook: a.ipynb\n    outputz: {}\n")
    result = bad.cli("run", "wf")
    assert_refused(bad, result, "workflow.yaml:6", "steps.a.outputz")


@pytest.fixture
def typed(project):
    project.notebook("a.ipynb", "n: int = 0\ntext: str = ''", "open('ran', 'w').write('yes')")
    project.manifest(
        """
        workflow: demo
        version: 1
        params:
          n: {type: integer, default: 1}
          text: {type: string, default: ''}
        steps:
          a:
            notebook: a.ipynb
            inputs: {n: params.n, text: params.text}
        """
    )
    return project


def test_injected_parameter_name_on_the_command_line(typed):
    result = typed.cli("run", "wf", "-p", "n\nimport os; os.system('touch pwned')\ny=1")
    assert_refused(typed, result, "not a valid identifier")
    assert not (typed.root / "pwned").exists()


def test_injected_parameter_name_in_a_params_file(typed):
    (typed.root / "p.json").write_text(json.dumps({"n\nimport os; os.system('touch pwned')\ny": 1}))
    result = typed.cli("run", "wf", "--params-file", str(typed.root / "p.json"))
    assert_refused(typed, result, "p.json", "not a valid identifier")
    assert not (typed.root / "pwned").exists()


def test_unknown_parameter_is_refused(typed):
    result = typed.cli("run", "wf", "-p", "m=1")
    assert_refused(typed, result, "workflow.yaml", "unknown parameter 'm'")


def test_wrong_type_is_refused(typed):
    result = typed.cli("run", "wf", "-p", "n=abc")
    assert_refused(typed, result, "parameter 'n' must be integer")


@pytest.mark.parametrize(
    "text, needle",
    [
        ("n: 2024-01-01\n", "date"),  # YAML reads a date, which is not JSON
        ("n: .nan\n", "nan"),
        ("n: {1: x}\n", "non-string key"),
    ],
)
def test_values_that_are_not_json_are_refused(typed, text, needle):
    (typed.root / "p.yaml").write_text(text)
    result = typed.cli("run", "wf", "--params-file", str(typed.root / "p.yaml"))
    assert_refused(typed, result, needle)


def test_annotation_mismatch_is_refused_before_running(project):
    project.notebook("a.ipynb", "n: int = 0", "open('ran', 'w').write('yes')")
    project.manifest(
        """
        workflow: demo
        version: 1
        params: {n: {default: 1.5}}
        steps:
          a: {notebook: a.ipynb, inputs: {n: params.n}}
        """
    )
    result = project.cli("run", "wf")
    assert_refused(project, result, "steps.a.inputs.n", "expected int, got number")


def test_a_real_process_prints_no_traceback(typed):
    result = typed.kit("run", "wf", "-p", "n=abc")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr and "parameter 'n'" in result.stderr


def test_unknown_workflow_is_refused(project):
    result = project.cli("run", "nowhere")
    assert result.exit_code == 2
    assert "no such workflow" in result.output


# --------------------------------------------------------------------------- more clear errors (issue 9)


def test_a_json_file_that_is_not_a_notebook_is_refused(project):
    (project.root / "wf").mkdir()
    (project.root / "wf" / "list.ipynb").write_text("[1, 2, 3]")
    project.manifest("workflow: demo\nversion: 1\nsteps:\n  a: {notebook: list.ipynb}\n")
    result = project.kit("run", "wf")
    assert result.returncode == 2 and "list.ipynb: not a notebook" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("env", ["bogus", "../../etc/passwd"])
def test_an_environment_the_workflow_does_not_declare_is_refused(chain, env):
    result = chain.kit("run", "wf", "--env", env)
    assert result.returncode == 2 and f"--env {env}" in result.stderr and "declares none" in result.stderr
    assert chain.run_count() == 0


def test_a_scenario_environment_that_does_not_exist_is_invalid(chain):
    (chain.root / "scenarios").mkdir()
    (chain.root / "scenarios" / "s.yaml").write_text(
        "scenario: s\nworkflow: demo\nenv: nosuchenv\nexpect:\n  c.s: {equals: '4'}\n"
    )
    result = chain.kit("test")
    assert result.returncode == 2 and "nosuchenv" in result.stdout


@pytest.mark.parametrize("principal", ["", "eve\nadmin", " bob"])
def test_a_malformed_principal_is_refused(chain, principal):
    for env, args in (({}, ("--as", principal)), ({"KIT_PRINCIPAL": principal}, ())):
        result = chain.kit("run", "wf", *args, env=env)
        assert result.returncode == 2, (principal, result.stderr)
        assert "principal's name" in result.stderr
    assert chain.run_count() == 0


def test_unicode_identifiers_work_everywhere(project):
    project.notebook("é.ipynb", "entrée: int = 1", "import kit\nkit.output('résultat', entrée * 2)")
    project.notebook("suite.ipynb", "valeur: int = 0", "import kit\nkit.output('fin', valeur + 1)")
    project.manifest(
        """
        workflow: unicode
        version: 1
        params: {café: {type: integer, default: 2}}
        steps:
          étape:
            notebook: é.ipynb
            inputs: {entrée: params.café}
            outputs: {résultat: integer}
          suite:
            notebook: suite.ipynb
            inputs: {valeur: étape.résultat}
            outputs: {fin: integer}
        """
    )
    done = project.kit("run", "wf", "--engine", "warm")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1]
    target = project.root / "scenarios" / "u.yaml"
    captured = project.kit("capture", run_id, "--expect", "étape.résultat", "--expect", "suite.fin", "-o", str(target))
    assert captured.returncode == 0, captured.stderr
    tested = project.kit("test", str(target))
    assert tested.returncode == 0, tested.stdout


def test_an_unwritable_junit_path_is_refused_before_anything_runs(chain):
    (chain.root / "scenarios").mkdir()
    (chain.root / "scenarios" / "s.yaml").write_text("scenario: s\nworkflow: demo\nexpect:\n  c.s: {equals: '4'}\n")
    result = chain.kit("test", "--junit", "/proc/nope/x.xml")
    assert result.returncode == 2 and "--junit /proc/nope/x.xml: cannot write there" in result.stderr
    assert chain.run_count() == 0


def test_small_things_say_what_they_mean(chain):
    (chain.root / "huge.json").write_text(json.dumps({"label": "x" * 2_000_000}))
    run = chain.kit("run", "wf", "--params-file", "huge.json", "--engine", "warm")
    assert run.returncode == 0
    shown = chain.kit("show", "last")
    assert len(shown.stdout) < 5000 and "…" in shown.stdout

    for sql, verb in (
        ("insert into runs values (1)", "an INSERT"),
        ("install httpfs", "an INSTALL"),
        ("checkpoint", "a CHECKPOINT"),
    ):
        refused = chain.kit("sql", sql)
        assert refused.returncode == 2 and f"refused {verb} statement" in refused.stderr, refused.stderr

    bogus = chain.kit("runs", "--status", "bogus")
    assert bogus.returncode == 2 and "bogus" in bogus.stderr

    (chain.root / "scenarios").mkdir()
    (chain.root / "scenarios" / "s.yaml").write_text(
        "scenario: s\nworkflow: demo\ntags: [smoke]\nexpect:\n  c.s: {equals: '4'}\n"
    )
    none = chain.kit("test", "--tag", "none")
    assert none.returncode == 2 and "has the tag 'none'" in none.stderr and "smoke" in none.stderr

    replayed = chain.kit("replay", "scenarios/s.yaml", "--baseline", "last")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "INVALID" not in replayed.stdout
    unknown = chain.kit("replay", "scenarios/s.yaml", "--baseline", "no-such-ref")
    assert unknown.returncode == 2 and "--baseline no-such-ref" in unknown.stderr and "INVALID" not in unknown.stdout


def test_malformed_lock_files_are_named_with_what_was_expected(project):
    """workflow.lock and kit.lock are files a user can break by hand: one line and exit 2, never a traceback."""
    project.notebook("a.ipynb", "x: int = 1", "import kit\nkit.output('y', x)")
    project.manifest("workflow: one\nversion: 1\nsteps:\n  a: {notebook: a.ipynb, outputs: {y: integer}}\n")
    lock = project.root / "wf" / "workflow.lock"
    for text in ("[]", '{"files": 5}', '{"files": {"a.ipynb": 7}}'):
        lock.write_text(text)
        for args in (("run", "wf"), ("run", "wf", "--locked")):
            result = project.kit(*args)
            assert result.returncode == 2 and "Traceback" not in result.stderr, (text, result.stderr)
            assert "workflow.lock: malformed lock file" in result.stderr
    lock.unlink()
    kit_lock = project.root / "kit.lock"
    for entry in ("{}", '"x"', '{"version": "1.0.0", "bundle_id": "../../.."}'):
        kit_lock.write_text('{"installed": {"echo": ' + entry + "}}")
        result = project.kit("run", "echo@~=1.0")
        assert result.returncode == 2 and "Traceback" not in result.stderr, (entry, result.stderr)
        assert "malformed kit.lock: installed.echo" in result.stderr and "../" not in result.stderr.split("found")[0]
