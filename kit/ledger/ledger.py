"""The ledger's one owner: every statement kit runs against `.kit/ledger.duckdb`, by name.

In the spirit of DBOS's `SystemDatabase`: the coordinator, the CLI, retention, replay
and the scenario suite never write SQL; they call `start_run`, `record_step`,
`cache_hit`, `resolve_run`, `list_runs`, ... Writes are batches of the operations of
`kit.ledger.database` (journaled when the file is busy); reads are short read-only
queries. Only the coordinating process writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kit.base.clock import utcnow
from kit.errors import InvalidInput, NotFound
from kit.ledger.audit import AuditEvent, Problem, verify
from kit.ledger.database import Database, read_head

RUN_STATUSES = ("running", "succeeded", "failed", "waiting", "rejected", "cancelled")
DONE_STEP_STATUSES = ("succeeded", "cached", "approved")
#: Span kinds whose `kit.llm.content` names an artifact: a model call, and an agent's tool call.
#: Every reader of those references (capture, fsck, gc, an object's origin) goes through this.
CONTENT_SPANS = "kind IN ('llm', 'tool') AND attributes->>'kit.llm.content' IS NOT NULL"
_RUN_TABLES = ("steps", "spans", "outputs", "comparisons", "approvals", "runs")
_STEP_FIELDS = (
    "status",
    "attempts",
    "started_at",
    "ended_at",
    "duration_ms",
    "cache_key",
    "cached_from",
    "notebook",
    "executed_notebook",
    "error_type",
    "error_message",
    "error_cell",
    "error_source",
    "traceback",
    "deadline",
    "reason",
    "routed",
)


def _events(events: Iterable[AuditEvent | None]) -> list[tuple]:
    return [e.op() for e in events if e is not None]


def _update_step(run_id: str, step_id: str, fields: dict[str, Any]) -> tuple:
    unknown = set(fields) - set(_STEP_FIELDS)
    if unknown:
        raise ValueError(f"not step fields: {', '.join(sorted(unknown))}")
    names = list(fields)
    assignments = ", ".join(f"{n} = ?" for n in names)
    return (
        "sql",
        f"UPDATE steps SET {assignments} WHERE run_id = ? AND step_id = ?",
        [fields[n] for n in names] + [run_id, step_id],
    )


def _start_run(bundle: dict[str, Any], run: dict[str, Any], steps: list[dict[str, Any]], event: AuditEvent) -> list:
    return [("insert_absent", "bundles", [bundle]), ("insert", "runs", [run]), ("insert", "steps", steps), event.op()]


def _record_step(step: dict[str, Any], spans: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> list[tuple]:
    fields = {k: v for k, v in step.items() if k not in ("run_id", "step_id")}
    return [
        _update_step(step["run_id"], step["step_id"], fields),
        ("insert", "spans", spans),
        ("insert", "outputs", outputs),
    ]


class Batch:
    """A run's step writes gathered to be committed together, in one transaction (`Ledger.batch`).

    The coordinator records each step here as it ends or starts, and commits the batch before it
    hands a step to an executor, before it waits on running steps and with the run's end, so a
    step's result, spans and outputs and the next step's start cost one transaction, not three, and
    are durable before that next step can act."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.ops: list[tuple] = []

    def __bool__(self) -> bool:
        return bool(self.ops)

    def start_run(
        self, bundle: dict[str, Any], run: dict[str, Any], steps: list[dict[str, Any]], event: AuditEvent
    ) -> None:
        self.ops.extend(_start_run(bundle, run, steps, event))

    def update_step(self, run_id: str, step_id: str, **fields: Any) -> None:
        self.ops.append(_update_step(run_id, step_id, fields))

    def record_step(self, step: dict[str, Any], spans: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        self.ops.extend(_record_step(step, spans, outputs))

    def take(self) -> list[tuple]:
        ops, self.ops = self.ops, []
        return ops

    def commit(self) -> None:
        """Write what was gathered, in one transaction (journaled if the file stays busy)."""
        if self.ops:
            self.ledger.db.write(*self.take())


class Ledger:
    """A project's ledger: named writes and reads. Cheap to make; holds no connection itself."""

    def __init__(self, path: str | Path, wait: float | None = None):
        self.db = Database(path, wait=wait)

    @property
    def path(self) -> Path:
        return self.db.path

    @property
    def exists(self) -> bool:
        return self.db.exists

    def reading(self):
        """A context in which reads share one connection (`Database.reading`)."""
        return self.db.reading()

    def batch(self) -> Batch:
        """Step writes to commit together (`Batch`)."""
        return Batch(self)

    def release(self) -> None:
        """Let go of the write connection now (before other processes or connections open the file)."""
        self.db.release()

    # ---- runs: writes --------------------------------------------------------

    def resume_run(self, run_id: str, pid: int, event: AuditEvent) -> None:
        self.db.write(
            ("sql", "UPDATE runs SET status = 'running', ended_at = NULL, pid = ? WHERE run_id = ?", [pid, run_id]),
            event.op(),
        )

    def finish_run(
        self,
        run_id: str,
        status: str,
        ended_at: str | None,
        run_span: dict[str, Any],
        event: AuditEvent,
        pending: Batch | None = None,
    ) -> None:
        """The run's status and end (none while it waits), its run span, the audit entry; and the steps'
        writes still `pending`, in the same transaction."""
        self.db.write(
            *(pending.take() if pending else ()),
            ("sql", "UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ?", [status, ended_at, run_id]),
            ("insert", "spans", [run_span]),
            event.op(),
        )

    # ---- steps: writes -------------------------------------------------------

    def step_waiting(self, run_id: str, step_id: str, deadline: str | None) -> None:
        """An approval step waits; it keeps the time it first started waiting, and when it expires."""
        self.db.write(
            (
                "sql",
                "UPDATE steps SET status = 'waiting', started_at = coalesce(started_at, ?), "
                "deadline = coalesce(deadline, ?) WHERE run_id = ? AND step_id = ?",
                [utcnow(), deadline, run_id, step_id],
            )
        )

    def record_decision(
        self,
        decision: dict[str, Any],
        event: AuditEvent,
        step_status: str | None = None,
        skipped: list[str] = (),
        run_status: str | None = None,
    ) -> None:
        """A decision on an approval step (a person's, or kit's when it expired) with its audit entry, in
        one transaction: `step_status` ends the step, `skipped` steps are skipped, `run_status` ends the run.

        Never journaled: a decision is final, so it must meet the ledger as it is. A second decision on the
        same step is refused (`InvalidInput`)."""
        import duckdb

        run_id, step_id, at = decision["run_id"], decision["step_id"], decision["decided_at"]
        ops = [("insert", "approvals", [decision])]
        if step_status is not None:
            ops.append(_update_step(run_id, step_id, {"status": step_status, "ended_at": at}))
        for sid in skipped:
            ops.append(_update_step(run_id, sid, {"status": "skipped", "reason": f"{step_id} was {step_status}"}))
        if run_status is not None:
            ops.append(("sql", "UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ?", [run_status, at, run_id]))
        try:
            self.db.write(*ops, event.op(), journal=False)
        except duckdb.ConstraintException:
            earlier = self.decision(run_id, step_id)
            raise InvalidInput(
                f"run {run_id}: step {step_id} was already {earlier['decision']} by {earlier['principal']} "
                f"at {earlier['decided_at']}: decisions are final"
            ) from None

    def expired_approvals(self, at: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """Waiting approval steps whose deadline has passed (of one run, or of all)."""
        sql = "SELECT run_id, step_id, deadline FROM steps WHERE status = 'waiting' AND deadline < ?"
        args: list[Any] = [at]
        if run_id is not None:
            sql += " AND run_id = ?"
            args.append(run_id)
        return self.db.rows(sql, args)

    def end_run_early(
        self,
        run_id: str,
        steps: list[str],
        reason: str,
        event: AuditEvent,
        status: str = "cancelled",
        pending: Batch | None = None,
    ) -> None:
        """A run stopped before its end (Ctrl-C, SIGTERM, a fault): its running steps and the run end
        `status` (cancelled, or failed), with the reason; `kit resume` continues it. The steps' writes
        still `pending` go first, in the same transaction."""
        at = utcnow()
        ops = list(pending.take() if pending else ())
        ops += [_update_step(run_id, sid, {"status": status, "ended_at": at, "reason": reason}) for sid in steps]
        ops.append(
            (
                "sql",
                "UPDATE runs SET status = ?, ended_at = ?, error = ? WHERE run_id = ?",
                [status, at, reason, run_id],
            )
        )
        self.db.write(*ops, event.op())

    def decision(self, run_id: str, step_id: str, settle: bool = True, lease: bool = False) -> dict[str, Any] | None:
        """The decision on an approval step (there is at most one: decisions are final). `lease`: the
        coordinator's read, mid-run, through the write connection (`Database.read`)."""
        rows = self.db.rows(
            "SELECT * FROM approvals WHERE run_id = ? AND step_id = ? ORDER BY decided_at LIMIT 1",
            [run_id, step_id],
            settle=settle,
            lease=lease,
        )
        return rows[0] if rows else None

    # ---- audit ---------------------------------------------------------------

    def audit(self, *events: AuditEvent) -> None:
        self.db.write(*_events(events))

    def audit_entries(self) -> list[dict[str, Any]]:
        """The whole audit trail, in order."""
        return self.db.rows("SELECT * FROM audit ORDER BY seq")

    def verify_audit(self) -> tuple[int, Problem | None]:
        """How many audit entries there are, and the first broken one (the head outside the table included)."""
        rows = self.audit_entries()
        return len(rows), verify(rows, read_head(self.db.head_path), str(self.db.head_path))

    def latest_audit(self, limit: int) -> tuple[list[str], list[tuple]]:
        return self.db.read(
            'SELECT seq, "at", actor, action, subject, detail FROM audit ORDER BY seq DESC LIMIT ?', [int(limit)]
        )

    # ---- comparisons ---------------------------------------------------------

    def record_comparisons(self, rows: list[dict[str, Any]]) -> None:
        self.db.write(("insert", "comparisons", rows))

    # ---- reads ---------------------------------------------------------------

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self.db.rows("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        """A run's steps, in the order they started (not started last)."""
        return self.db.rows("SELECT * FROM steps WHERE run_id = ? ORDER BY started_at NULLS LAST, step_id", [run_id])

    def step(self, run_id: str, step_id: str) -> dict[str, Any] | None:
        rows = self.db.rows("SELECT * FROM steps WHERE run_id = ? AND step_id = ?", [run_id, step_id])
        return rows[0] if rows else None

    def outputs(self, run_id: str, step_id: str | None = None, settle: bool = True) -> list[dict[str, Any]]:
        if step_id is None:
            return self.db.rows(
                "SELECT * FROM outputs WHERE run_id = ? ORDER BY step_id, name", [run_id], settle=settle
            )
        return self.db.rows(
            "SELECT * FROM outputs WHERE run_id = ? AND step_id = ? ORDER BY name", [run_id, step_id], settle=settle
        )

    def cache_lookup(self, cache_key: str, exclude_run: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """`cache_hit` and that step's outputs, read through the run's write connection (no transaction).

        A miss, which is what a suite of new scenarios meets at nearly every step, costs one
        single-table query (measured in a 50-scenario suite: 1.5 ms, where the hit and its outputs
        joined in one query cost 2.7 ms every time); a hit reads its outputs with a second."""
        hit = self.cache_hit(cache_key, exclude_run, lease=True)  # the run writes next: its connection
        if hit is None:
            return None, []
        outputs = self.db.rows(
            "SELECT * FROM outputs WHERE run_id = ? AND step_id = ? ORDER BY name",
            [hit["run_id"], hit["step_id"]],
            settle=False,
            lease=True,
        )
        return hit, outputs

    def cache_hit(self, cache_key: str, exclude_run: str, lease: bool = False) -> dict[str, Any] | None:
        """The latest finished step recorded under `cache_key` (not of `exclude_run`): its run and step,
        whose outputs are exactly those recorded under the key, and the run that first made them (`origin`).

        The key holds the step's notebook digest, inputs and declared outputs, so a hit may be another step
        running the same notebook on the same inputs. Read without settling (it runs mid-run); `lease`:
        through the run's write connection (`Database.read`)."""
        rows = self.db.rows(
            "SELECT run_id, step_id, executed_notebook, coalesce(cached_from, run_id) AS origin FROM steps "
            "WHERE cache_key = ? AND status IN ('succeeded', 'cached') AND run_id <> ? "
            "ORDER BY ended_at DESC LIMIT 1",
            [cache_key, exclude_run],
            settle=False,
            lease=lease,
        )
        return rows[0] if rows else None

    def resolve_run(self, ref: str) -> str:
        """A run id from a full id, a unique prefix of one, or `last`."""
        if ref == "last":
            _, rows = self.db.read("SELECT run_id FROM runs ORDER BY run_id DESC LIMIT 1")
        else:
            _, rows = self.db.read(
                "SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id LIMIT 3", [ref]
            )
        if not rows:
            raise NotFound(f"no run {ref!r} in {self.path}")
        if len(rows) > 1 and rows[0][0] != ref:
            raise InvalidInput(f"run {ref!r} is ambiguous: it starts {', '.join(r[0] for r in rows)}, ...")
        return rows[0][0]

    def list_runs(
        self, workflow: str | None = None, status: str | None = None, limit: int = 20
    ) -> tuple[list[str], list[tuple]]:
        """Recent runs, newest first, with their steps done of total."""
        where, args = [], []
        if workflow:
            where.append("r.workflow = ?")
            args.append(workflow)
        if status:
            where.append("r.status = ?")
            args.append(status)
        sql = f"""
            SELECT r.run_id, r.workflow, r.version, r.status, r.principal, r.env, r.started_at,
                   round(epoch(r.ended_at) - epoch(r.started_at), 2) AS seconds,
                   count(s.step_id) FILTER (WHERE s.status IN ('succeeded', 'cached', 'approved') OR s.routed) || '/' || count(s.step_id) AS steps,
                   r.scenario_id
            FROM runs r LEFT JOIN steps s USING (run_id)
            {"WHERE " + " AND ".join(where) if where else ""}
            GROUP BY ALL ORDER BY r.run_id DESC LIMIT ?"""
        return self.db.read(sql, args + [int(limit)])

    def llm_call_refs(self, run_id: str) -> list[str]:
        """The artifact references of a run's LLM calls (an agent's tool calls included), in the order they
        were made."""
        rows = self.db.rows(
            f"SELECT attributes->>'kit.llm.content' AS ref FROM spans WHERE run_id = ? AND {CONTENT_SPANS} "
            "ORDER BY started_at",
            [run_id],
        )
        return [r["ref"] for r in rows if r["ref"]]

    def object_origin(self, digest: str) -> str:
        """Who made an object, in words: a run's step output, a run's LLM call, or a bundle's file."""
        from kit.ledger.objects import digest_of, ref_of

        digest = digest_of(digest)
        ref = ref_of(digest)
        rows = self.db.rows(
            "SELECT run_id, step_id, name FROM outputs WHERE artifact = ? ORDER BY run_id LIMIT 1", [ref], settle=False
        )
        if rows:
            return f"run {rows[0]['run_id']}, step {rows[0]['step_id']} (output {rows[0]['name']})"
        rows = self.db.rows(
            f"SELECT run_id, step_id FROM spans WHERE {CONTENT_SPANS} AND attributes->>'kit.llm.content' = ? LIMIT 1",
            [ref],
            settle=False,
        )
        if rows:
            return f"run {rows[0]['run_id']}, step {rows[0]['step_id']} (an LLM call)"
        rows = self.db.rows(
            "SELECT bundle_id, workflow, lock FROM bundles WHERE contains(CAST(lock AS VARCHAR), ?) LIMIT 1",
            [digest],
            settle=False,
        )
        if rows:
            files = [k for k, v in (rows[0]["lock"] or {}).get("files", {}).items() if v == digest]
            return f"bundle {rows[0]['bundle_id'][:12]} of {rows[0]['workflow']} (file {', '.join(files)})"
        return ""

    def object_references(self) -> list[tuple[str, str]]:
        """Every object the ledger refers to, with who refers to it: (digest, words)."""
        from kit.ledger.objects import digest_of

        refs = [
            (digest_of(r["artifact"]), f"run {r['run_id']}, step {r['step_id']} (output {r['name']})")
            for r in self.db.rows("SELECT run_id, step_id, name, artifact FROM outputs WHERE artifact IS NOT NULL")
        ]
        refs += [
            (digest_of(r["ref"]), f"run {r['run_id']}, step {r['step_id']} (an LLM call)")
            for r in self.db.rows(
                f"SELECT run_id, step_id, attributes->>'kit.llm.content' AS ref FROM spans WHERE {CONTENT_SPANS}"
            )
        ]
        for row in self.db.rows("SELECT bundle_id, lock FROM bundles WHERE bundle_id IN (SELECT bundle_id FROM runs)"):
            for name, digest in (row["lock"] or {}).get("files", {}).items():
                refs.append((digest, f"bundle {row['bundle_id'][:12]} (file {name})"))
        return refs

    def executed_notebooks(self) -> list[dict[str, Any]]:
        """Every executed notebook the ledger names: run, step, path."""
        return self.db.rows(
            "SELECT run_id, step_id, executed_notebook AS path FROM steps WHERE executed_notebook IS NOT NULL"
        )

    def user_query(self, sql: str) -> tuple[list[str], list[tuple]]:
        """A user's read-only SQL (`kit sql`)."""
        return self.db.user_query(sql)

    # ---- bundles -------------------------------------------------------------

    def bundle_lock(self, bundle_id: str) -> dict[str, Any] | None:
        rows = self.db.rows("SELECT lock FROM bundles WHERE bundle_id = ?", [bundle_id])
        return rows[0]["lock"] if rows else None

    def bundle_of_version(self, workflow: str, version: str) -> str | None:
        """The newest recorded bundle of `workflow` at `version`."""
        rows = self.db.rows(
            "SELECT bundle_id FROM bundles WHERE workflow = ? AND version = ? ORDER BY created_at DESC LIMIT 1",
            [workflow, version],
        )
        return rows[0]["bundle_id"] if rows else None

    def bundles_with_prefix(self, prefix: str) -> list[dict[str, Any]]:
        return self.db.rows("SELECT bundle_id, workflow FROM bundles WHERE starts_with(bundle_id, ?)", [prefix.lower()])

    # ---- verification and stores ---------------------------------------------

    def record_verification(self, row: dict[str, Any], event: AuditEvent) -> None:
        """A verification of one bundle id (`kit verify`), with its audit entry."""
        self.db.write(("insert", "verifications", [row]), event.op())

    def verification_of(self, bundle_id: str, env: str | None = None, passed: bool = True) -> dict[str, Any] | None:
        """The latest verification of `bundle_id` (under `env`, when given); only passing ones unless told."""
        sql = "SELECT * FROM verifications WHERE bundle_id = ?"
        args: list[Any] = [bundle_id]
        if env is not None:
            sql += " AND env IS NOT DISTINCT FROM ?"
            args.append(env)
        if passed:
            sql += " AND verdict = 'verified'"
        rows = self.db.rows(sql + " ORDER BY verified_at DESC LIMIT 1", args)
        return rows[0] if rows else None

    def record_store_action(self, row: dict[str, Any], event: AuditEvent) -> None:
        """Something done with a workflow store (publish, yank, install, promote), with its audit entry."""
        self.db.write(("insert", "store_actions", [row]), event.op())

    def store_actions(self, name: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM store_actions" + (" WHERE name = ?" if name else "") + ' ORDER BY "at"'
        return self.db.rows(sql, [name] if name else [])

    # ---- retention -----------------------------------------------------------

    def runs_for_retention(self) -> list[dict[str, Any]]:
        return self.db.rows("SELECT run_id, manifest, started_at, status, scenario_id FROM runs ORDER BY run_id")

    def cache_origins(self, excluding: list[str]) -> set[str]:
        """Runs whose outputs and notebooks cached steps of other runs (not those `excluding`) still use."""
        rows = self.db.rows("SELECT DISTINCT run_id, cached_from FROM steps WHERE cached_from IS NOT NULL")
        gone = set(excluding)
        return {r["cached_from"] for r in rows if r["run_id"] not in gone}

    def delete_runs(self, run_ids: list[str], events: list[AuditEvent]) -> None:
        """Every row of these runs, in one transaction with an audit entry each."""
        marks = ", ".join("?" for _ in run_ids)
        ops = [("sql", f"DELETE FROM {table} WHERE run_id IN ({marks})", list(run_ids)) for table in _RUN_TABLES]
        self.db.write(*ops, *_events(events))

    def referenced_objects(self) -> set[str]:
        """Digests of every object a remaining output, LLM call or run's bundle refers to."""
        from kit.ledger.objects import digest_of

        keep: set[str] = set()
        for row in self.db.rows("SELECT artifact FROM outputs WHERE artifact IS NOT NULL"):
            keep.add(digest_of(row["artifact"]))
        for row in self.db.rows(f"SELECT attributes->>'kit.llm.content' AS ref FROM spans WHERE {CONTENT_SPANS}"):
            if row["ref"]:
                keep.add(digest_of(row["ref"]))
        for row in self.db.rows(
            "SELECT lock FROM bundles WHERE bundle_id IN (SELECT bundle_id FROM runs UNION "
            "SELECT bundle_id FROM store_actions UNION SELECT bundle_id FROM verifications)"
        ):
            keep.update((row["lock"] or {}).get("files", {}).values())
        return keep

    def bundles_in_stores(self) -> set[str]:
        """Bundle ids this project published, installed, promoted or verified: gc keeps their runs' bundles."""
        rows = self.db.rows("SELECT bundle_id FROM store_actions UNION SELECT bundle_id FROM verifications")
        return {r["bundle_id"] for r in rows if r["bundle_id"]}

    def checkpoint(self) -> None:
        """Give the space of deleted rows back to the file system."""
        self.db.checkpoint()
