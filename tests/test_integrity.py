"""Integrity and exactly-once: one driver per run, objects re-hashed when read, the audit head,
cache hits that return their own outputs, and `kit fsck` (DESIGN sections 6 and 7)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

KIT_YAML = """
principals: {alice: [analyst], bob: [reviewer]}
roles: {analyst: [payouts:write, cases:read], reviewer: [cases:read]}
"""

PAY = """
import kit, pathlib, time
time.sleep(pause)
with open(pathlib.Path("..") / "payouts.log", "a") as log:  # the side effect: outside the workflow's folder
    log.write(kit.idempotency_key() + "\\n")
kit.output("paid", amount)
"""


@pytest.fixture
def payout(project):
    (project.root / "kit.yaml").write_text(KIT_YAML)
    project.notebook("pay.ipynb", "amount: int = 10\npause: float = 0.0", PAY)
    project.manifest(
        """
        workflow: payout
        version: 1
        params: {amount: {type: integer, default: 10}, pause: {type: number, default: 3.0}}
        steps:
          review: {approval: {approvers: [reviewer]}}
          pay:
            notebook: pay.ipynb
            inputs: {amount: params.amount, pause: params.pause}
            outputs: {paid: integer}
            requires: [payouts:write]
            cache: false
            after: [review]
        """
    )
    return project


def _start(project, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "kit.cli", *args],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_resumes_at_once_pay_exactly_once(payout):
    log = payout.root / "payouts.log"
    for trial in range(3):
        started = payout.kit("run", "wf", "-p", f"amount={trial + 1}", "--as", "alice")
        assert started.returncode == 3, started.stderr
        run_id = started.stdout.split()[1]
        assert payout.kit("approve", run_id, "review", "--as", "bob").returncode == 0
        first, second = (
            _start(payout, "resume", run_id, "--as", "alice"),
            _start(payout, "resume", run_id, "--as", "alice"),
        )
        outs = [p.communicate(timeout=120) for p in (first, second)]
        codes = sorted(p.returncode for p in (first, second))
        assert codes == [0, 2], outs
        refused = next(err for (out, err), p in zip(outs, (first, second)) if p.returncode == 2)
        assert f"run {run_id} is being driven by process" in refused and "Traceback" not in refused
        keys = log.read_text().split()
        assert len(keys) == trial + 1, "the payout ran twice"
        assert payout.sql(f"select status from runs where run_id = '{run_id}'")[0]["status"] == "succeeded"


def test_the_idempotency_key_is_the_same_across_retries_and_resumes(project):
    project.notebook(
        "once.ipynb",
        "x: int = 0",
        """
        import kit, pathlib
        keys = pathlib.Path("../keys.txt")
        with open(keys, "a") as fh:
            fh.write(kit.idempotency_key() + "\\n")
        if len(keys.read_text().split()) < 3:
            raise ConnectionError("the other system did not answer")
        kit.output("y", x)
        """,
    )
    project.manifest(
        """
        workflow: once
        version: 1
        steps:
          once:
            notebook: once.ipynb
            outputs: {y: integer}
            retries: {attempts: 2, backoff: 0.05}
            cache: false
        """
    )
    failed = project.kit("run", "wf", "--engine", "warm", "--workers", "1")
    assert failed.returncode == 1  # two attempts, both failed
    run_id = failed.stdout.split()[1]
    resumed = project.kit("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    keys = (project.root / "keys.txt").read_text().split()
    assert len(keys) == 3 and len(set(keys)) == 1 and len(keys[0]) == 32
    other = project.kit("run", "wf", "--engine", "warm", "--workers", "1")
    assert other.returncode == 0
    assert (project.root / "keys.txt").read_text().split()[-1] != keys[0]  # another run, another key


# --------------------------------------------------------------------------- objects are re-hashed


TAMPER_YAML = """
principals: {alice: [analyst], bob: [reviewer]}
roles: {analyst: [], reviewer: []}
"""


@pytest.fixture
def tamper(project):
    """A run waiting at a gate, having made one object of each kind: a table, a JSON output, an LLM call,
    and the notebook snapshots of its bundle; a scenario of it for replay."""
    (project.root / "kit.yaml").write_text(TAMPER_YAML)
    project.notebook(
        "make.ipynb",
        "x: int = 1",
        """
        import kit, pandas as pd
        reply = kit.llm.chat("Refund the customer. Then close the case.")
        kit.output("rows", pd.DataFrame({"v": [x, x + 1]}))
        kit.output("decision", {"action": "review", "reply": reply})
        """,
    )
    project.notebook(
        "use.ipynb",
        "rows: str = ''\ndecision: dict = {}",
        "import kit\nkit.output('total', int(kit.load(rows).v.sum()))\nkit.output('action', decision['action'])",
    )
    project.manifest(
        """
        workflow: tamper
        version: 1
        params: {x: {type: integer, default: 1}}
        steps:
          make:
            notebook: make.ipynb
            inputs: {x: params.x}
            outputs: {rows: table, decision: object}
          review: {approval: {approvers: [reviewer]}, after: [make]}
          use:
            notebook: use.ipynb
            inputs: {rows: make.rows, decision: make.decision}
            outputs: {total: integer, action: string}
            after: [review]
        """
    )
    started = project.kit("run", "wf", "--as", "alice", "--engine", "warm", "--workers", "1")
    assert started.returncode == 3, started.stderr
    project.run_id = started.stdout.split()[1]
    outputs = {o["name"]: o for o in project.sql(f"select * from outputs where run_id = '{project.run_id}'")}
    project.table = outputs["rows"]["artifact"].split(":")[-1]
    project.decision = outputs["decision"]["artifact"].split(":")[-1]
    (llm,) = project.sql("select attributes->>'kit.llm.content' as ref from spans where kind = 'llm'")
    project.llm_call = llm["ref"].split(":")[-1]
    lock = project.sql("select lock from bundles")[0]["lock"]
    project.snapshot = lock["files"]["use.ipynb"]
    return project


def _object(project, digest: str) -> Path:
    return project.root / ".kit" / "objects" / digest[:2] / digest[2:]


def _flip(path: Path, at: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_rewritten_object_is_refused_by_fsck_naming_it_and_who_made_it(tamper):
    clean = tamper.kit("fsck")
    assert clean.returncode == 0, clean.stderr
    for digest in (tamper.table, tamper.decision, tamper.llm_call, tamper.snapshot):
        _flip(_object(tamper, digest))
    found = tamper.kit("fsck")
    assert found.returncode == 1 and "Traceback" not in found.stderr
    for digest, who in (
        (tamper.table, "step make (output rows)"),
        (tamper.decision, "step make (output decision)"),
        (tamper.llm_call, "step make (an LLM call)"),
        (tamper.snapshot, "(file use.ipynb)"),
    ):
        line = next(line for line in found.stderr.splitlines() if digest in line)
        assert "is corrupt" in line and who in line, line


def test_a_rewritten_table_is_refused_by_resume_and_by_the_cache(tamper):
    _flip(_object(tamper, tamper.table))
    assert tamper.kit("approve", tamper.run_id, "review", "--as", "bob").returncode == 0
    resumed = tamper.kit("resume", tamper.run_id)
    assert resumed.returncode == 1 and "Traceback" not in resumed.stderr
    assert f"cannot resume run {tamper.run_id}" in resumed.stderr and tamper.table in resumed.stderr
    assert f"made by run {tamper.run_id}, step make (output rows)" in resumed.stderr
    assert tamper.sql(f"select status from steps where run_id = '{tamper.run_id}' and step_id = 'use'")[0][
        "status"
    ] in ("pending", "waiting")  # nothing ran on the rewritten table

    again = tamper.kit("run", "wf", "--as", "alice", "--engine", "warm", "--workers", "1")
    assert again.returncode == 3
    assert "not reusing the cache" in again.stderr and tamper.table in again.stderr
    run_id = again.stdout.split()[1]
    make = tamper.sql(f"select status from steps where run_id = '{run_id}' and step_id = 'make'")[0]
    assert make["status"] == "succeeded"  # ran afresh, and put the right bytes back
    assert tamper.kit("fsck").returncode == 0


def test_a_rewritten_json_output_is_refused_by_the_cache_and_a_changed_ledger_value_by_resume(tamper):
    _flip(_object(tamper, tamper.decision), at=-3)
    again = tamper.kit("run", "wf", "--as", "alice", "--engine", "warm", "--workers", "1")
    assert again.returncode == 3 and "not reusing the cache" in again.stderr and tamper.decision in again.stderr

    with duckdb.connect(str(tamper.root / ".kit" / "ledger.duckdb")) as con:  # someone edits the ledger by hand
        con.execute(
            'UPDATE outputs SET value = \'{"action": "approve", "reply": ""}\' '
            f"WHERE run_id = '{tamper.run_id}' AND name = 'decision'"
        )
    assert tamper.kit("approve", tamper.run_id, "review", "--as", "bob").returncode == 0
    resumed = tamper.kit("resume", tamper.run_id)
    assert resumed.returncode == 1
    assert "the value in the ledger differs from its object" in resumed.stderr


def test_an_edited_snapshot_is_refused_by_replay_and_a_rewritten_llm_call_by_capture(tamper):
    scenario = tamper.root / "scenarios" / "tamper" / "one.yaml"
    scenario.parent.mkdir(parents=True)
    scenario.write_text(
        "scenario: tamper/one\nworkflow: tamper\nas: alice\nllm_mode: live\nexpect:\n  make.decision.action: {equals: review}\n"
    )
    _flip(_object(tamper, tamper.snapshot), at=-5)
    replayed = tamper.kit("replay", str(scenario), "--baseline", tamper.run_id)
    assert replayed.returncode == 1 and "Traceback" not in replayed.stderr
    assert tamper.snapshot in replayed.stderr and "file use.ipynb" in replayed.stderr
    assert "INVALID" not in replayed.stdout and "fixed" not in replayed.stdout

    _flip(_object(tamper, tamper.llm_call))
    captured = tamper.kit("capture", tamper.run_id, "-o", str(scenario.with_name("two.yaml")))
    assert captured.returncode == 1 and tamper.llm_call in captured.stderr and "an LLM call" in captured.stderr
    assert not scenario.with_name("two.yaml").exists()


# --------------------------------------------------------------------------- the audit head


def test_removing_the_newest_audit_entries_is_detected_and_their_seqs_are_not_reused(tamper):
    assert tamper.kit("audit", "verify").returncode == 0
    with duckdb.connect(str(tamper.root / ".kit" / "ledger.duckdb")) as con:
        last = con.execute("select max(seq) from audit").fetchone()[0]
        con.execute(f"delete from audit where seq > {last - 2}")
    verified = tamper.kit("audit", "verify")
    assert verified.returncode == 1
    assert f"audit entries {last - 1} to {last} are missing" in verified.stderr
    tamper.kit("approve", tamper.run_id, "review", "--as", "bob")  # the trail goes on after the gap
    seqs = [r["seq"] for r in tamper.sql("select seq from audit order by seq")]
    assert seqs[-1] == last + 1 and last - 1 not in seqs
    assert "missing" in tamper.kit("audit", "verify").stderr


@pytest.mark.parametrize("head", ["deleted", "garbled"])
def test_removing_the_newest_entries_and_the_head_stays_detected_after_the_next_write(tamper, head):
    """With the head file gone too, the next write cannot know what was removed: it says so in the chain
    (an `audit.head_lost` entry), and `kit audit verify` keeps saying it instead of calling the chain intact."""
    head_file = tamper.root / ".kit" / "audit.head"
    with duckdb.connect(str(tamper.root / ".kit" / "ledger.duckdb")) as con:
        last = con.execute("select max(seq) from audit").fetchone()[0]
        con.execute(f"delete from audit where seq = {last}")
    if head == "deleted":
        head_file.unlink()
    else:
        head_file.write_text('{"seq": "nine"')
    assert tamper.kit("audit", "verify").returncode == 1
    assert tamper.kit("approve", tamper.run_id, "review", "--as", "bob").returncode == 0
    verified = tamper.kit("audit", "verify")
    assert verified.returncode == 1 and "was missing or unreadable" in verified.stderr, verified.stderr
    actions = [r["action"] for r in tamper.sql("select action from audit order by seq")]
    assert actions.count("audit.head_lost") == 1 and actions[-1] != "audit.head_lost"


# --------------------------------------------------------------------------- the cache


def test_identical_steps_in_a_chain_each_get_their_own_outputs_from_the_cache(project):
    steps = []
    for i in range(1, 6):
        project.notebook(f"s{i}.ipynb", "x: int = 0", "import kit\nkit.output('y', x + 1)")
        source = "params.x" if i == 1 else f"s{i - 1}.y"
        steps.append(f"  s{i}: {{notebook: s{i}.ipynb, inputs: {{x: {source}}}, outputs: {{y: integer}}}}")
    project.manifest("workflow: five\nversion: 1\nparams: {x: {type: integer}}\nsteps:\n" + "\n".join(steps) + "\n")
    for x in (1, 2, 3, 1, 4, 2):  # later runs hit keys that earlier runs recorded under other steps
        done = project.kit("run", "wf", "-p", f"x={x}", "--engine", "warm", "--workers", "1")
        assert done.returncode == 0, done.stderr
        run_id = done.stdout.split()[1]
        ys = {
            o["step_id"]: o["value"]
            for o in project.sql(f"select step_id, value from outputs where run_id = '{run_id}'")
        }
        assert ys == {f"s{i}": x + i for i in range(1, 6)}, (x, ys)
    cached = project.sql("select count(*) as n from steps where status = 'cached'")[0]["n"]
    assert cached > 0


def test_fsck_names_a_missing_object_and_a_missing_executed_notebook(chain):
    done = chain.kit("run", "wf")
    assert done.returncode == 0
    run_id = done.stdout.split()[1]
    rows = chain.sql(f"select artifact from outputs where run_id = '{run_id}' and name = 'rows'")[0]["artifact"]
    _object(chain, rows.split(":")[-1]).unlink()
    (chain.root / ".kit" / "runs" / run_id / "b.ipynb").unlink()
    found = chain.kit("fsck")
    assert found.returncode == 1
    assert f"run {run_id}, step a (output rows) refers to object sha256:{rows.split(':')[-1]}, which is missing" in (
        found.stderr
    )
    assert f"run {run_id}, step b: its executed notebook" in found.stderr
    time.sleep(0)  # nothing else: fsck only reads
    assert json.loads(json.dumps(chain.sql("select count(*) as n from runs")))[0]["n"] == 1


# ---- kit sql and the journal ------------------------------------------------------------


def test_kit_sql_reaches_no_file_and_changes_nothing_with_or_without_a_ledger_or_journal(chain, tmp_path):
    """A user's SQL runs on a read-only connection that reaches no file: before the first run (the
    in-memory empty ledger), and after one while journaled batches wait (applied first, then a fresh
    read-only connection, never the write connection the applying opened)."""
    outside = tmp_path / "outside.csv"

    def refused(sql: str) -> None:
        result = chain.kit("sql", sql)
        assert result.returncode == 2 and "root:" not in result.stdout, result.stdout + result.stderr

    refused("select * from read_csv('/etc/passwd')")
    refused(f"EXPLAIN ANALYZE COPY (select 1) TO '{outside}'")
    assert not (chain.root / ".kit" / "ledger.duckdb").exists()

    assert chain.kit("run", "wf").returncode == 0
    audit = chain.sql("select count(*) as n from audit")[0]["n"]
    pending = chain.root / ".kit" / "pending"
    for n in range(3):
        pending.mkdir(exist_ok=True)
        (pending / f"{n}-waiting.json").write_text(json.dumps({"batch_id": f"waiting-{n}", "ops": []}))
        refused(
            [
                "select * from read_csv('/etc/passwd')",
                "EXPLAIN ANALYZE DELETE FROM audit",
                f"EXPLAIN ANALYZE COPY (select 1) TO '{outside}'",
            ][n]
        )
    assert not outside.exists()
    assert chain.sql("select count(*) as n from audit")[0]["n"] == audit
    assert list(pending.glob("*.json")) == []  # applied


def test_a_journal_file_that_is_no_batch_is_set_aside_and_never_blocks_the_ledger(chain):
    assert chain.kit("run", "wf").returncode == 0
    pending = chain.root / ".kit" / "pending"
    pending.mkdir(exist_ok=True)
    bad = {
        "1-text.json": "not json",
        "2-no-id.json": json.dumps({"ops": []}),
        "3-list.json": json.dumps([1]),
        "4-unknown-op.json": json.dumps({"batch_id": "b4", "ops": [["frobnicate"]]}),
        "5-unknown-table.json": json.dumps({"batch_id": "b5", "ops": [["insert", "nowhere", [{"a": 1}]]]}),
    }
    for name, text in bad.items():
        (pending / name).write_text(text)
    listed = chain.kit("runs")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert listed.stderr.count("could not be applied") == len(bad)
    assert sorted(p.name for p in (pending / "failed").glob("*.json")) == sorted(bad)
    assert list(pending.glob("*.json")) == []
    again = chain.kit("run", "wf", "--fresh")
    assert again.returncode == 0 and "could not be applied" not in again.stderr, again.stderr


def test_a_run_while_another_process_holds_the_ledger_goes_on_and_is_recorded_after(chain):
    """A notebook holding the ledger read-write: the run cannot look in its cache (the step runs, said on
    stderr), journals what it writes, and ends as it would have; the journal is applied once the file is free."""
    assert chain.kit("run", "wf").returncode == 0
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(20)",
            str(chain.root / ".kit" / "ledger.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = chain.kit("run", "wf", "-p", "x=5", env={"KIT_LEDGER_WAIT": "1"})
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert "not looking in the cache" in result.stderr
    finally:
        holder.kill()
        holder.wait()
    runs = chain.sql("select status from runs order by started_at")
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
