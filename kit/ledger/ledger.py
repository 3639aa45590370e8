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
from kit.ledger.audit import AuditEvent
from kit.ledger.database import Database

RUN_STATUSES = ("running", "succeeded", "failed", "waiting", "rejected", "cancelled")
DONE_STEP_STATUSES = ("succeeded", "cached", "approved")
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

    def release(self) -> None:
        """Let go of the write connection now (before other processes or connections open the file)."""
        self.db.release()

    # ---- runs: writes --------------------------------------------------------

    def start_run(
        self, bundle: dict[str, Any], run: dict[str, Any], steps: list[dict[str, Any]], event: AuditEvent
    ) -> None:
        """A new run: its bundle (once per bundle id), its row, a pending row per step, the audit entry."""
        self.db.write(
            ("insert_absent", "bundles", [bundle]), ("insert", "runs", [run]), ("insert", "steps", steps), event.op()
        )

    def resume_run(self, run_id: str, pid: int, event: AuditEvent) -> None:
        self.db.write(
            ("sql", "UPDATE runs SET status = 'running', ended_at = NULL, pid = ? WHERE run_id = ?", [pid, run_id]),
            event.op(),
        )

    def finish_run(
        self, run_id: str, status: str, ended_at: str | None, run_span: dict[str, Any], event: AuditEvent
    ) -> None:
        """The run's status and end (none while it waits), its run span, the audit entry."""
        self.db.write(
            ("sql", "UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ?", [status, ended_at, run_id]),
            ("insert", "spans", [run_span]),
            event.op(),
        )

    # ---- steps: writes -------------------------------------------------------

    def update_step(self, run_id: str, step_id: str, **fields: Any) -> None:
        """Set fields of a step's row (its status, start, attempts, cache key, ...)."""
        self.db.write(_update_step(run_id, step_id, fields))

    def step_waiting(self, run_id: str, step_id: str) -> None:
        """An approval step waits; it keeps the time it first started waiting."""
        self.db.write(
            (
                "sql",
                "UPDATE steps SET status = 'waiting', started_at = coalesce(started_at, ?) "
                "WHERE run_id = ? AND step_id = ?",
                [utcnow(), run_id, step_id],
            )
        )

    def record_step(self, step: dict[str, Any], spans: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        """One step attempt's result in one transaction: its row's fields, its spans, its outputs."""
        fields = {k: v for k, v in step.items() if k not in ("run_id", "step_id")}
        self.db.write(
            _update_step(step["run_id"], step["step_id"], fields),
            ("insert", "spans", spans),
            ("insert", "outputs", outputs),
        )

    # ---- approvals -----------------------------------------------------------

    def record_decision(self, decision: dict[str, Any], event: AuditEvent, step_status: str | None = None) -> None:
        """A decision on an approval step (a person's, or kit's when it expired), with its audit entry;
        `step_status` also ends the step with that status."""
        ops = [("insert", "approvals", [decision])]
        if step_status is not None:
            ops.append(
                _update_step(
                    decision["run_id"], decision["step_id"], {"status": step_status, "ended_at": decision["decided_at"]}
                )
            )
        self.db.write(*ops, event.op())

    def decision(self, run_id: str, step_id: str) -> dict[str, Any] | None:
        rows = self.db.rows(
            "SELECT * FROM approvals WHERE run_id = ? AND step_id = ? ORDER BY decided_at DESC LIMIT 1",
            [run_id, step_id],
        )
        return rows[0] if rows else None

    # ---- audit ---------------------------------------------------------------

    def audit(self, *events: AuditEvent) -> None:
        self.db.write(*_events(events))

    def audit_entries(self) -> list[dict[str, Any]]:
        """The whole audit trail, in order."""
        return self.db.rows("SELECT * FROM audit ORDER BY seq")

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

    def outputs(self, run_id: str, step_id: str | None = None) -> list[dict[str, Any]]:
        if step_id is None:
            return self.db.rows("SELECT * FROM outputs WHERE run_id = ? ORDER BY step_id, name", [run_id])
        return self.db.rows("SELECT * FROM outputs WHERE run_id = ? AND step_id = ? ORDER BY name", [run_id, step_id])

    def cache_hit(self, cache_key: str, step_id: str, exclude_run: str) -> dict[str, Any] | None:
        """The latest finished step recorded under `cache_key` (not of `exclude_run`), with the run whose
        outputs it holds (`origin`)."""
        rows = self.db.rows(
            "SELECT run_id, cached_from, executed_notebook, coalesce(cached_from, run_id) AS origin FROM steps "
            "WHERE cache_key = ? AND step_id = ? AND status IN ('succeeded', 'cached') AND run_id <> ? "
            "ORDER BY ended_at DESC LIMIT 1",
            [cache_key, step_id, exclude_run],
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
                   count(s.step_id) FILTER (WHERE s.status IN ('succeeded', 'cached')) || '/' || count(s.step_id) AS steps,
                   r.scenario_id
            FROM runs r LEFT JOIN steps s USING (run_id)
            {"WHERE " + " AND ".join(where) if where else ""}
            GROUP BY ALL ORDER BY r.run_id DESC LIMIT ?"""
        return self.db.read(sql, args + [int(limit)])

    def llm_call_refs(self, run_id: str) -> list[str]:
        """The artifact references of a run's LLM calls, in the order they were made."""
        rows = self.db.rows(
            "SELECT attributes->>'kit.llm.content' AS ref FROM spans WHERE run_id = ? AND kind = 'llm' "
            "ORDER BY started_at",
            [run_id],
        )
        return [r["ref"] for r in rows if r["ref"]]

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

    def bundle_of_run(self, ref: str) -> str | None:
        """The bundle of the one run `ref` names (its id, or a prefix of 8 characters or more)."""
        rows = self.db.rows(
            "SELECT bundle_id FROM runs WHERE run_id = ? OR (length(?) >= 8 AND starts_with(run_id, ?)) LIMIT 2",
            [ref, ref, ref],
        )
        return rows[0]["bundle_id"] if len(rows) == 1 else None

    def bundles_with_prefix(self, prefix: str) -> list[dict[str, Any]]:
        return self.db.rows("SELECT bundle_id, workflow FROM bundles WHERE starts_with(bundle_id, ?)", [prefix.lower()])

    # ---- retention -----------------------------------------------------------

    def runs_for_retention(self) -> list[dict[str, Any]]:
        return self.db.rows("SELECT run_id, manifest, started_at, status FROM runs ORDER BY run_id")

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
        for row in self.db.rows("SELECT attributes->>'kit.llm.content' AS ref FROM spans WHERE kind = 'llm'"):
            if row["ref"]:
                keep.add(digest_of(row["ref"]))
        for row in self.db.rows("SELECT lock FROM bundles WHERE bundle_id IN (SELECT bundle_id FROM runs)"):
            keep.update((row["lock"] or {}).get("files", {}).values())
        return keep

    def checkpoint(self) -> None:
        """Give the space of deleted rows back to the file system."""
        self.db.checkpoint()
