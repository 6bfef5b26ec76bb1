"""Helpers for the S3 test against a local moto server.

usage: python s3_check.py ENDPOINT create BUCKET
       python s3_check.py ENDPOINT inspect BUCKET PREFIX
The second prints JSON: every key, the multipart uploads still open, and
the rows per data file (read with pyarrow).
"""

import io
import json
import os
import sys

import boto3
import pyarrow.parquet as pq

endpoint, action, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id="test",
    aws_secret_access_key="test",
    region_name="us-east-1",
)
if action == "create":
    s3.create_bucket(Bucket=bucket)
    print("{}")
elif action == "inspect":
    prefix = sys.argv[4]
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    rows = {}
    schema = None
    for key in keys:
        if key.endswith(".parquet"):
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            table = pq.read_table(io.BytesIO(body))
            rows[key] = table.num_rows
            schema = {f.name: str(f.type) for f in table.schema}
    print(json.dumps({"keys": sorted(keys), "uploads": len(uploads), "rows": rows, "schema": schema}))
# pyarrow, DuckDB and boto3 threads can abort the interpreter at exit; the answer is out.
sys.stdout.flush()
os._exit(0)
