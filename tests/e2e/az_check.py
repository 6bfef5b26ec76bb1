"""Helpers for the Azure test against a local Azurite, with azure-storage-blob.

usage: python az_check.py create CONTAINER
       python az_check.py inspect CONTAINER PREFIX
The account comes from AZURE_STORAGE_CONNECTION_STRING. The second prints
JSON: every committed blob under PREFIX with its ETag, the rows of each
Parquet file (read with pyarrow), the Arrow schema of the last one, and the
blobs that still hold uncommitted blocks (a multipart upload left behind).
"""

import io
import json
import os
import sys

import pyarrow.parquet as pq
from azure.storage.blob import BlobServiceClient

service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
action, container = sys.argv[1], sys.argv[2]
client = service.get_container_client(container)
if action == "create":
    client.create_container()
    print("{}")
elif action == "inspect":
    prefix = sys.argv[3]
    committed = {b.name: b.etag for b in client.list_blobs(name_starts_with=prefix)}
    # A blob with only uncommitted blocks is listed with include=uncommittedblobs.
    everything = [b.name for b in client.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"])]
    uncommitted = {}
    for name in everything:
        _, blocks = client.get_blob_client(name).get_block_list("uncommitted")
        if blocks or name not in committed:
            uncommitted[name] = len(blocks)
    rows = {}
    schema = None
    for name in committed:
        if name.endswith(".parquet"):
            body = client.download_blob(name).readall()
            table = pq.read_table(io.BytesIO(body))
            rows[name] = table.num_rows
            schema = {f.name: str(f.type) for f in table.schema}
    print(json.dumps({"blobs": committed, "uncommitted": uncommitted, "rows": rows, "schema": schema}))
# pyarrow and the Azure SDK's threads can abort the interpreter at exit; the answer is out.
sys.stdout.flush()
os._exit(0)
