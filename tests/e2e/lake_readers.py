"""Reads a plumline lake with pyarrow's hive dataset and with DuckDB and
prints what they saw as JSON, for tests/e2e/lake.rs to compare with the
simulator's ground truth.

usage: python lake_readers.py DEST
"""

import json
import os
import sys

import duckdb
import pyarrow.dataset as ds

dest = sys.argv[1]
out = {}

dataset = ds.dataset(dest, format="parquet", partitioning="hive")
table = dataset.to_table()
out["pyarrow_schema"] = {f.name: str(f.type) for f in table.schema}
out["pyarrow_nullable"] = {f.name: f.nullable for f in dataset.schema if f.name != "date"}
out["pyarrow_files"] = sorted(f.replace(dest, "", 1).lstrip("/") for f in dataset.files)
counts = {}
dates = table.column("date").to_pylist()
numbers = table.column("number").to_pylist()
for d, n in zip(dates, numbers):
    key = f"{d}|{n if n is not None else ''}"
    counts[key] = counts.get(key, 0) + 1
out["pyarrow_counts"] = counts
out["pyarrow_rows"] = table.num_rows
# duration_s == end - start, row by row.
starts = table.column("start").cast("int64").to_pylist()
ends = table.column("end").cast("int64").to_pylist()
unit = 1000 if "ms" in out["pyarrow_schema"]["start"] else 1
durations = table.column("duration_s").to_pylist()
out["pyarrow_duration_ok"] = all((e - s) // unit == d for s, e, d in zip(starts, ends, durations))
out["pyarrow_distinct_ids"] = len(set(table.column("session_id").to_pylist()))

con = duckdb.connect()
glob = f"{dest}/*/*.parquet"
rel = f"read_parquet('{glob}', hive_partitioning = true)"
out["duckdb_schema"] = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()}
out["duckdb_counts"] = {
    f"{d}|{n if n is not None else ''}": c
    for d, n, c in con.execute(
        f"SELECT CAST(date AS VARCHAR), number, count(*) FROM {rel} GROUP BY ALL"
    ).fetchall()
}
out["duckdb_rows"] = con.execute(f"SELECT count(*) FROM {rel}").fetchone()[0]
out["duckdb_distinct_ids"] = con.execute(
    f"SELECT count(DISTINCT (session_id, coalesce(number, ''))) FROM {rel}"
).fetchone()[0]
print(json.dumps(out))
# pyarrow, DuckDB and boto3 threads can abort the interpreter at exit; the answer is out.
sys.stdout.flush()
os._exit(0)
