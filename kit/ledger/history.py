"""What happened, for the people who look back: the reads the explorer, reports and diffs make.

Every query is a short read on its own connection (through `kit.ledger.database`), so
an open explorer never holds the ledger and never makes a run wait. Each returns
plain dicts, newest first where order is by time, and is bounded (a `limit`), so a
ledger of 10,000 runs and a million spans answers in milliseconds.
"""

from __future__ import annotations

from typing import Any

from kit.ledger.ledger import Ledger


class History:
    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.db = ledger.db

    # ---- runs ------------------------------------------------------------------

    def runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        env: str | None = None,
        principal: str | None = None,
        scenario: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """Runs, newest first, filtered; with steps done of total and seconds. `scenario` matches a
        scenario id (`-` for runs that are no scenario's)."""
        where, args = [], []
        for column, value in (("workflow", workflow), ("status", status), ("env", env), ("principal", principal)):
            if value:
                where.append(f"r.{column} = ?")
                args.append(value)
        if scenario == "-":
            where.append("r.scenario_id IS NULL")
        elif scenario:
            where.append("r.scenario_id = ?")
            args.append(scenario)
        if since:
            where.append("r.started_at >= CAST(? AS TIMESTAMP)")
            args.append(since)
        if until:
            where.append("r.started_at <= CAST(? AS TIMESTAMP)")
            args.append(until)
        sql = f"""
            WITH chosen AS (
                SELECT * FROM runs r {"WHERE " + " AND ".join(where) if where else ""}
                ORDER BY run_id DESC LIMIT ?)
            SELECT c.run_id, c.workflow, c.version, c.status, c.principal, c.env, c.started_at, c.ended_at,
                   c.scenario_id, c.bundle_id, c.engine, c.baseline_of,
                   round(epoch(c.ended_at) - epoch(c.started_at), 2) AS seconds,
                   count(s.step_id) FILTER (WHERE s.status IN ('succeeded', 'cached', 'approved')) AS done,
                   count(s.step_id) AS total
            FROM chosen c LEFT JOIN steps s USING (run_id)
            GROUP BY ALL ORDER BY c.run_id DESC"""
        return self.db.rows(sql, args + [int(limit)])

    def facets(self) -> dict[str, list[str]]:
        """The values the runs' filters can take: workflows, statuses, environments, principals, scenarios."""
        out = {}
        for column in ("workflow", "status", "env", "principal", "scenario_id"):
            rows = self.db.rows(f"SELECT DISTINCT {column} AS v FROM runs WHERE {column} IS NOT NULL ORDER BY 1")
            out[column] = [r["v"] for r in rows]
        return out

    def spans(self, run_id: str) -> list[dict[str, Any]]:
        """A run's spans in time order (the run, its steps' attempts, cells, LLM calls, custom spans)."""
        return self.db.rows(
            "SELECT span_id, parent_id, step_id, name, kind, started_at, ended_at, status, attributes "
            "FROM spans WHERE run_id = ? ORDER BY started_at NULLS LAST, span_id",
            [run_id],
        )

    def llm_calls(self, run_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """LLM calls (spans of kind `llm`), newest first: model, tokens, latency, live/recorded/replayed."""
        sql = (
            "SELECT run_id, step_id, span_id, started_at, ended_at, status, attributes FROM spans WHERE kind = 'llm'"
            + (" AND run_id = ?" if run_id else "")
            + " ORDER BY started_at DESC LIMIT ?"
        )
        return self.db.rows(sql, ([run_id] if run_id else []) + [int(limit)])

    # ---- scenarios -------------------------------------------------------------

    def comparisons(self, run_id: str | None = None, scenario_id: str | None = None) -> list[dict[str, Any]]:
        """Comparisons of one run, or of one scenario across its runs, in a stable order."""
        where, args = [], []
        if run_id:
            where.append("run_id = ?")
            args.append(run_id)
        if scenario_id:
            where.append("scenario_id = ?")
            args.append(scenario_id)
        return self.db.rows(
            "SELECT run_id, scenario_id, bundle_id, expectation, comparator, expected, actual, verdict, detail, "
            f"scenario_file, line, recorded_at FROM comparisons {'WHERE ' + ' AND '.join(where) if where else ''} "
            "ORDER BY run_id, scenario_id, line NULLS LAST, expectation",
            args,
        )

    def scenario_runs(self, last: int = 10, scenarios: list[str] | None = None) -> list[dict[str, Any]]:
        """Each scenario's last `last` runs (not replays' baselines), with the run's verdict: `pass` when every
        expectation passed, `fail` when one failed, `error` when one could not be checked. Oldest first."""
        chosen = ""
        args: list[Any] = []
        if scenarios:
            chosen = f"AND r.scenario_id IN ({', '.join('?' for _ in scenarios)})"
            args += scenarios
        sql = f"""
            WITH verdicts AS (
                SELECT run_id, scenario_id,
                       CASE WHEN bool_or(verdict = 'error') THEN 'error'
                            WHEN bool_or(verdict = 'fail') THEN 'fail' ELSE 'pass' END AS verdict,
                       count(*) AS expectations, count(*) FILTER (WHERE verdict = 'pass') AS passed
                FROM comparisons GROUP BY ALL),
            ranked AS (
                SELECT r.run_id, r.scenario_id, r.workflow, r.started_at, r.bundle_id, r.status AS run_status,
                       v.verdict, v.expectations, v.passed,
                       row_number() OVER (PARTITION BY r.scenario_id ORDER BY r.run_id DESC) AS age
                FROM runs r JOIN verdicts v USING (run_id)
                WHERE r.scenario_id IS NOT NULL AND r.baseline_of IS NULL {chosen})
            SELECT * EXCLUDE (age) FROM ranked WHERE age <= ? ORDER BY scenario_id, run_id"""
        return self.db.rows(sql, args + [int(last)])

    def replays(self, limit: int = 100) -> list[dict[str, Any]]:
        """Replays: each baseline run beside the current run it was compared with, newest first."""
        return self.db.rows(
            "SELECT b.run_id AS baseline_run, b.baseline_of AS current_run, b.scenario_id, b.bundle_id AS "
            "baseline_bundle, c.bundle_id AS current_bundle, b.started_at FROM runs b JOIN runs c "
            "ON c.run_id = b.baseline_of ORDER BY b.run_id DESC LIMIT ?",
            [int(limit)],
        )

    # ---- approvals ---------------------------------------------------------------

    def pending_approvals(self) -> list[dict[str, Any]]:
        """Approval steps waiting for a decision, oldest first, with their run."""
        return self.db.rows(
            "SELECT s.run_id, s.step_id, s.started_at AS waiting_since, s.deadline, r.workflow, r.version, "
            "r.principal AS started_by, r.env FROM steps s JOIN runs r USING (run_id) "
            "WHERE s.status = 'waiting' AND r.status = 'waiting' ORDER BY s.started_at, s.run_id"
        )

    def decisions(self, run_id: str) -> list[dict[str, Any]]:
        return self.db.rows("SELECT * FROM approvals WHERE run_id = ? ORDER BY decided_at", [run_id])

    def pass_rates(self, days: int = 60) -> list[dict[str, Any]]:
        """Per workflow and day, the share of scenario runs whose every expectation passed."""
        return self.db.rows(
            """
            WITH verdicts AS (
                SELECT run_id, bool_and(verdict = 'pass') AS passed FROM comparisons GROUP BY run_id)
            SELECT r.workflow, CAST(r.started_at AS DATE) AS day, avg(CAST(v.passed AS INTEGER)) AS rate,
                   count(*) AS runs
            FROM runs r JOIN verdicts v USING (run_id)
            WHERE r.baseline_of IS NULL AND r.started_at >= current_date - CAST(? AS INTEGER)
            GROUP BY ALL ORDER BY r.workflow, day""",
            [int(days)],
        )

    # ---- many runs at once (reports) ----------------------------------------------

    def runs_of(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """These runs' whole rows, by run id: a report of 1,000 scenarios reads them in one query, not 1,000."""
        return self.db.rows("SELECT * FROM runs WHERE run_id IN (SELECT unnest(?)) ORDER BY run_id", [list(run_ids)])

    def steps_of(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """These runs' steps (without cache keys), by run, then in the order they started."""
        return self.db.rows(
            "SELECT run_id, step_id, status, attempts, started_at, ended_at, duration_ms, cached_from, notebook, "
            "executed_notebook, error_type, error_message, error_cell, error_source, traceback, reason, depends_on "
            "FROM steps WHERE run_id IN (SELECT unnest(?)) ORDER BY run_id, started_at NULLS LAST, step_id",
            [list(run_ids)],
        )

    def comparisons_of(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """These runs' comparisons, in the order `comparisons` gives one run's."""
        return self.db.rows(
            "SELECT run_id, scenario_id, bundle_id, expectation, comparator, expected, actual, verdict, detail, "
            "scenario_file, line FROM comparisons WHERE run_id IN (SELECT unnest(?)) "
            "ORDER BY run_id, scenario_id, line NULLS LAST, expectation",
            [list(run_ids)],
        )
