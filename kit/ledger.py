"""The ledger: one DuckDB file, `.kit/ledger.duckdb`, written only by the coordinator.

DuckDB lets one process hold a file read-write and then no other process may open
it at all (FIELD-NOTES). So every write is a short transaction behind a
cross-process file lock, on a connection opened and closed around it, retried while
someone else (a notebook, `kit sql`, the explorer) holds the file. A batch that
still cannot be written is journaled to `.kit/pending/` and applied by the next
writer: a reader that never lets go delays rows, it never loses them or fails a run.

Writes are batches of plain operations, so they can be journaled as JSON:
``("upsert", table, rows)``, ``("insert", table, rows)``, ``("sql", statement, params)``.
"""

from __future__ import annotations

import json
import os
import atexit
import random
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from kit.errors import InvalidInput, KitError

# Each migration is applied once, in order, inside a write transaction.
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
]

SCHEMA_VERSION = MIGRATIONS[-1][0]
LEASE = 0.3  # seconds a write connection stays open after its last transaction
LEASE_MAX = 1.0  # seconds it may stay open in all, however busy the run


class _Lease:
    """The process's write connection to one ledger file, and the file lock that goes with it."""

    def __init__(self) -> None:
        self.guard = threading.RLock()
        self.con = None
        self.lock = None
        self.timer: threading.Timer | None = None
        self.leased_at = 0.0


_LEASES: dict[str, _Lease] = {}
_LEASES_GUARD = threading.Lock()


def _lease_of(path: Path) -> _Lease:
    with _LEASES_GUARD:
        return _LEASES.setdefault(str(path.resolve()), _Lease())


@atexit.register
def _release_leases() -> None:
    for path in list(_LEASES):
        Ledger(path).release()
_JSON_COLUMNS = {"lock", "params", "attributes", "value", "expected", "actual"}


def utcnow() -> str:
    """Now, in UTC, as the naive ISO text the ledger's TIMESTAMP columns store."""
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text or "being used by another process" in text


@dataclass
class Batch:
    ops: list[tuple]
    batch_id: str = ""

    def __post_init__(self) -> None:
        self.batch_id = self.batch_id or uuid.uuid4().hex


class Ledger:
    def __init__(self, path: str | Path, wait: float | None = None):
        self.path = Path(path)
        self.lock_path = self.path.with_suffix(".lock")
        self.pending_dir = self.path.parent / "pending"
        self.wait = float(os.environ.get("KIT_LEDGER_WAIT", 15.0)) if wait is None else wait
        self._journaling = False  # after one busy wait, don't wait long again until a write goes through
        # A write connection is kept for LEASE seconds after a transaction, so a run's many
        # short transactions share it; then it is closed and the file lock let go. It is
        # shared by every Ledger of this file in the process (DuckDB allows one configuration).
        self._lease = _lease_of(self.path)

    # ---- connections -------------------------------------------------------

    def _connect(self, read_only: bool, wait: float):
        import duckdb

        deadline = time.monotonic() + wait
        delay = 0.01
        while True:
            try:
                if read_only:
                    return duckdb.connect(str(self.path), read_only=True, config={"enable_external_access": False})
                con = duckdb.connect(str(self.path), config={"checkpoint_threshold": "1MB"})
                # Closing would checkpoint after every short transaction; let the WAL (durable
                # all the same) grow to the threshold instead: writes cost half as much.
                con.execute("PRAGMA disable_checkpoint_on_shutdown")
                return con
            except duckdb.Error as exc:
                if not _is_lock_error(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.25)

    def _open_lease(self, wait: float):
        """The write connection: the lease's, or a new one behind the cross-process file lock."""
        import duckdb
        from filelock import FileLock, Timeout

        if self._lease.con is not None:
            return self._lease.con
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path), thread_local=False)
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise _Busy() from None
        try:
            con = self._connect(read_only=False, wait=wait)
            self._migrate(con)
        except BaseException as exc:
            lock.release()
            if isinstance(exc, duckdb.Error) and _is_lock_error(exc):
                raise _Busy() from None
            raise
        self._lease.con, self._lease.lock = con, lock
        self._lease.leased_at = time.monotonic()
        return con

    def release(self) -> None:
        """Close the leased connection and let other processes in."""
        with self._lease.guard:
            if self._lease.timer is not None:
                self._lease.timer.cancel()
                self._lease.timer = None
            if self._lease.con is not None:
                try:
                    self._lease.con.close()
                finally:
                    self._lease.con = None
                    self._lease.lock.release()
                    self._lease.lock = None

    def _renew(self) -> None:
        """Keep the connection a little longer; but never past LEASE_MAX, so readers get their turn."""
        if time.monotonic() - self._lease.leased_at > LEASE_MAX:
            self.release()
            return
        if self._lease.timer is not None:
            self._lease.timer.cancel()
        self._lease.timer = threading.Timer(LEASE, self.release)
        self._lease.timer.daemon = True
        self._lease.timer.start()

    @contextmanager
    def transaction(self, wait: float | None = None) -> Iterator[Any]:
        """A write transaction; applies journaled batches first."""
        wait = self.wait if wait is None else wait
        with self._lease.guard:
            con = self._open_lease(wait)
            try:
                drained = self._drain_pending(con)
                con.execute("BEGIN TRANSACTION")
                try:
                    yield con
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            except BaseException:
                self.release()
                raise
            for path in drained:
                path.unlink(missing_ok=True)
            self._renew()

    def checkpoint(self) -> None:
        """Write the WAL into the file and give freed pages back (after deletions)."""
        with self._lease.guard:
            self._open_lease(self.wait).execute("CHECKPOINT")
            self._renew()

    def _migrate(self, con) -> None:
        con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, applied_at TIMESTAMP)")
        current = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise KitError(
                f"{self.path}: the ledger's schema is version {current}, newer than this kit "
                f"(knows {SCHEMA_VERSION}): upgrade kit"
            )
        for version, sql in MIGRATIONS:
            if version > current:
                con.execute("BEGIN TRANSACTION")
                con.execute(sql)
                con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, utcnow()])
                con.execute("COMMIT")

    # ---- writing -----------------------------------------------------------

    def write(self, *ops: tuple, wait: float | None = None) -> bool:
        """Apply `ops` in one transaction; journal them if the file stays busy. True if written now."""
        batch = Batch(list(ops))
        if wait is None and self._journaling:
            wait = min(self.wait, 0.2)
        try:
            with self.transaction(wait=wait) as con:
                _apply(con, batch.ops)
        except _Busy:
            self._journal(batch)
            self._journaling = True
            return False
        self._journaling = False
        return True

    def _journal(self, batch: Batch) -> None:
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{batch.batch_id}.json"
        tmp = self.pending_dir / (".tmp-" + name)
        with open(tmp, "w") as fh:
            json.dump({"batch_id": batch.batch_id, "ops": batch.ops}, fh, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.pending_dir / name)

    def pending(self) -> list[Path]:
        if not self.pending_dir.is_dir():
            return []
        return sorted(p for p in self.pending_dir.glob("*.json") if not p.name.startswith(".tmp-"))

    def _drain_pending(self, con) -> list[Path]:
        done = []
        for path in self.pending():
            try:
                batch = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a torn journal file cannot exist (atomic rename); skip what we cannot read
            seen = con.execute("SELECT 1 FROM ledger_batches WHERE batch_id = ?", [batch["batch_id"]]).fetchall()
            if not seen:
                con.execute("BEGIN TRANSACTION")
                _apply(con, [tuple(op) for op in batch["ops"]])
                con.execute("INSERT INTO ledger_batches VALUES (?, ?)", [batch["batch_id"], utcnow()])
                con.execute("COMMIT")
            done.append(path)
        return done

    def flush(self) -> None:
        """Apply journaled batches now (a no-op when there are none)."""
        if self.pending():
            self.write()

    # ---- reading -----------------------------------------------------------

    def ensure(self) -> None:
        """Create the file and its schema if missing (readers need the tables to exist)."""
        if not self.path.exists() or self.pending():
            self.write()

    def query(self, sql: str, params: list | None = None, wait: float | None = None) -> tuple[list[str], list[tuple]]:
        """Run a read-only query; returns column names and rows."""
        self.ensure()
        with self._lease.guard:
            if self._lease.con is not None:  # this process holds the lease: read through it
                return self._fetch(self._lease.con, sql, params)
        con = self._connect(read_only=True, wait=self.wait if wait is None else wait)
        try:
            return self._fetch(con, sql, params)
        finally:
            con.close()

    @staticmethod
    def _fetch(con, sql: str, params: list | None) -> tuple[list[str], list[tuple]]:
        cursor = con.execute(sql, params or [])
        description = cursor.description or []
        rows = cursor.fetchall()
        json_columns = [i for i, d in enumerate(description) if str(d[1]) == "JSON"]
        if json_columns:  # JSON columns come back as text: give callers the values
            rows = [tuple(json.loads(v) if i in json_columns and isinstance(v, str) else v
                          for i, v in enumerate(row)) for row in rows]
        return [d[0] for d in description], rows

    def rows(self, sql: str, params: list | None = None) -> list[dict[str, Any]]:
        columns, rows = self.query(sql, params)
        return [dict(zip(columns, row)) for row in rows]

    def user_query(self, sql: str) -> tuple[list[str], list[tuple]]:
        """A user's SQL: read statements only (`kit sql`)."""
        import duckdb

        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise InvalidInput(f"kit sql: {exc}") from None
        if not statements:
            raise InvalidInput("kit sql: no statement given")
        allowed = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
        for statement in statements:
            if statement.type not in allowed:
                raise InvalidInput(
                    f"kit sql is read-only: refused a {statement.type.name} statement "
                    "(only SELECT, WITH ... SELECT and EXPLAIN run here)"
                )
        try:
            return self.query(sql)
        except duckdb.Error as exc:
            raise InvalidInput(f"kit sql: {str(exc).splitlines()[0]}") from None


class _Busy(Exception):
    """The ledger stayed locked by another process for the whole wait."""


def _encode(row: dict[str, Any]) -> dict[str, Any]:
    """JSON columns take Python values (a str becomes a JSON string, None stays NULL)."""
    return {k: json.dumps(v, default=str) if k in _JSON_COLUMNS and v is not None else v for k, v in row.items()}


_BULK_ROWS = 500  # from here on, Arrow beats executemany by far (it costs an import of pyarrow)


def _arrow_type(pa, values: list[Any]):
    """The column's Arrow type from its first value: inferring it costs more than the insert."""
    sample = next((v for v in values if v is not None), None)
    for python_type, arrow_type in ((bool, pa.bool_()), (int, pa.int64()), (float, pa.float64()), (str, pa.string())):
        if isinstance(sample, python_type):
            return arrow_type
    return None


def _insert(con, table: str, rows: list[dict[str, Any]], replace: bool) -> None:
    verb = "INSERT OR REPLACE INTO" if replace else "INSERT INTO"
    if len(rows) >= _BULK_ROWS:
        import pyarrow as pa

        columns = list(dict.fromkeys(k for r in rows for k in r))
        arrays = {}
        for column in columns:  # column by column: far cheaper than a table built from row dicts
            values = [r.get(column) for r in rows]
            if column in _JSON_COLUMNS:
                dumps = json.JSONEncoder(default=str).encode
                values = [None if v is None else dumps(v) for v in values]
            arrays[column] = pa.array(values, type=_arrow_type(pa, values))
        data = pa.table(arrays)  # noqa: F841 (DuckDB reads the local by name)
        con.execute(f"{verb} {table} BY NAME SELECT * FROM data")
        return
    encoded = [_encode(r) for r in rows]
    columns = list(dict.fromkeys(k for r in encoded for k in r))
    marks = ", ".join("?" for _ in columns)
    con.executemany(f"{verb} {table} ({', '.join(columns)}) VALUES ({marks})",
                    [[r.get(c) for c in columns] for r in encoded])


def _apply(con, ops: list[tuple]) -> None:
    for op in ops:
        kind = op[0]
        if kind in ("upsert", "insert"):
            _, table, rows = op
            if rows:
                _insert(con, table, rows, replace=kind == "upsert")
        elif kind == "sql":
            _, statement, params = op
            con.execute(statement, params)
        elif kind == "audit":
            _append_audit(con, op[1])
        else:
            raise ValueError(f"unknown ledger operation {kind!r}")


def _append_audit(con, entry: dict[str, Any]) -> None:
    """Append one hash-chained audit row; runs inside the writer's locked transaction."""
    from kit.audit import GENESIS, entry_hash

    last = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    at = utcnow()
    detail = entry.get("detail") or {}
    digest = entry_hash(prev, seq, at, entry["actor"], entry["action"], entry["subject"], detail)
    con.execute(
        "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [seq, at, entry["actor"], entry["action"], entry["subject"], json.dumps(detail, default=str), prev, digest],
    )
