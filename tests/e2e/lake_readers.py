"""Reads plumline lakes with four independent engines -- pyarrow's hive
dataset, DuckDB, Polars and Apache Spark -- and prints what each saw as JSON,
for tests/e2e/lake.rs to compare with the simulator's ground truth.

usage: python lake_readers.py LAKE [LAKE ...]

Prints {"LAKE": {"ENGINE": {...}}}, where each engine reports:
  types        the engine's own names for the start and end columns
  counts       calls per "date|number|type" (number "" for unfiltered files)
  rows         all rows
  distinct     distinct (session_id, number) pairs
  min_start    the earliest start, UNIX seconds, as the engine computes it
  max_end      the latest end, UNIX seconds
pyarrow also reports its whole schema, the nullability of each column and
the files of its dataset.

One Spark session (local[1], small memory, no UI, loopback only) serves every
lake, so the JVM starts once.
"""

import json
import os
import sys

import duckdb
import polars as pl
import pyarrow.compute as pc
import pyarrow.dataset as ds


def key(d, n, t):
    return f"{d}|{n if n is not None else ''}|{t}"


def read_pyarrow(lake):
    dataset = ds.dataset(lake, format="parquet", partitioning="hive")
    table = dataset.to_table()
    counts = {}
    cols = [table.column(c).to_pylist() for c in ("date", "number", "type")]
    for d, n, t in zip(*cols):
        counts[key(d, n, t)] = counts.get(key(d, n, t), 0) + 1
    starts = table.column("start").cast("int64").to_pylist()
    ends = table.column("end").cast("int64").to_pylist()
    schema = {f.name: str(f.type) for f in table.schema}
    unit = 1000 if "ms" in schema["start"] else 1
    durations = table.column("duration_s").to_pylist()
    return {
        "types": {"start": schema["start"], "end": schema["end"]},
        "schema": schema,
        "nullable": {f.name: f.nullable for f in dataset.schema if f.name != "date"},
        "files": sorted(f.replace(lake, "", 1).lstrip("/") for f in dataset.files),
        "counts": counts,
        "rows": table.num_rows,
        "distinct": len(set(zip(table.column("session_id").to_pylist(), cols[1]))),
        "min_start": pc.min(table.column("start")).cast("int64").as_py() // unit,
        "max_end": pc.max(table.column("end")).cast("int64").as_py() // unit,
        "duration_ok": all((e - s) // unit == d for s, e, d in zip(starts, ends, durations)),
    }


def read_duckdb(lake):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rel = f"read_parquet('{lake}/*/*.parquet', hive_partitioning = true)"
    schema = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()}
    rows = con.execute(
        f"SELECT CAST(date AS VARCHAR), number, type, count(*) FROM {rel} GROUP BY ALL"
    ).fetchall()
    total, distinct, min_start, max_end = con.execute(
        f"SELECT count(*), count(DISTINCT (session_id, coalesce(number, ''))), "
        f"CAST(epoch(min(start)) AS BIGINT), CAST(epoch(max(\"end\")) AS BIGINT) FROM {rel}"
    ).fetchone()
    return {
        "types": {"start": schema["start"], "end": schema["end"]},
        "schema": schema,
        "counts": {key(d, n, t): c for d, n, t, c in rows},
        "rows": total,
        "distinct": distinct,
        "min_start": min_start,
        "max_end": max_end,
    }


def read_polars(lake):
    lf = pl.scan_parquet(f"{lake}/*/*.parquet", hive_partitioning=True)
    schema = lf.collect_schema()
    grouped = (
        lf.group_by(pl.col("date").cast(pl.Utf8), "number", "type").len().collect().rows()
    )
    summary = lf.select(
        pl.len().alias("rows"),
        pl.struct("session_id", pl.col("number").fill_null("")).n_unique().alias("distinct"),
        pl.col("start").min().dt.epoch("s").alias("min_start"),
        pl.col("end").max().dt.epoch("s").alias("max_end"),
    ).collect().row(0, named=True)
    return {
        "types": {"start": str(schema["start"]), "end": str(schema["end"])},
        "counts": {key(d, n, t): c for d, n, t, c in grouped},
        **summary,
    }


def spark_session():
    # Loopback only, one core, small heap, no UI; the session's clock is UTC.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("plumline-lake-readers")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "512m")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.eventLog.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def read_spark(spark, lake):
    from pyspark.sql import functions as F

    df = spark.read.parquet(lake)
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    grouped = (
        df.groupBy(F.col("date").cast("string").alias("d"), "number", "type").count().collect()
    )
    summary = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct("session_id", F.coalesce("number", F.lit(""))).alias("distinct"),
        F.min("start").cast("long").alias("min_start"),
        F.max("end").cast("long").alias("max_end"),
    ).collect()[0]
    return {
        "types": {"start": types["start"], "end": types["end"]},
        "counts": {key(r["d"], r["number"], r["type"]): r["count"] for r in grouped},
        "rows": summary["rows"],
        "distinct": summary["distinct"],
        "min_start": summary["min_start"],
        "max_end": summary["max_end"],
    }


def main():
    lakes = sys.argv[1:]
    out = {}
    for lake in lakes:
        out[lake] = {
            "pyarrow": read_pyarrow(lake),
            "duckdb": read_duckdb(lake),
            "polars": read_polars(lake),
        }
    spark = spark_session()
    for lake in lakes:
        out[lake]["spark"] = read_spark(spark, lake)
    spark.stop()
    print(json.dumps(out))


main()
# pyarrow, DuckDB, Polars and py4j threads can abort the interpreter at exit; the answer is out.
sys.stdout.flush()
os._exit(0)
