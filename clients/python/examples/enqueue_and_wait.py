#!/usr/bin/env python3
"""Enqueue one CPU-only job and wait for it: the smallest complete use of the client.

    GPUQ_URL=http://127.0.0.1:8080 GPUQ_TOKEN=gpuq_... python3 examples/enqueue_and_wait.py

The token must be a submitter's (or an admin's): `scheduler token create --team vision
--role submitter`. A worker must be running for the job to start.
"""

import os
import sys

from gpuq import Client, GpuqError


def main() -> int:
    url, token = os.environ.get("GPUQ_URL"), os.environ.get("GPUQ_TOKEN")
    if not url or not token:
        print("set GPUQ_URL and GPUQ_TOKEN", file=sys.stderr)
        return 2
    spec = {
        "name": "hello",
        "command": ["python3", "-c", "print('hello')"],
        "resources": {"gpus": 0},
    }
    with Client(url, token) as gq:
        try:
            job = gq.enqueue(spec)["job"]
            print(f"enqueued {job['id']} for team {job['spec']['team']}")
            job = gq.wait(job["id"], timeout=120)
        except GpuqError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{job['id']} {job['state']}")
        for line in gq.logs(job["id"]):
            print(f"  | {line}")
        return 0 if job["state"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
