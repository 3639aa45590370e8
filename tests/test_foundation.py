"""The ground the rest stands on: canonical recording keys, run ids that never collide, inserts
that never replace, read-only commands that create nothing, and one way to plug in."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime

import pytest
from conftest import Project, copy_example

from kit.base import clock
from kit.kernel.recordings import canonical_request, request_key


def test_a_number_is_one_key_however_it_is_spelled():
    def key(**params):
        return request_key(canonical_request("fake", "m", "hi", params))

    assert key(temperature=0) == key(temperature=0.0)
    assert key(max_tokens=400, top_p=1) == key(max_tokens=400.0, top_p=1.0)
    assert key(temperature=0) != key(temperature=0.1)
    assert key(seed=2**60) != key(seed=2**60 + 1)  # beyond a double's integers, still exact


def test_a_recording_made_with_temperature_0_replays_with_0_0(tmp_path):
    project = Project(tmp_path)
    copy_example(project.root, scenarios=True)
    model = project.root / "notebooks" / "casework" / "config" / "model.yaml"
    assert "temperature: 0," in model.read_text()
    model.write_text(model.read_text().replace("temperature: 0,", "temperature: 0.0,"))
    result = project.kit(
        "test", "scenarios/casework/C-1004-wrong-vat-france.yaml", env={"KIT_LLM_MODE": "", "OPENAI_API_KEY": ""}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ReplayMiss" not in result.stdout
    (call,) = project.sql("select attributes from spans where kind = 'llm'")
    assert call["attributes"]["kit.llm.replayed"] is True
    assert call["attributes"]["gen_ai.request.temperature"] == 0.0


GATE = """
workflow: gated
version: 1.0.0
params: {n: {type: integer, default: 0}}
steps:
  gate: {approval: {approvers: [reviewer]}}
"""


def test_many_runs_in_the_same_millisecond_are_each_recorded_whole(project, monkeypatch):
    from kit.execution import coordinator as coordinator_module
    from kit.execution.coordinator import Coordinator, RunRequest
    from kit.spec.manifest import load_workflow
    from kit.spec.project import Project as KitProject

    (project.root / "kit.yaml").write_text(
        "principals: {alice: [analyst], bob: [reviewer]}\nroles: {analyst: [], reviewer: []}\n"
    )
    manifest = project.manifest(GATE)
    frozen = datetime(2026, 11, 26, 12, 0, 0, 123000, tzinfo=UTC)
    monkeypatch.setattr(coordinator_module, "new_run_id", lambda: clock.new_run_id(frozen))
    coordinator = Coordinator(KitProject(project.root))
    workflow = load_workflow(manifest)
    outcomes, errors = [], []

    def start(n: int) -> None:
        try:
            outcomes.append(coordinator.run(RunRequest(workflow=workflow, params={"n": n}, principal="alice")))
        except Exception as exc:  # noqa: BLE001 - collected, then asserted empty
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    coordinator.ledger.release()
    assert errors == []
    ids = [o.run_id for o in outcomes]
    assert len(set(ids)) == 16 and all(i.startswith("20261126-120000-123-") for i in ids)
    runs = project.sql("select run_id, status, params from runs")
    assert {r["run_id"] for r in runs} == set(ids)
    assert sorted(r["params"]["n"] for r in runs) == list(range(16))
    assert all(r["status"] == "waiting" for r in runs)
    steps = project.sql("select run_id, count(*) as n from steps group by run_id")
    assert {s["run_id"]: s["n"] for s in steps} == {i: 1 for i in ids}
    spans = project.sql("select run_id from spans where kind = 'run'")
    assert sorted(s["run_id"] for s in spans) == sorted(ids)


def test_an_insert_never_replaces_a_row(project):
    from kit.ledger.audit import AuditEvent
    from kit.ledger.ledger import Ledger

    ledger = Ledger(project.root / ".kit" / "ledger.duckdb")
    bundle = {"bundle_id": "b" * 64, "workflow": "w", "version": "1", "lock": {}, "created_at": clock.utcnow()}
    run = {"run_id": "r1", "workflow": "w", "status": "running", "params": {"who": "first"}}
    first = ledger.batch()
    first.start_run(bundle, run, [{"run_id": "r1", "step_id": "s", "status": "pending"}], AuditEvent("a", "x", "r1"))
    first.commit()
    second = ledger.batch()
    second.start_run(bundle, {**run, "params": {"who": "second"}}, [], AuditEvent("a", "x", "r1"))
    with pytest.raises(Exception, match="(?i)duplicate|constraint"):
        second.commit()
    assert ledger.run("r1")["params"] == {"who": "first"}
    ledger.release()


@pytest.mark.parametrize(
    "args",
    [
        ("runs",),
        ("runs", "--format", "json"),
        ("sql", "select count(*) from runs"),
        ("audit", "verify"),
        ("audit", "list"),
        ("show", "last"),
    ],
)
def test_read_only_commands_in_an_empty_folder_create_nothing(tmp_path, args):
    done = subprocess.run([sys.executable, "-m", "kit.cli", *args], cwd=tmp_path, capture_output=True, text=True)
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == [], args
    if args == ("runs",):
        assert done.returncode == 0 and "no runs" in done.stdout
    if args == ("show", "last"):
        assert done.returncode == 2 and "no run 'last'" in done.stderr


def test_kits_own_plugins_come_through_entry_points_like_anyone_elses():
    from importlib.metadata import entry_points

    from kit.execution.engines import ENGINES
    from kit.kernel.providers import PROVIDERS
    from kit.verification.comparators import available

    for group, names in (
        ("kit.engines", ENGINES.names()),
        ("kit.llm_providers", PROVIDERS.names()),
        ("kit.comparators", available()),
    ):
        declared = {ep.name for ep in entry_points(group=group) if ep.dist.name == "kit"}
        assert declared and declared <= set(names), group
    assert {"papermill", "warm"} <= set(ENGINES.names())
    cli_help = subprocess.run([sys.executable, "-m", "kit.cli", "run", "--help"], capture_output=True, text=True)
    assert "papermill|warm" in cli_help.stdout


def test_a_bulk_insert_stores_the_same_json_as_a_small_one(tmp_path):
    """Large inserts go to DuckDB as JSON documents read back with the table's types; what comes back must
    equal the small path's, the documents are gone after, and a column the table lacks is refused."""
    from kit.ledger.database import BULK_ROWS, Database

    odd = [
        {"cell": 1, "duration_ms": 2.5},
        {"text": "é ✓ \u2028", "nested": {"a": [1, None, True]}},
        {1: "int key"},
        {"huge": 2**70},
        {"when": datetime(2026, 11, 26, tzinfo=UTC)},
        "a plain string",
        None,
    ]

    def rows(prefix: str, count: int) -> list[dict]:
        return [
            {"run_id": prefix, "span_id": f"{n:016x}", "kind": "cell", "attributes": odd[n % len(odd)]}
            for n in range(count)
        ]

    db = Database(tmp_path / "ledger.duckdb")
    db.write(("insert", "spans", rows("bulk", BULK_ROWS + len(odd))))
    db.write(("insert", "spans", rows("small", len(odd))))
    db.release()
    import duckdb

    con = duckdb.connect(str(db.path), read_only=True)
    got = {
        run: con.execute(
            "select span_id, attributes::varchar from spans where run_id = ? order by span_id limit ?", [run, len(odd)]
        ).fetchall()
        for run in ("bulk", "small")
    }
    con.close()
    assert [json.loads(a) if a else a for _, a in got["bulk"]] == [json.loads(a) if a else a for _, a in got["small"]]
    assert json.loads(got["bulk"][3][1]) == {"huge": 2**70}

    # typed columns, rows that leave columns out, several documents read at once
    from kit.ledger.database import BULK_PART_ROWS

    many = 2 * BULK_PART_ROWS + 3
    timed = [
        {
            "run_id": "typed",
            "span_id": f"{n:016x}",
            "started_at": datetime(2026, 11, 26, 12, 0, n % 60) if n % 2 else f"2026-11-26 12:00:{n % 60:02d}",
            **({"status": "ok"} if n % 3 else {}),
        }
        for n in range(many)
    ]
    db.write(("insert", "spans", timed))
    db.release()
    con = duckdb.connect(str(db.path), read_only=True)
    count, seconds, statuses = con.execute(
        "select count(*), sum(second(started_at)), count(status) from spans where run_id = 'typed'"
    ).fetchone()
    con.close()
    assert (count, seconds, statuses) == (many, sum(n % 60 for n in range(many)), sum(1 for n in range(many) if n % 3))
    assert not list(tmp_path.glob(".bulk-*")), "the documents are removed"
    with pytest.raises(duckdb.BinderException, match="no column colour"):
        db.write(("insert", "spans", [{"run_id": "x", "span_id": str(n), "colour": "red"} for n in range(BULK_ROWS)]))
    db.release()
