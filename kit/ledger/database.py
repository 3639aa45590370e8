"""The ledger's file: one DuckDB database, `.kit/ledger.duckdb`, and how kit writes and reads it.

DuckDB lets one process hold a file read-write, and while it does no other process may
open it at all (FIELD-NOTES). So writes are short transactions behind a cross-process
file lock. The coordinating process keeps its write connection for `LEASE` seconds
after a transaction (`LEASE_MAX` at most in all), so a run's many small writes share
one connection and readers in other processes (a notebook, `kit sql`, the explorer)
still get their turn. A connection that cannot be had within the wait (someone holds
the file) does not fail the write: its batch is journaled to `.kit/pending/` and
applied, exactly once, by the next transaction of any kit process.

A write is a batch of operations simple enough to journal as JSON:
``("insert", table, rows)`` (never replaces a row: a duplicate key is an error),
``("insert_absent", table, rows)`` (rows whose key exists already are left as they are),
``("sql", statement, params)`` (an UPDATE or DELETE the `Ledger` composed) and
``("audit", entry)`` (an audit entry, chained to the last one inside the transaction).
Only `kit.ledger.ledger.Ledger` builds them; everything else calls its named operations.

Reading never creates the file: before the first write, reads see empty tables. A
read first applies the journaled batches (waiting, with a message, while the file is
held), so it never misses rows; the coordinator's own reads during a run pass
``settle=False`` instead, so a reader holding the file never stalls a run.

A batch that cannot be applied (a duplicate key, a constraint) is set aside in
`.kit/pending/failed/` with the reason, so one bad batch never blocks the ledger.
After every transaction that appended to the audit trail, the chain's head (its last
seq and hash) is written to `.kit/audit.head`, outside the table (DESIGN section 7).

A file that is not a DuckDB ledger, or one cut short, is a `LedgerUnreadable` naming
it; a full disk is a `NoSpace` saying what to free.
"""

from __future__ import annotations

import atexit
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kit.base.backoff import delay
from kit.base.clock import utcnow
from kit.errors import InvalidInput, KitError, NoSpace, is_no_space
from kit.ledger.schema import JSON_COLUMNS, MIGRATIONS, SCHEMA_VERSION

HEAD_NAME = "audit.head"

LEASE = 0.3  # seconds a write connection stays open after its last transaction
LEASE_MAX = 1.0  # seconds it may stay open in all, however busy the run
BULK_ROWS = 500  # from here on, JSON documents read by DuckDB beat a VALUES list by far
BULK_PART_ROWS = 25_000  # rows of one such document at least: DuckDB reads one a thread
VALUES_ROWS = 100  # rows in one INSERT ... VALUES statement below that


class _Lease:
    """The process's write connection to one ledger file, and the file lock that goes with it.

    `guard` serializes every use of the file's connections within the process: the process's
    threads (parallel scenarios) share one coordinator, and the cross-process file lock does
    not exclude threads of the same process. A transaction holds it from BEGIN to COMMIT; a
    read holds it while it opens, queries and closes its connection (DuckDB refuses a read-only
    connection to a file the same process holds read-write, so the two must not overlap).
    """

    def __init__(self) -> None:
        self.guard = threading.RLock()
        self.con = None
        self.lock = None
        self.leased_at = 0.0
        self.expires = 0.0  # when the keeper closes the connection, unless a transaction renews it first
        self.keeper: threading.Thread | None = None  # one thread a lease, not a Timer a transaction
        self.renewed = threading.Condition(self.guard)
        self.reader = None  # a read-only connection kept for a reading session (`Database.reading`)
        self.sessions = 0  # how many reading sessions are open

    def release(self) -> None:
        """Close the connection and let go of the file lock (other processes' turn)."""
        with self.guard:
            if self.con is not None:
                try:
                    self.con.close()
                finally:
                    self.con = None
                    self.lock.release()
                    self.lock = None
            self.renewed.notify_all()

    def keep(self) -> None:
        """The keeper: closes the connection once it has gone `LEASE` seconds without a transaction."""
        with self.guard:
            try:
                while self.con is not None:
                    left = self.expires - time.monotonic()
                    if left <= 0:
                        self.release()
                        break
                    self.renewed.wait(left)
            finally:
                self.keeper = None


_LEASES: dict[str, _Lease] = {}
_LEASES_GUARD = threading.Lock()


def _lease_of(path: Path) -> _Lease:
    with _LEASES_GUARD:
        return _LEASES.setdefault(str(path.resolve()), _Lease())


@atexit.register
def _release_leases() -> None:
    for path in list(_LEASES):
        Database(path).release()


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text or "being used by another process" in text


class Busy(Exception):
    """The ledger stayed locked by another process for the whole wait."""


class LedgerBusy(KitError):
    """The ledger stayed held by another process, and what was asked cannot wait in the journal."""


class LedgerUnreadable(KitError):
    """The ledger file is not a DuckDB ledger, or is damaged."""


def _file_faults() -> tuple[type, ...]:
    """DuckDB's errors for a damaged file or a full disk (not a statement's own mistake)."""
    import duckdb

    return (duckdb.IOException, duckdb.SerializationException, duckdb.InternalException, duckdb.FatalException)


def _fault(path: Path, exc: Exception) -> KitError:
    """A DuckDB error that is not the caller's doing, as the one-line error a user can act on."""
    if is_no_space(exc):
        return NoSpace.writing(path)
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return LedgerUnreadable(
        f"{path}: the ledger cannot be read ({first}); move the file aside (kit starts a new "
        "ledger) or restore it from a backup, then try again"
    )


class Database:
    """Transactions, journaled batches and reads on one ledger file; knows no table but its own."""

    def __init__(self, path: str | Path, wait: float | None = None):
        self.path = Path(path)
        self.lock_path = self.path.with_suffix(".lock")
        self.pending_dir = self.path.parent / "pending"
        self.head_path = self.path.parent / HEAD_NAME
        self.wait = float(os.environ.get("KIT_LEDGER_WAIT", 15.0)) if wait is None else wait
        self._journaling = False  # after one busy wait, don't wait long again until a write goes through
        self._new_head: dict[str, Any] | None = None  # the audit chain's head a transaction moved it to
        self._lease = _lease_of(self.path)

    # ---- connections -------------------------------------------------------

    def _connect(self, read_only: bool, wait: float):
        import duckdb

        deadline = time.monotonic() + wait
        attempt = 0
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
                if not _is_lock_error(exc):
                    if isinstance(exc, _file_faults()):
                        raise _fault(self.path, exc) from None
                    raise
                if time.monotonic() >= deadline:
                    raise
            attempt += 1
            time.sleep(delay(attempt, 0.01, cap=0.25, jitter=1.0))

    def _open_lease(self, wait: float):
        """The write connection: the lease's, or a new one behind the cross-process file lock."""
        import duckdb
        from filelock import FileLock, Timeout

        if self._lease.con is not None:
            return self._lease.con
        self._close_reader()  # a read-only connection of this process would refuse the read-write one
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path), thread_local=False)
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise Busy() from None
        try:
            con = self._connect(read_only=False, wait=wait)
            try:
                self._migrate(con)
            except BaseException:
                con.close()
                raise
        except BaseException as exc:
            lock.release()
            if isinstance(exc, duckdb.Error):
                if _is_lock_error(exc):
                    raise Busy() from None
                if isinstance(exc, _file_faults()):
                    raise _fault(self.path, exc) from None
            raise
        self._lease.con, self._lease.lock = con, lock
        self._lease.leased_at = time.monotonic()
        return con

    def _close_reader(self) -> None:
        if self._lease.reader is not None:
            try:
                self._lease.reader.close()
            finally:
                self._lease.reader = None

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Reads inside share one connection (the lease's, or one read-only connection opened by the
        first of them) instead of one each: `kit show` and other commands that read a few things."""
        with self._lease.guard:
            self._lease.sessions += 1
        try:
            yield
        finally:
            with self._lease.guard:
                self._lease.sessions -= 1
                if not self._lease.sessions:
                    self._close_reader()

    def release(self) -> None:
        """Close the leased connection and let other processes in."""
        self._lease.release()

    def _renew(self) -> None:
        """Keep the connection a little longer; but never past LEASE_MAX, so readers get their turn."""
        lease = self._lease
        if time.monotonic() - lease.leased_at > LEASE_MAX:
            lease.release()
            return
        lease.expires = time.monotonic() + LEASE
        if lease.keeper is None:  # starting a thread costs 1.5-5 ms (a GIL hand-over): once a lease, not a write
            lease.keeper = threading.Thread(target=lease.keep, name="kit-ledger-lease", daemon=True)
            lease.keeper.start()

    @contextmanager
    def transaction(self, wait: float | None = None) -> Iterator[Any]:
        """A write transaction; applies journaled batches first, and keeps the audit head after."""
        import duckdb

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
                if self._new_head is not None:
                    self._keep_head(self._new_head)
            except duckdb.Error as exc:
                self.release()
                if isinstance(exc, _file_faults()):
                    raise _fault(self.path, exc) from None
                raise  # a statement's own mistake (a duplicate key, say): the caller's to report
            except BaseException:
                self.release()
                raise
            finally:
                self._new_head = None
            for path in drained:
                path.unlink(missing_ok=True)
            self._renew()

    def _keep_head(self, head: dict[str, Any]) -> None:
        """Write the audit chain's head (last seq and hash) beside the ledger, when it moved."""
        if read_head(self.head_path) == head:
            return
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        try:
            with open(tmp, "w") as fh:
                json.dump(head, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.head_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if is_no_space(exc):
                raise NoSpace.writing(self.head_path) from None
            raise

    def checkpoint(self) -> None:
        """Write the WAL into the file and give freed pages back (after deletions)."""
        with self._lease.guard:
            self._open_lease(self.wait).execute("CHECKPOINT")
            self._renew()

    def _migrate(self, con) -> None:
        import duckdb

        try:  # a read first: CREATE TABLE IF NOT EXISTS is a write (a commit) on every connection
            current = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        except duckdb.CatalogException:
            con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, applied_at TIMESTAMP)")
            current = 0
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

    def write(self, *ops: tuple, wait: float | None = None, journal: bool = True) -> bool:
        """Apply `ops` in one transaction; journal them if the file stays busy. True if written now.

        With ``journal=False`` (a decision that must be checked against the ledger as it is)
        a busy file is a `LedgerBusy` instead."""
        batch = {"batch_id": uuid.uuid4().hex, "ops": list(ops)}
        if wait is None and self._journaling and journal:
            wait = min(self.wait, 0.2)
        try:
            with self.transaction(wait=wait) as con:
                self._new_head = apply(con, batch["ops"], self.head_path) or self._new_head
        except Busy:
            if not journal:
                raise LedgerBusy(
                    f"{self.path} is held by another process (a notebook or `kit sql` that keeps it "
                    "open?); nothing was written: try again when it lets go"
                ) from None
            self._journal(batch)
            self._journaling = True
            return False
        self._journaling = False
        return True

    def _journal(self, batch: dict) -> None:
        name = f"{time.time_ns()}-{batch['batch_id']}.json"
        tmp = self.pending_dir / (".tmp-" + name)
        try:
            self.pending_dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as fh:
                json.dump(batch, fh, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.pending_dir / name)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if is_no_space(exc):
                raise NoSpace.writing(self.pending_dir) from None
            raise

    def flush(self, wait: float | None = None) -> bool:
        """Apply journaled batches now; False when the file stayed busy (they stay journaled)."""
        if not self.pending():
            return True
        try:
            with self.transaction(wait=wait):
                pass
        except Busy:
            return False
        return True

    def pending(self) -> list[Path]:
        if not self.pending_dir.is_dir():
            return []
        return sorted(p for p in self.pending_dir.glob("*.json") if not p.name.startswith(".tmp-"))

    def _drain_pending(self, con) -> list[Path]:
        import duckdb

        done = []
        for path in self.pending():
            try:
                batch = json.loads(path.read_text())
            except OSError:
                continue  # unreadable now (a permission): left for fsck to name
            except ValueError as exc:  # a torn journal file cannot exist (atomic rename): this one was put here
                self._set_aside(path, exc)
                continue
            if not _is_batch(batch):
                self._set_aside(path, ValueError("not a journaled batch: {batch_id, ops: [[kind, ...], ...]}"))
                continue
            seen = con.execute("SELECT 1 FROM ledger_batches WHERE batch_id = ?", [batch["batch_id"]]).fetchall()
            if not seen:
                con.execute("BEGIN TRANSACTION")
                try:
                    head = apply(con, [tuple(op) for op in batch["ops"]], self.head_path)
                    con.execute("INSERT INTO ledger_batches VALUES (?, ?)", [batch["batch_id"], utcnow()])
                except (duckdb.Error, ValueError, TypeError, KeyError) as exc:
                    con.execute("ROLLBACK")
                    if isinstance(exc, _file_faults()):
                        raise
                    self._set_aside(path, exc)  # one bad batch never blocks the ledger
                    continue
                con.execute("COMMIT")
                self._new_head = head or self._new_head
            done.append(path)
        return done

    def _set_aside(self, path: Path, exc: BaseException) -> None:
        """A journaled batch that cannot be applied goes to pending/failed/, with why, and is said once."""
        import sys

        failed = self.pending_dir / "failed"
        failed.mkdir(exist_ok=True)
        os.replace(path, failed / path.name)
        reason = str(exc).splitlines()[0]
        (failed / (path.stem + ".error")).write_text(reason + "\n")
        print(
            f"warning: a journaled ledger batch could not be applied ({reason}); kept in {failed / path.name}",
            file=sys.stderr,
        )

    # ---- reading -----------------------------------------------------------

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def settle(self) -> None:
        """Apply journaled batches before a read, waiting (with a message) while the file is held."""
        if not self.exists or not self.pending():
            return
        import sys

        deadline = time.monotonic() + self.wait
        said = False
        while not self.flush(wait=min(1.0, self.wait)):
            if time.monotonic() >= deadline:
                raise LedgerBusy(
                    f"{self.path} is held by another process, and {len(self.pending())} journaled "
                    f"batch(es) in {self.pending_dir} wait to be applied; try again when it lets go"
                )
            if not said:
                print(
                    f"waiting for the ledger: another process holds {self.path} (up to {self.wait:g}s, "
                    "KIT_LEDGER_WAIT)",
                    file=sys.stderr,
                )
                said = True

    def read(
        self, sql: str, params: list | None = None, settle: bool = True, lease: bool = False
    ) -> tuple[list[str], list[tuple]]:
        """Run a read-only query; column names and rows. JSON columns come back as values.

        `settle` applies journaled rows first; the coordinator's reads during a run skip
        that, so a reader holding the file never stalls it. `lease`: a writer's read (the
        coordinator's, mid-run) takes the write connection it is about to need anyway, rather
        than opening a read-only one for one query (≈ 40 ms); if the file is busy, it reads
        as any reader does."""
        import duckdb

        if settle:
            self.settle()
        with self._lease.guard:  # held throughout: no thread of this process opens the lease meanwhile
            if lease and self._lease.con is None:
                try:
                    self._open_lease(min(self.wait, 0.2))
                    self._renew()
                except Busy:
                    pass
            if self._lease.con is not None:  # this process holds the lease: read through it
                return _fetch(self._lease.con, sql, params)
            if not self.exists:
                return _fetch(_empty_ledger(), sql, params)
            con = self._lease.reader or self._reader()
            keep = self._lease.sessions > 0
            try:
                return _fetch(con, sql, params)
            except duckdb.Error as exc:
                keep = False
                if isinstance(exc, _file_faults()):
                    raise _fault(self.path, exc) from None
                raise
            finally:
                if keep:
                    self._lease.reader = con
                else:
                    con.close()
                    self._lease.reader = None

    def _reader(self):
        """A read-only connection; LedgerBusy, one line, when another process holds the file past the wait."""
        import duckdb

        try:
            return self._connect(read_only=True, wait=self.wait)
        except duckdb.Error as exc:
            if _is_lock_error(exc):
                raise LedgerBusy(
                    f"{self.path} is held by another process (a notebook or `kit sql` that keeps it open?): "
                    f"it could not be read within {self.wait:g}s (KIT_LEDGER_WAIT); try again when it lets go"
                ) from None
            raise

    def rows(
        self, sql: str, params: list | None = None, settle: bool = True, lease: bool = False
    ) -> list[dict[str, Any]]:
        columns, rows = self.read(sql, params, settle=settle, lease=lease)
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
                words = statement.query.split()
                verb = words[0].upper() if words else statement.type.name
                article = "an" if verb[:1] in "AEIOU" else "a"
                raise InvalidInput(
                    f"kit sql is read-only: refused {article} {verb} statement "
                    "(only SELECT, WITH ... SELECT and EXPLAIN run here)"
                )
        self.settle()
        with self._lease.guard:
            # Never on the write connection, not even this process's own: a read-only one that reaches no file
            self.release()
            self._close_reader()
            con = self._reader() if self.exists else _empty_ledger(shared=False)
            try:
                return _fetch(con, sql, None)
            except duckdb.Error as exc:
                if isinstance(exc, _file_faults()) and not isinstance(exc, duckdb.IOException):
                    raise _fault(self.path, exc) from None
                raise InvalidInput(f"kit sql: {str(exc).splitlines()[0]}") from None
            finally:
                con.close()


_EMPTY = threading.local()


def _empty_ledger(shared: bool = True):
    """An in-memory ledger with every table and no rows: what reads see before the first write. It reaches
    no file; `shared=False` gives a new one (a user's query may be an EXPLAIN ANALYZE that changes it)."""
    con = getattr(_EMPTY, "con", None) if shared else None
    if con is None:
        import duckdb

        con = duckdb.connect(":memory:")
        Database(Path(":memory:"))._migrate(con)
        con.execute("SET enable_external_access = false")
        if shared:
            _EMPTY.con = con
    return con


def _is_batch(batch: Any) -> bool:
    """Whether a journal file holds what `Database.write` journals: a batch id and a list of operations."""
    return (
        isinstance(batch, dict)
        and isinstance(batch.get("batch_id"), str)
        and isinstance(batch.get("ops"), list)
        and all(isinstance(op, list) and op and isinstance(op[0], str) for op in batch["ops"])
    )


def _fetch(con, sql: str, params: list | None) -> tuple[list[str], list[tuple]]:
    cursor = con.execute(sql, params or [])
    description = cursor.description or []
    rows = cursor.fetchall()
    json_columns = [i for i, d in enumerate(description) if str(d[1]) == "JSON"]
    if json_columns:  # JSON columns come back as text: give callers the values
        rows = [
            tuple(json.loads(v) if i in json_columns and isinstance(v, str) else v for i, v in enumerate(row))
            for row in rows
        ]
    return [d[0] for d in description], rows


# ---- applying a batch ---------------------------------------------------------


def _encode(row: dict[str, Any]) -> dict[str, Any]:
    """JSON columns take Python values (a str becomes a JSON string, None stays NULL)."""
    return {k: json.dumps(v, default=str) if k in JSON_COLUMNS and v is not None else v for k, v in row.items()}


def _insert(
    con, table: str, rows: list[dict[str, Any]], keep_existing: bool = False, folder: Path | None = None
) -> None:
    """INSERT: a row whose key exists already is refused (or, `keep_existing`, skipped), never replaced.

    From `BULK_ROWS` rows on, the rows go to DuckDB as JSON documents (`_insert_bulk`); below, as
    ``INSERT ... VALUES`` lists of parameters."""
    verb = "INSERT OR IGNORE INTO" if keep_existing else "INSERT INTO"
    if len(rows) >= BULK_ROWS:
        _insert_bulk(con, verb, table, rows, folder)
        return
    encoded = [_encode(r) for r in rows]
    columns = list(dict.fromkeys(k for r in encoded for k in r))
    marks = "(" + ", ".join("?" for _ in columns) + ")"
    names = ", ".join('"' + c + '"' for c in columns)  # quoted: a column may be a keyword ("at")
    # One statement of many rows: executemany pays a statement's overhead per row (measured: 50 span rows
    # 40 ms by executemany, 7 ms as one VALUES list; one row 2.2 ms vs 1.4 ms)
    for start in range(0, len(encoded), VALUES_ROWS):
        chunk = encoded[start : start + VALUES_ROWS]
        con.execute(
            f"{verb} {table} ({names}) VALUES {', '.join([marks] * len(chunk))}",
            [r.get(c) for r in chunk for c in columns],
        )


def _insert_bulk(con, verb: str, table: str, rows: list[dict[str, Any]], folder: Path | None) -> None:
    """Many rows in one statement: the rows as JSON arrays (orjson encodes each in one call), read back by
    DuckDB's `read_json` with the table's own column types, which parses timestamps and keeps JSON columns
    as JSON in C++, one file a core at once. Measured on 100,000 spans: about 0.2 s with the commit
    (about 500,000 a second), where building Arrow columns from the rows in Python took 0.5-0.7 s. The
    documents are temporary files beside the ledger (DuckDB reads files, not Python strings), removed at once."""
    import duckdb

    types = {name: kind for name, kind, *_ in con.execute(f"DESCRIBE {table}").fetchall()}
    unknown = set().union(*rows).difference(types)
    if unknown:
        raise duckdb.BinderException(f"table {table} has no column {', '.join(sorted(unknown))}")
    parts = max(1, min(os.cpu_count() or 1, len(rows) // BULK_PART_ROWS))
    paths: list[str] = []
    try:
        for k in range(parts):
            document = _json_document(rows[k * len(rows) // parts : (k + 1) * len(rows) // parts])
            fd, path = tempfile.mkstemp(prefix=".bulk-", suffix=".json", dir=folder)
            paths.append(path)
            with os.fdopen(fd, "wb") as fh:
                fh.write(document)
        columns = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in types.items()) + "}"
        con.execute(
            f"{verb} {table} BY NAME SELECT * FROM read_json(?, format = 'array', columns = {columns}, "
            f"maximum_object_size = {max(os.path.getsize(p) for p in paths) + (16 << 20)})",
            [paths],
        )
    except OSError as exc:
        if is_no_space(exc):
            raise NoSpace.writing(Path(paths[-1] if paths else folder or tempfile.gettempdir())) from None
        raise
    finally:
        for path in paths:
            try:
                os.unlink(path)
            except OSError:
                pass


def _json_document(rows: list[dict[str, Any]]) -> bytes:
    """The rows as one JSON array holding the values `json.dumps(rows, default=str)` would (compactly
    written): orjson (15 ms for 100,000 spans), with times and dataclasses left to `default=str` as
    `json` does; `json` itself when orjson refuses a value (a key that is not a string, an int past 64
    bits: orjson's option for such keys doubles the time of every document)."""
    import orjson

    try:
        return orjson.dumps(
            rows, default=str, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
        )
    except TypeError:
        return json.dumps(rows, default=str).encode()


def apply(con, ops: list[tuple], head_path: Path | None = None) -> dict[str, Any] | None:
    """Apply a batch's operations on an open transaction; the audit chain's new head if it appended to it."""
    from kit.ledger.audit import append_entry

    head = None
    kept = read_head(head_path) if head_path is not None else None  # the head as this batch moves it
    folder = head_path.parent if head_path is not None else None
    for op in ops:
        kind = op[0]
        if kind in ("insert", "insert_absent"):
            _, table, rows = op
            if rows:
                _insert(con, table, rows, keep_existing=kind == "insert_absent", folder=folder)
        elif kind == "sql":
            _, statement, params = op
            con.execute(statement, params)
        elif kind == "audit":
            head = kept = append_entry(con, op[1], kept)
        else:
            raise ValueError(f"unknown ledger operation {kind!r}")
    return head


def read_head(path: Path) -> dict[str, Any] | None:
    """The audit chain's head kept beside the ledger ({"seq", "hash"}), or None when there is none."""
    try:
        head = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return head if isinstance(head, dict) and isinstance(head.get("seq"), int) else None
