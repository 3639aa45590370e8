"""Scenario files: loading, every refusal naming file and line, validate_against, discover."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kit.errors import EXIT_INVALID, InvalidInput, NotFound
from kit.spec.scenario import Scenario, discover, parse_key, validate_against
from kit.verification import comparators as C
from kit.verification.scenarios import compare_context, load_scenario

GOOD = """\
scenario: casework/missing-discount
workflow: casework
description: Loyal customer's discount was not applied (case C-1042)
params: {case_id: C-1042, since: 2026-06-10}
env: dev
as: alice
expect:
  recommend.decision: {schema: {required: [action]}}
  recommend.decision.action: {equals: apply_discount}
  recommend.decision.confidence: {approx: 0.8, abs: 0.1}
  fetch_case.payload: {table: expected/C-1042-payload.csv, ignore_order: true}
  summarize.summary: {contains: [discount, loyalty]}
  fetch_case.provenance.rows.0.id: {one_of: [1, 2]}
recordings: recordings/missing-discount.jsonl
source: {run: "01J0RUN", captured_by: bob, note: "from production"}
tags: [pricing]
"""

STEPS = {
    "fetch_case": {"payload", "provenance"},
    "summarize": {"summary"},
    "recommend": {"decision"},
    "review": set(),
}


@pytest.fixture(autouse=True)
def _fresh_registry():
    C.reset_registry()
    yield
    C.reset_registry()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "expected").mkdir()
    (tmp_path / "expected" / "C-1042-payload.csv").write_text("id,amount\n1,10\n")
    return tmp_path


def write(folder: Path, text: str, name: str = "case.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def refused(path: Path) -> str:
    with pytest.raises(InvalidInput) as info:
        load_scenario(path)
    assert info.value.exit_code == EXIT_INVALID
    return info.value.message


# --------------------------------------------------------------------------- good file


def test_load_a_good_scenario(folder):
    path = write(folder, GOOD)
    s = load_scenario(path)
    assert isinstance(s, Scenario)
    assert s.scenario == s.id == "casework/missing-discount"
    assert s.workflow == "casework"
    assert s.description.startswith("Loyal customer")
    assert s.params == {"case_id": "C-1042", "since": "2026-06-10"}  # a YAML date stays JSON
    assert s.env == "dev" and s.as_ == "alice" and s.principal == "alice"
    assert s.recordings == "recordings/missing-discount.jsonl"
    assert s.recordings_path == folder / "recordings" / "missing-discount.jsonl"
    assert s.source == {"run": "01J0RUN", "captured_by": "bob", "note": "from production"}
    assert s.tags == ["pricing"]
    assert s.path == path and s.base_dir == folder

    keys = [e.key for e in s.expect]
    assert keys == [
        "recommend.decision",
        "recommend.decision.action",
        "recommend.decision.confidence",
        "fetch_case.payload",
        "summarize.summary",
        "fetch_case.provenance.rows.0.id",
    ]
    by_key = {e.key: e for e in s.expect}
    e = by_key["recommend.decision.action"]
    assert (e.step, e.output, e.path, e.comparator, e.spec, e.line) == (
        "recommend",
        "decision",
        ("action",),
        "equals",
        {"equals": "apply_discount"},
        9,
    )
    assert by_key["recommend.decision"].path == ()
    assert by_key["recommend.decision.confidence"].spec == {"approx": 0.8, "abs": 0.1}
    assert by_key["fetch_case.payload"].comparator == "table"
    assert by_key["fetch_case.provenance.rows.0.id"].path == ("rows", 0, "id")
    assert s.outputs_needed() == [
        "recommend.decision",
        "fetch_case.payload",
        "summarize.summary",
        "fetch_case.provenance",
    ]
    assert compare_context(s).base_dir == folder
    validate_against(s, STEPS)
    validate_against(s, STEPS, workflow="casework")


def test_minimal_scenario_and_defaults(folder):
    s = load_scenario(write(folder, "scenario: s1\nworkflow: w\nexpect:\n  a.b: {equals: 1}\n"))
    assert len(s.expect) == 1 and s.params == {} and s.tags == [] and s.env is None and s.as_ is None
    assert s.recordings is None and s.recordings_path is None and s.description == ""


def test_a_scenario_without_expectations_is_refused(folder):
    msg = refused(write(folder, "scenario: s1\nworkflow: w\n"))
    assert "at least one expectation" in msg


def test_parse_key():
    assert parse_key("a.b") == ("a", "b", ())
    assert parse_key("a.b.rows.0.id") == ("a", "b", ("rows", 0, "id"))
    with pytest.raises(ValueError, match="'fetch-case' is not a step id"):  # step ids are Python identifiers
        parse_key("fetch-case.b[2].x")
    assert parse_key("étape.résultat.0") == ("étape", "résultat", (0,))
    for bad in ("a", "a..b", ".a.b", "a.b.", "1a.b", "a.1b", ""):
        with pytest.raises(ValueError):
            parse_key(bad)


# --------------------------------------------------------------------------- refusals


def test_malformed_yaml_names_file_and_line(folder):
    path = write(folder, "scenario: s\nworkflow: w\nexpect:\n  a.b: {equals: [1, 2}\n")
    msg = refused(path)
    assert f"{path}:4" in msg and "malformed YAML" in msg


def test_not_a_mapping_and_empty_file(folder):
    assert "expected a mapping" in refused(write(folder, "- a\n- b\n"))
    assert "empty file" in refused(write(folder, ""))


def test_unknown_top_level_key(folder):
    path = write(folder, "scenario: s\nworkflow: w\nexpects:\n  a.b: {equals: 1}\n")
    msg = refused(path)
    assert f"{path}:3: expects: unknown key" in msg


def test_missing_and_mistyped_top_level_keys(folder):
    path = write(folder, "scenario: s\nparams: [1, 2]\ntags: pricing\n")
    msg = refused(path)
    assert f"{path}:1: workflow: required key is missing" in msg
    assert f"{path}:2: params:" in msg and "dictionary" in msg
    assert f"{path}:3: tags:" in msg


def test_bad_expectation_key_format(folder):
    path = write(folder, "scenario: s\nworkflow: w\nexpect:\n  a.b: {equals: 1}\n  decision: {equals: 1}\n")
    msg = refused(path)
    assert f"{path}:5: expect 'decision': expected STEP.OUTPUT or STEP.OUTPUT.path" in msg


def test_unknown_comparator_lists_known_ones(folder):
    path = write(folder, "scenario: s\nworkflow: w\nexpect:\n  a.b: {equal: 1}\n")
    msg = refused(path)
    assert f"{path}:4: expect 'a.b': unknown comparator 'equal'" in msg
    assert "known: approx, contains, equals, judge, matches, one_of, schema, table" in msg


def test_two_comparator_keys(folder):
    path = write(folder, "scenario: s\nworkflow: w\nexpect:\n  a.b: {equals: 1, one_of: [1, 2]}\n")
    msg = refused(path)
    assert f"{path}:4: expect 'a.b': several comparators (equals, one_of)" in msg


def test_no_comparator_key_and_a_non_mapping_spec(folder):
    path = write(folder, "scenario: s\nworkflow: w\nexpect:\n  a.b: {}\n  a.c: apply\n")
    msg = refused(path)
    assert f"{path}:4: expect 'a.b': no comparator given" in msg
    assert f"{path}:5: expect 'a.c': expected a mapping with one comparator" in msg


def test_option_the_comparator_refuses(folder):
    path = write(folder, "scenario: s\nworkflow: w\nexpect:\n  a.b: {equals: 1, abs: 0.1}\n")
    msg = refused(path)
    assert f"{path}:4: expect 'a.b': equals does not accept 'abs'" in msg


def test_bad_option_value_points_at_the_option_line(folder):
    path = write(
        folder,
        """\
        scenario: s
        workflow: w
        expect:
          a.b:
            approx: 1.0
            abs: -2
        """,
    )
    msg = refused(path)
    assert f"{path}:6: expect 'a.b': abs: expected a non-negative number" in msg


def test_missing_table_file(folder):
    path = write(folder, "scenario: s\nworkflow: w\nexpect:\n  a.b: {table: expected/nope.csv}\n")
    msg = refused(path)
    assert f"{path}:4: expect 'a.b'" in msg and "'expected/nope.csv' does not exist" in msg


def test_table_file_is_relative_to_the_scenario_file(folder, monkeypatch, tmp_path_factory):
    path = write(folder, "scenario: s\nworkflow: w\nexpect:\n  a.b: {table: expected/C-1042-payload.csv}\n")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert load_scenario(path).expect[0].comparator == "table"


def test_invalid_regex_and_schema(folder):
    path = write(
        folder,
        "scenario: s\nworkflow: w\nexpect:\n  a.b: {matches: '('}\n  a.c: {schema: {type: nonsense}}\n",
    )
    msg = refused(path)
    assert f"{path}:4: expect 'a.b': matches: invalid regular expression" in msg
    assert f"{path}:5: expect 'a.c': schema: invalid JSON Schema" in msg


def test_every_problem_is_reported_at_once(folder):
    path = write(folder, "scenario: s\nworkflow: w\nexpect:\n  a: {equals: 1}\n  a.b: {nope: 1}\n  a.c: {equals: 1}\n")
    msg = refused(path)
    assert f"{path}:4" in msg and f"{path}:5" in msg and f"{path}:6" not in msg


def test_duplicate_expectation_key(folder):
    path = write(folder, "scenario: s\nworkflow: w\nexpect:\n  a.b: {equals: 1}\n  a.b: {equals: 2}\n")
    assert f"{path}:5: duplicate key 'a.b'" in refused(path)


# --------------------------------------------------------------------------- validate_against


def test_validate_against_unknown_step_and_output(folder):
    path = write(
        folder,
        """\
        scenario: s
        workflow: casework
        expect:
          recommend.decision: {equals: 1}
          recomend.decision: {equals: 1}
          summarize.sumary: {equals: x}
        """,
    )
    s = load_scenario(path)
    with pytest.raises(InvalidInput) as info:
        validate_against(s, STEPS)
    msg = info.value.message
    assert (
        f"{path}:5: expect 'recomend.decision': unknown step 'recomend' (steps: fetch_case, recommend, review, summarize)"
        in msg
    )
    assert f"{path}:6: expect 'summarize.sumary': step 'summarize' has no output 'sumary' (its outputs: summary)" in msg
    assert f"{path}:4" not in msg


def test_validate_against_workflow_name(folder):
    s = load_scenario(write(folder, "scenario: s\nworkflow: other\nexpect:\n  a.b: {equals: 1}\n"))
    with pytest.raises(InvalidInput, match="scenario is for workflow 'other', not 'casework'"):
        validate_against(s, STEPS, workflow="casework")


# --------------------------------------------------------------------------- discover


def test_discover_finds_scenario_files_recursively(tmp_path):
    (tmp_path / "casework" / "expected").mkdir(parents=True)
    (tmp_path / "casework" / "b.yaml").write_text("scenario: b\nworkflow: casework\n")
    (tmp_path / "casework" / "a.yml").write_text("# a comment\nscenario: a\nworkflow: casework\n")
    (tmp_path / "casework" / "workflow.yaml").write_text("workflow: casework\nsteps: {}\n")
    (tmp_path / "casework" / "expected" / "notes.yaml").write_text("note: scenario: inline is not top level\n")
    (tmp_path / "casework" / "expected" / "rows.csv").write_text("scenario\nx\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "c.yaml").write_text("scenario: c\nworkflow: other\n")
    (tmp_path / ".kit").mkdir()
    (tmp_path / ".kit" / "hidden.yaml").write_text("scenario: hidden\nworkflow: w\n")
    explicit = tmp_path / "one-off.yaml"
    explicit.write_text("scenario: one\nworkflow: w\n")

    found = discover([tmp_path / "other", tmp_path / "casework"])
    assert found == [tmp_path / "casework" / "a.yml", tmp_path / "casework" / "b.yaml", tmp_path / "other" / "c.yaml"]
    everything = discover([tmp_path, tmp_path / "casework" / "b.yaml"])
    assert everything == sorted(
        [tmp_path / "casework" / "a.yml", tmp_path / "casework" / "b.yaml", tmp_path / "other" / "c.yaml", explicit]
    )
    assert discover([explicit]) == [explicit]
    with pytest.raises(NotFound, match="no such file or directory"):
        discover([tmp_path / "missing"])


def test_non_string_expectation_key(folder):
    path = write(folder, "scenario: s\nworkflow: w\nexpect:\n  a.b: {equals: 1}\n  1.5: {equals: 1}\n")
    assert f"{path}:5: expect 1.5: expected a key of the form STEP.OUTPUT" in refused(path)
