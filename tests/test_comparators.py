"""Built-in comparators, the registry, plugins through entry points, and evaluate()."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from kit.errors import InvalidInput
from kit.spec.scenario import Expectation, PathNotFound, extract
from kit.verification import comparators as C
from kit.verification.comparators import Comparator, CompareContext, Outcome, evaluate, get_comparator, run_comparator

PLUGIN_DIR = Path(__file__).parent / "plugins" / "kit_test_comparator"


@pytest.fixture(autouse=True)
def _fresh_registry():
    C.reset_registry()
    yield
    C.reset_registry()


def check(spec: dict, actual, ctx: CompareContext | None = None) -> Outcome:
    ctx = ctx or CompareContext()
    name, comp = C.resolve_spec(spec)
    comp.check_spec(spec, ctx)
    return run_comparator(comp, spec, actual, ctx)


# --------------------------------------------------------------------------- equals


def test_equals_passes_on_deep_equality_ignoring_key_order():
    out = check({"equals": {"a": [1, 2, {"b": "x"}], "c": 1.0}}, {"c": 1, "a": [1, 2, {"b": "x"}]})
    assert out.verdict == "pass"
    assert out.detail == ""


def test_equals_scalar_failure_says_expected_and_got():
    out = check({"equals": "apply_discount"}, "reject")
    assert out.verdict == "fail"
    assert '"apply_discount"' in out.detail and '"reject"' in out.detail
    assert out.expected == "apply_discount" and out.actual == "reject"


def test_equals_failure_names_first_differing_path_and_shows_a_diff():
    expected = {"action": "apply", "items": [{"id": 1}, {"id": 2}], "z": True}
    actual = {"action": "apply", "items": [{"id": 1}, {"id": 3}], "z": False}
    out = check({"equals": expected}, actual)
    assert out.verdict == "fail"
    assert "first difference at $.items[1].id: expected 2, got 3" in out.detail
    assert "--- expected" in out.detail and "+++ actual" in out.detail
    assert '-      "id": 2' in out.detail and '+      "id": 3' in out.detail


def test_equals_distinguishes_booleans_from_numbers_and_reports_missing_keys():
    assert check({"equals": 1}, True).verdict == "fail"
    assert check({"equals": 1}, 1.0).verdict == "pass"
    out = check({"equals": {"a": 1, "b": 2}}, {"a": 1})
    assert out.verdict == "fail" and 'missing key "b"' in out.detail
    out = check({"equals": [1, 2]}, [1, 2, 3])
    assert "expected 2 items, got 3" in out.detail


# --------------------------------------------------------------------------- approx


def test_approx_abs_pass_and_fail_detail_states_distance_and_tolerance():
    assert check({"approx": 0.8, "abs": 0.1}, 0.85).verdict == "pass"
    out = check({"approx": 0.8, "abs": 0.1}, 0.95)
    assert out.verdict == "fail"
    assert "0.15 from 0.8" in out.detail
    assert "tolerance 0.1" in out.detail and "abs 0.1" in out.detail
    assert out.expected == {"approx": 0.8, "abs": 0.1}


def test_approx_rel_and_default_tolerance():
    assert check({"approx": 100, "rel": 0.05}, 104).verdict == "pass"
    out = check({"approx": 100, "rel": 0.05}, 106)
    assert out.verdict == "fail" and "6 from 100" in out.detail and "rel 0.05" in out.detail
    assert check({"approx": 1.0}, 1.0 + 1e-9).verdict == "pass"
    assert check({"approx": 1.0}, 1.001).verdict == "fail"


def test_approx_nested_lists_name_the_index():
    assert check({"approx": [1.0, [2.0, 3.0]], "abs": 0.01}, [1.001, [2.0, 3.005]]).verdict == "pass"
    out = check({"approx": [1.0, [2.0, 3.0]], "abs": 0.01}, [1.0, [2.0, 3.5]])
    assert out.verdict == "fail" and "$[1][1]" in out.detail and "0.5 from 3" in out.detail
    out = check({"approx": [1.0, 2.0]}, [1.0])
    assert out.verdict == "fail" and "expected 2 items, got 1" in out.detail
    out = check({"approx": 1.0}, "one")
    assert out.verdict == "fail" and "expected a number" in out.detail


def test_approx_refuses_bad_specs():
    with pytest.raises(ValueError, match="abs"):
        check({"approx": 1.0, "abs": -1}, 1.0)
    with pytest.raises(ValueError, match="approx"):
        check({"approx": "x"}, 1.0)


# --------------------------------------------------------------------------- contains


def test_contains_substrings_and_detail_lists_missing_items():
    assert check({"contains": "discount"}, "the discount was missing").verdict == "pass"
    out = check({"contains": ["discount", "loyalty", "refund"]}, "a discount for loyal customers")
    assert out.verdict == "fail"
    assert '"loyalty"' in out.detail and '"refund"' in out.detail and '"discount"' not in out.detail.split(" in ")[0]
    assert check({"contains": ["DISCOUNT"], "ignore_case": True}, "a discount").verdict == "pass"


def test_contains_list_items_and_sub_objects():
    assert check({"contains": ["a", {"x": 1}]}, ["b", "a", {"x": 1}]).verdict == "pass"
    out = check({"contains": ["a", "c"]}, ["a", "b"])
    assert out.verdict == "fail" and '"c"' in out.detail
    assert check({"contains": {"action": "apply"}}, {"action": "apply", "confidence": 0.9}).verdict == "pass"
    out = check({"contains": {"action": "apply"}}, {"action": "reject"})
    assert out.verdict == "fail" and "$.action" in out.detail
    out = check({"contains": "x"}, 5)
    assert out.verdict == "fail" and "got number 5" in out.detail


# --------------------------------------------------------------------------- matches / one_of


def test_matches_uses_re_search_and_shows_pattern_and_value():
    assert check({"matches": r"C-\d{4}"}, "case C-1042 done").verdict == "pass"
    out = check({"matches": r"^apply"}, "reject_discount")
    assert out.verdict == "fail" and "/^apply/" in out.detail and "reject_discount" in out.detail
    out = check({"matches": "1"}, 1)
    assert out.verdict == "fail" and "needs a string" in out.detail
    with pytest.raises(ValueError, match="invalid regular expression"):
        check({"matches": "("}, "x")


def test_one_of():
    assert check({"one_of": ["apply", "reject"]}, "reject").verdict == "pass"
    out = check({"one_of": ["apply", "reject"]}, "escalate")
    assert out.verdict == "fail" and '"escalate" is not one of ["apply", "reject"]' in out.detail
    with pytest.raises(ValueError, match="non-empty list"):
        check({"one_of": "apply"}, "apply")


# --------------------------------------------------------------------------- schema


def test_schema_passes_and_lists_each_error_with_its_path():
    schema = {
        "type": "object",
        "required": ["action", "confidence"],
        "properties": {"confidence": {"type": "number", "maximum": 1}, "tags": {"items": {"type": "string"}}},
    }
    assert check({"schema": schema}, {"action": "apply", "confidence": 0.5}).verdict == "pass"
    out = check({"schema": schema}, {"confidence": 2, "tags": ["a", 3]})
    assert out.verdict == "fail"
    assert "3 schema errors" in out.detail
    assert "$: 'action' is a required property" in out.detail
    assert "$.confidence: 2 is greater than the maximum of 1" in out.detail
    assert "$.tags[1]: 3 is not of type 'string'" in out.detail


def test_schema_refuses_an_invalid_schema():
    with pytest.raises(ValueError, match="invalid JSON Schema"):
        check({"schema": {"type": "nonsense"}}, {})


# --------------------------------------------------------------------------- table


@pytest.fixture
def payload() -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [1, 2, 3], "amount": [10.0, 20.5, 30.25], "name": ["a", "b", "c"], "flag": [True, False, True]}
    )


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_table_from_csv_passes_after_normalizing(tmp_path, payload):
    write_csv(tmp_path / "expected" / "p.csv", "id,amount,name,flag\n1,10,a,True\n2,20.5,b,False\n3,30.25,c,True\n")
    ctx = CompareContext(base_dir=tmp_path)
    out = check({"table": "expected/p.csv"}, payload, ctx)
    assert out.verdict == "pass", out.detail
    assert out.actual["rows"] == 3 and out.actual["columns"] == ["id", "amount", "name", "flag"]
    assert out.actual["head"][0] == {"id": 1, "amount": 10.0, "name": "a", "flag": True}
    assert out.expected["file"] == "expected/p.csv" and out.expected["rows"] == 3
    json.dumps(out.expected), json.dumps(out.actual)  # JSON-able


def test_table_from_csv_names_differing_rows_and_columns(tmp_path, payload):
    write_csv(tmp_path / "p.csv", "id,amount,name,flag\n1,10,a,True\n2,99,b,False\n3,30.25,z,True\n")
    out = check({"table": "p.csv"}, payload, CompareContext(base_dir=tmp_path))
    assert out.verdict == "fail"
    assert "2 of 3 rows differ, in columns: amount, name" in out.detail
    assert "row 1: amount: expected 99.0, got 20.5" in out.detail
    assert 'row 2: name: expected "z", got "c"' in out.detail


def test_table_from_parquet(tmp_path, payload):
    payload.to_parquet(tmp_path / "p.parquet", index=False)
    ctx = CompareContext(base_dir=tmp_path)
    assert check({"table": "p.parquet"}, payload, ctx).verdict == "pass"
    changed = payload.assign(amount=[10.0, 20.5, 31.0])
    out = check({"table": "p.parquet"}, changed, ctx)
    assert out.verdict == "fail" and "in columns: amount" in out.detail and "row 2" in out.detail


def test_table_inline_rows():
    rows = [{"id": 1, "v": "x"}, {"id": 2, "v": "y"}]
    assert check({"table": rows}, pd.DataFrame(rows)).verdict == "pass"
    out = check({"table": rows}, pd.DataFrame([{"id": 1, "v": "x"}, {"id": 2, "v": "Y"}]))
    assert out.verdict == "fail" and "in columns: v" in out.detail
    # a JSON output that is a list of records is a table too
    assert check({"table": rows}, rows).verdict == "pass"


def test_table_ignore_order(tmp_path, payload):
    write_csv(tmp_path / "p.csv", "id,amount,name,flag\n3,30.25,c,True\n1,10,a,True\n2,20.5,b,False\n")
    ctx = CompareContext(base_dir=tmp_path)
    assert check({"table": "p.csv"}, payload, ctx).verdict == "fail"
    assert check({"table": "p.csv", "ignore_order": True}, payload, ctx).verdict == "pass"
    write_csv(tmp_path / "q.csv", "id,amount,name,flag\n3,30.25,c,True\n1,11,a,True\n2,20.5,b,False\n")
    out = check({"table": "q.csv", "ignore_order": True}, payload, ctx)
    assert out.verdict == "fail" and "after sorting" in out.detail and "amount: expected 11.0, got 10.0" in out.detail


def test_table_columns_option_compares_only_those(tmp_path, payload):
    write_csv(tmp_path / "p.csv", "id,name\n1,a\n2,b\n3,c\n")
    ctx = CompareContext(base_dir=tmp_path)
    out = check({"table": "p.csv"}, payload, ctx)
    assert out.verdict == "fail" and "extra columns: amount, flag" in out.detail
    assert check({"table": "p.csv", "columns": ["id", "name"]}, payload, ctx).verdict == "pass"
    out = check({"table": "p.csv", "columns": ["id", "name"]}, payload.drop(columns=["name"]), ctx)
    assert out.verdict == "fail" and "missing columns: name" in out.detail


def test_table_rtol(payload):
    rows = [{"id": 1, "amount": 10.001}, {"id": 2, "amount": 20.5}, {"id": 3, "amount": 30.25}]
    actual = payload[["id", "amount"]]
    out = check({"table": rows}, actual)
    assert out.verdict == "fail" and "amount" in out.detail
    assert check({"table": rows, "rtol": 1e-3}, actual).verdict == "pass"
    assert check({"table": rows, "rtol": 1e-5}, actual).verdict == "fail"


def test_table_row_count_difference_lists_missing_and_unexpected_rows(payload):
    rows = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 4, "name": "d"}, {"id": 5, "name": "e"}]
    out = check({"table": rows, "columns": ["id", "name"]}, payload)
    assert out.verdict == "fail"
    assert "row count: expected 4, got 3" in out.detail
    assert "rows missing (2)" in out.detail and '{"id": 4, "name": "d"}' in out.detail
    assert "rows unexpected (1)" in out.detail and '{"id": 3, "name": "c"}' in out.detail


def test_table_check_dtype(tmp_path):
    actual = pd.DataFrame({"id": [1.0, 2.0]})
    write_csv(tmp_path / "p.csv", "id\n1\n2\n")
    ctx = CompareContext(base_dir=tmp_path)
    assert check({"table": "p.csv"}, actual, ctx).verdict == "pass"
    out = check({"table": "p.csv", "check_dtype": True}, actual, ctx)
    assert out.verdict == "fail" and "column id: dtype expected int64, got float64" in out.detail


def test_table_loads_a_reference_through_the_context(tmp_path, payload):
    loaded = []

    def load_table(ref):
        loaded.append(ref)
        return payload

    ctx = CompareContext(base_dir=tmp_path, load_table=load_table)
    rows = payload.to_dict(orient="records")
    assert check({"table": rows}, "artifact:sha256:abc", ctx).verdict == "pass"
    assert loaded == ["artifact:sha256:abc"]
    out = check({"table": rows}, 42, ctx)
    assert out.verdict == "fail" and "expected a table" in out.detail


def test_table_spec_errors(tmp_path):
    ctx = CompareContext(base_dir=tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        check({"table": "nope.csv"}, None, ctx)
    with pytest.raises(ValueError, match="not a table file"):
        check({"table": "x.txt"}, None, ctx)
    with pytest.raises(ValueError, match="columns"):
        check({"table": [{"a": 1}], "columns": "a"}, None, ctx)
    with pytest.raises(ValueError, match="ignore_order"):
        check({"table": [{"a": 1}], "ignore_order": "yes"}, None, ctx)


def test_table_broken_expected_file_is_an_error_not_a_crash(tmp_path, payload):
    (tmp_path / "p.parquet").write_bytes(b"not parquet")
    out = run_comparator(get_comparator("table"), {"table": "p.parquet"}, payload, CompareContext(base_dir=tmp_path))
    assert out.verdict == "error" and "raised" in out.detail


# --------------------------------------------------------------------------- registry and evaluate


def test_available_lists_builtins():
    assert {"equals", "approx", "contains", "matches", "one_of", "schema", "table"} <= set(C.available())
    assert "judge" in C.available()


def test_unknown_comparator_lists_the_known_ones():
    with pytest.raises(InvalidInput, match=r"unknown comparator 'equal' \(known: approx, contains, equals"):
        get_comparator("equal")
    with pytest.raises(ValueError, match="unknown comparator 'equal'"):
        C.resolve_spec({"equal": 1})
    with pytest.raises(ValueError, match="several comparators"):
        C.resolve_spec({"equals": 1, "one_of": [1]})
    with pytest.raises(ValueError, match=r"equals does not accept 'abs' \(its options: none\)"):
        C.resolve_spec({"equals": 1, "abs": 0.1})
    with pytest.raises(ValueError, match="no comparator"):
        C.resolve_spec({})


class Boom(Comparator):
    name = "boom"

    def compare(self, spec, actual, ctx):
        raise RuntimeError("kaput")


def test_a_comparator_that_raises_yields_error():
    C.register(Boom)
    out = run_comparator(get_comparator("boom"), {"boom": 1}, 5, CompareContext())
    assert out.verdict == "error" and "RuntimeError: kaput" in out.detail


def expectation(key: str, spec: dict) -> Expectation:
    from kit.spec.scenario import parse_key

    step, output, path = parse_key(key)
    name, _ = C.resolve_spec(spec)
    return Expectation(key=key, step=step, output=output, path=path, comparator=name, spec=spec)


def test_evaluate_extracts_the_path():
    outputs = {"recommend.decision": {"action": "apply", "items": [{"id": 7}]}}
    ctx = CompareContext()
    assert evaluate(expectation("recommend.decision.action", {"equals": "apply"}), outputs, ctx).verdict == "pass"
    assert evaluate(expectation("recommend.decision.items.0.id", {"equals": 7}), outputs, ctx).verdict == "pass"
    out = evaluate(expectation("recommend.decision.items.0.id", {"equals": 8}), outputs, ctx)
    assert out.verdict == "fail" and out.actual == 7 and out.expected == 8


def test_evaluate_missing_output_and_missing_path_fail_clearly():
    ctx = CompareContext()
    out = evaluate(expectation("recommend.decision", {"equals": 1}), {}, ctx)
    assert out.verdict == "fail" and out.detail == "output recommend.decision was not produced"
    out = evaluate(expectation("recommend.decision.action", {"equals": 1}), {"recommend.decision": {"a": 1}}, ctx)
    assert out.verdict == "fail" and "recommend.decision has no key 'action'" in out.detail
    out = evaluate(
        expectation("recommend.decision.items.3", {"equals": 1}), {"recommend.decision": {"items": [1]}}, ctx
    )
    assert out.verdict == "fail" and "recommend.decision.items has 1 items; there is no index 3" in out.detail


def test_evaluate_accepts_a_callable_and_never_raises():
    def lookup(step, output):
        if step == "bad":
            raise OSError("disk on fire")
        raise KeyError(output)

    ctx = CompareContext()
    assert evaluate(expectation("s.o", {"equals": 1}), lookup, ctx).verdict == "fail"
    out = evaluate(expectation("bad.o", {"equals": 1}), lookup, ctx)
    assert out.verdict == "error" and "disk on fire" in out.detail
    C.register(Boom)
    out = evaluate(expectation("s.o", {"boom": 1}), {"s.o": 1}, ctx)
    assert out.verdict == "error" and "kaput" in out.detail


def test_extract_into_tables_and_errors():
    df = pd.DataFrame({"id": [1, 2], "name": ["a", "b"]})
    assert extract(df, (1, "name")) == "b"
    assert extract(df, ("id",)) == [1, 2]
    assert extract({"rows": [{"id": 3}]}, ("rows", 0, "id")) == 3
    assert extract({"0": "zero"}, (0,)) == "zero"
    with pytest.raises(PathNotFound, match="has no column 'x'"):
        extract(df, ("x",), label="s.o")
    with pytest.raises(PathNotFound, match=r"s.o.a is int 1, it has no 'b'"):
        extract({"a": 1}, ("a", "b"), label="s.o")
    with pytest.raises(PathNotFound, match="'x' is not an index"):
        extract([1], ("x",))


# --------------------------------------------------------------------------- plugins


def _expose_plugin(tmp_path: Path, monkeypatch) -> None:
    """Make the test plugin visible to importlib.metadata without pip: a dist-info on sys.path."""
    dist = tmp_path / "kit_test_comparator-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kit-test-comparator\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[kit.comparators]\neven = kit_test_comparator:EvenComparator\n")
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kit_test_comparator", raising=False)
    C.reset_registry()


def test_plugin_is_discovered_through_entry_points(tmp_path, monkeypatch):
    assert "even" not in C.available()
    _expose_plugin(tmp_path, monkeypatch)
    assert "even" in C.available()
    comp = get_comparator("even")
    assert type(comp).__module__ == "kit_test_comparator"
    assert check({"even": True}, 4).verdict == "pass"
    out = check({"even": True}, 3)
    assert out.verdict == "fail" and out.detail == "3 is odd"
    assert check({"even": False, "note": "odd ids"}, 3).verdict == "pass"
    with pytest.raises(ValueError, match="expected true or false"):
        check({"even": "yes"}, 3)


def test_plugin_used_from_a_scenario_file(tmp_path, monkeypatch):
    from kit.verification.scenarios import compare_context, load_scenario

    site = tmp_path / "site"
    site.mkdir()
    _expose_plugin(site, monkeypatch)
    path = tmp_path / "s.yaml"
    path.write_text("scenario: s\nworkflow: w\nexpect:\n  count.n: {even: true}\n")
    scenario = load_scenario(path)
    assert scenario.expect[0].comparator == "even"
    assert evaluate(scenario.expect[0], {"count.n": 10}, compare_context(scenario)).verdict == "pass"
    assert evaluate(scenario.expect[0], {"count.n": 11}, compare_context(scenario)).verdict == "fail"


def test_a_broken_plugin_is_reported_when_named(tmp_path, monkeypatch):
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[kit.comparators]\nshiny = no_such_module_xyz:Shiny\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    C.reset_registry()
    assert "shiny" not in C.available()
    with pytest.raises(InvalidInput, match="'shiny' could not be loaded: .*no_such_module_xyz"):
        get_comparator("shiny")
    assert "equals" in C.available()
