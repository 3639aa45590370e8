"""The ledger: bulk span ingest, a per-step query over 1,000,000 spans, file size.

DESIGN section 15 targets: >= 500,000 spans/s in bulk (row-by-row manages about
2,500/s); per-step p50 query over 1,000,000 spans < 50 ms; < 80 MB per million spans.
Papermill has no ledger, so the ratio printed is bulk vs row-by-row.
Run from the repo root: python bench/ledger_ingest.py [SPANS]
"""

import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from kit.ledger.database import Database

TOTAL = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
BATCH = 100_000  # rows per ledger.write (one transaction each)
STEPS, PER_STEP = 10, 100  # so TOTAL / 1000 runs of 10 steps with 100 cell spans each
ROW_BY_ROW = 5_000
QUERY = "select count(*), avg(epoch(ended_at) - epoch(started_at)) from spans where run_id = ? and step_id = ?"


def span_rows(start: int, count: int) -> list[dict]:
    """Spans shaped like the coordinator's cell spans (times as the ledger's ISO text)."""
    rows = []
    for n in range(start, start + count):
        run, step, cell = n // (STEPS * PER_STEP), n // PER_STEP % STEPS, n % PER_STEP
        ms = random.randint(0, 999)
        rows.append(
            {
                "run_id": f"20261121-{run:06d}-000-abcd",
                "span_id": f"{n:016x}",
                "parent_id": f"p{run:07d}{step:08d}",
                "step_id": f"s{step}",
                "name": f"cell {cell}",
                "kind": "cell",
                "started_at": f"2026-11-21 12:{cell % 60:02d}:00.{ms:03d}000",
                "ended_at": f"2026-11-21 12:{cell % 60:02d}:01.{ms:03d}000",
                "status": "ok",
                "attributes": {"cell": cell, "duration_ms": 1000.0 + ms},
            }
        )
    return rows


tmp = Path(tempfile.mkdtemp(prefix="kit-bench-ledger-"))

# Bulk: ledger.write(("insert", "spans", rows)) in batches (the Arrow path, >= 500 rows).
ledger = Database(tmp / "bulk" / "ledger.duckdb")
ledger.write()  # create the file and schema outside the timing
bulk_seconds = 0.0
for start in range(0, TOTAL, BATCH):
    rows = span_rows(start, min(BATCH, TOTAL - start))  # building the rows is the caller's work: not timed
    t = time.perf_counter()
    ledger.write(("insert", "spans", rows))
    bulk_seconds += time.perf_counter() - t
bulk_rate = TOTAL / bulk_seconds
ledger.release()  # close the write connection this process keeps leased for a moment
size_mb = sum(p.stat().st_size for p in ledger.path.parent.glob("ledger.duckdb*")) / 1e6

# Row by row: one single-row executemany (its own autocommit transaction) per span.
rows_ledger = Database(tmp / "rows" / "ledger.duckdb")
rows_ledger.write()
rows_ledger.release()
con = duckdb.connect(str(tmp / "rows" / "ledger.duckdb"))
rows = span_rows(0, ROW_BY_ROW)
columns = list(rows[0])
sql = f"insert into spans ({', '.join(columns)}) values ({', '.join('?' for _ in columns)})"
t = time.perf_counter()
for r in rows:
    con.executemany(sql, [[json.dumps(r[c]) if c == "attributes" else r[c] for c in columns]])
row_rate = ROW_BY_ROW / (time.perf_counter() - t)
con.close()

# The per-step query, read-only, over the bulk ledger (20 different run/step pairs).
con = duckdb.connect(str(ledger.path), read_only=True)
runs = TOTAL // (STEPS * PER_STEP)
latencies = []
for _ in range(20):
    args = [f"20261121-{random.randrange(runs):06d}-000-abcd", f"s{random.randrange(STEPS)}"]
    t = time.perf_counter()
    count, _ = con.execute(QUERY, args).fetchone()
    latencies.append((time.perf_counter() - t) * 1000)
    assert count == PER_STEP, count
con.close()
p50 = statistics.median(latencies)

print(f"ledger ingest: {TOTAL:,} spans in batches of {BATCH:,}; row-by-row timed on {ROW_BY_ROW:,}\n")
print(f"bulk insert          {bulk_rate:>12,.0f} spans/s   ({bulk_seconds:.2f} s)   target >= 500,000")
print(f"row-by-row insert    {row_rate:>12,.0f} spans/s   (1M would take {1e6 / row_rate / 60:.1f} min)")
print(f"per-step query p50   {p50:>12.1f} ms        (max {max(latencies):.1f} ms)   target < 50 ms")
print(f"file size            {size_mb * 1e6 / TOTAL:>12.1f} MB per million spans     target < 80 MB")
print(f"\nratio bulk / row-by-row: {bulk_rate / row_rate:.0f}x")
shutil.rmtree(tmp, ignore_errors=True)
