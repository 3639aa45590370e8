"""The ledger's tables, as numbered migrations (DESIGN section 7).

Each migration is applied once, in order, inside a write transaction; `schema_version`
records which were. A ledger written by a newer kit (a higher version) is refused.
Columns a user's SQL can count on are listed in the README; the others are kit's own.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE bundles (
            bundle_id VARCHAR PRIMARY KEY, workflow VARCHAR, version VARCHAR,
            lock JSON, created_at TIMESTAMP);
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY, workflow VARCHAR, bundle_id VARCHAR, version VARCHAR,
            env VARCHAR, principal VARCHAR, params JSON, status VARCHAR,
            started_at TIMESTAMP, ended_at TIMESTAMP, scenario_id VARCHAR, baseline_of VARCHAR,
            git_commit VARCHAR, manifest VARCHAR, engine VARCHAR, isolation VARCHAR,
            workers INTEGER, kit_version VARCHAR, python_version VARCHAR, packages_hash VARCHAR,
            pid INTEGER, error VARCHAR);
        CREATE TABLE steps (
            run_id VARCHAR, step_id VARCHAR, status VARCHAR, attempts INTEGER,
            started_at TIMESTAMP, ended_at TIMESTAMP, duration_ms DOUBLE,
            cache_key VARCHAR, cached_from VARCHAR, notebook VARCHAR, executed_notebook VARCHAR,
            error_type VARCHAR, error_message VARCHAR, error_cell INTEGER, error_source VARCHAR,
            traceback VARCHAR,
            PRIMARY KEY (run_id, step_id));
        CREATE TABLE spans (
            run_id VARCHAR, span_id VARCHAR, parent_id VARCHAR, step_id VARCHAR,
            name VARCHAR, kind VARCHAR, started_at TIMESTAMP, ended_at TIMESTAMP,
            status VARCHAR, attributes JSON);
        CREATE TABLE outputs (
            run_id VARCHAR, step_id VARCHAR, name VARCHAR, type VARCHAR, value JSON,
            artifact VARCHAR, size_bytes BIGINT,
            PRIMARY KEY (run_id, step_id, name));
        CREATE TABLE ledger_batches (batch_id VARCHAR PRIMARY KEY, applied_at TIMESTAMP);
        """,
    ),
    (
        2,
        """
        CREATE TABLE comparisons (
            run_id VARCHAR, scenario_id VARCHAR, bundle_id VARCHAR, expectation VARCHAR,
            comparator VARCHAR, expected JSON, actual JSON, verdict VARCHAR, detail VARCHAR,
            scenario_file VARCHAR, line INTEGER, recorded_at TIMESTAMP);
        """,
    ),
    (
        3,
        """
        CREATE TABLE approvals (
            run_id VARCHAR, step_id VARCHAR, decision VARCHAR, principal VARCHAR,
            comment VARCHAR, decided_at TIMESTAMP);
        CREATE TABLE audit (
            seq BIGINT PRIMARY KEY, "at" TIMESTAMP, actor VARCHAR, action VARCHAR, subject VARCHAR,
            detail JSON, prev_hash VARCHAR, hash VARCHAR);
        """,
    ),
    (
        4,
        """
        -- a decision is final: one per approval step (where an older kit let two in, the first stands)
        DELETE FROM approvals WHERE rowid NOT IN (SELECT min(rowid) FROM approvals GROUP BY run_id, step_id);
        CREATE UNIQUE INDEX approvals_once ON approvals (run_id, step_id);
        ALTER TABLE steps ADD COLUMN deadline TIMESTAMP;  -- when a waiting approval expires
        ALTER TABLE steps ADD COLUMN reason VARCHAR;      -- why a step was skipped or cancelled
        """,
    ),
    (
        5,
        """
        -- the steps a step waits for, so the graph can be drawn from the ledger alone
        ALTER TABLE steps ADD COLUMN depends_on JSON;
        """,
    ),
    (
        6,
        """
        -- kit verify: one row per verification of a bundle id (DESIGN section 12)
        CREATE TABLE verifications (
            verification_id VARCHAR PRIMARY KEY, bundle_id VARCHAR, workflow VARCHAR, version VARCHAR,
            env VARCHAR, principal VARCHAR, verdict VARCHAR, checks JSON, record_digest VARCHAR,
            record_path VARCHAR, signed BOOLEAN, verified_at TIMESTAMP);
        -- what this project did with workflow stores: publish, yank, install, promote
        CREATE TABLE store_actions (
            action VARCHAR, store VARCHAR, name VARCHAR, version VARCHAR, bundle_id VARCHAR, env VARCHAR,
            principal VARCHAR, info JSON, "at" TIMESTAMP);
        """,
    ),
    (
        7,
        """
        -- where a run's steps executed: local (this machine's worker threads) or dask (a cluster)
        ALTER TABLE runs ADD COLUMN executor VARCHAR;
        """,
    ),
    (
        8,
        """
        -- a step skipped by a `when:` rule (its own, or its upstreams'): the decision is final, resume keeps it;
        -- the reason column says why (the expression and the values it saw)
        ALTER TABLE steps ADD COLUMN routed BOOLEAN;
        """,
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]

#: Columns holding JSON: written as JSON text, read back as values.
JSON_COLUMNS = frozenset(
    {"lock", "params", "attributes", "value", "expected", "actual", "depends_on", "checks", "info"}
)
