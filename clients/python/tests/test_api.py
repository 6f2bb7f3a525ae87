"""The client against a live server (see conftest.py): what a caller of the API relies on."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from gpuq import Client, GpuqError, WaitTimeout

HERE = Path(__file__).resolve().parent


def uid(prefix: str) -> str:
    """A name no other test (or earlier session) used."""
    return f"{prefix}-{secrets.token_hex(4)}"


def cpu_job(code: str = "print('hello')", **extra: Any) -> Dict[str, Any]:
    """A job the session's worker runs (it needs no GPU)."""
    return {"name": uid("py"), "command": [sys.executable, "-c", code], "resources": {"gpus": 0}, **extra}


def stuck_job(**extra: Any) -> Dict[str, Any]:
    """A job that stays queued: the session's worker has no GPU to give it."""
    return {"name": uid("stuck"), "command": ["true"], "resources": {"gpus": 4}, **extra}


def refused(call: Any, status: int, code: str) -> GpuqError:
    with pytest.raises(GpuqError) as e:
        call()
    assert (e.value.status, e.value.code) == (status, code), e.value
    return e.value


def test_enqueue_wait_and_logs(vision: Client) -> None:
    out = vision.enqueue(cpu_job())
    assert out["created"] is True
    job = out["job"]
    assert job["spec"]["team"] == "vision", "a spec without team takes the token's"
    done = vision.wait(job["id"], timeout=60)
    assert done["state"] == "succeeded", done
    assert "hello" in vision.logs(job["id"])
    assert vision.job(job["id"])["state"] == "succeeded"


def test_example_script_runs(server: Any) -> None:
    env = {**os.environ, "GPUQ_URL": server.url, "GPUQ_TOKEN": server.tokens["vision"]}
    done = subprocess.run([sys.executable, str(HERE.parent / "examples" / "enqueue_and_wait.py")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded" in done.stdout


def test_viewer_cannot_enqueue(vision_viewer: Client) -> None:
    refused(lambda: vision_viewer.enqueue(cpu_job()), 403, "forbidden")


def test_viewer_reads(vision: Client, vision_viewer: Client) -> None:
    id = vision.enqueue(stuck_job())["job"]["id"]
    assert vision_viewer.job(id)["id"] == id
    refused(lambda: vision_viewer.cancel(id), 403, "forbidden")


def test_other_team_is_not_found(vision: Client, nlp: Client, admin: Client) -> None:
    id = vision.enqueue(stuck_job())["job"]["id"]
    refused(lambda: nlp.job(id), 404, "not_found")
    refused(lambda: nlp.logs(id), 404, "not_found")
    refused(lambda: nlp.cancel(id), 404, "not_found")
    refused(lambda: nlp.retry(id), 404, "not_found")
    refused(lambda: list(nlp.follow_logs(id, timeout=10)), 404, "not_found")
    assert id not in {j["id"] for j in nlp.iter_jobs(limit=1000)}
    assert admin.job(id)["id"] == id, "an admin sees every team"


def test_naming_another_team_is_forbidden(nlp: Client) -> None:
    refused(lambda: nlp.enqueue(stuck_job(team="vision")), 403, "forbidden")


def test_unknown_field_is_invalid_spec(vision: Client) -> None:
    e = refused(lambda: vision.enqueue(cpu_job(bogus_field=1)), 400, "invalid_spec")
    assert "bogus_field" in e.message


def test_bad_token_is_unauthenticated(server: Any) -> None:
    with Client(server.url, "gpuq_" + "0" * 64) as bad:
        refused(bad.status, 401, "unauthenticated")
    with server.client(None) as anonymous:
        refused(anonymous.status, 401, "unauthenticated")
        refused(lambda: anonymous.enqueue(cpu_job()), 401, "unauthenticated")


def test_batch_enqueue(vision: Client) -> None:
    specs = [stuck_job() for _ in range(3)]
    out = vision.enqueue_batch(specs)
    assert out["created"] == 3
    assert len(out["ids"]) == 3 and len(set(out["ids"])) == 3
    assert out["existing"] == []
    assert [vision.job(i)["spec"]["name"] for i in out["ids"]] == [s["name"] for s in specs]


def test_batch_is_all_or_nothing(vision: Client) -> None:
    model = uid("atomic")
    specs = [stuck_job(model_type=model), stuck_job(model_type=model, bogus_field=1)]
    refused(lambda: vision.enqueue_batch(specs), 400, "invalid_spec")
    assert vision.jobs(model_type=model)["jobs"] == []


def test_paging(vision: Client) -> None:
    model = uid("paging")
    ids = vision.enqueue_batch([stuck_job(model_type=model) for _ in range(5)])["ids"]
    first = vision.jobs(model_type=model, limit=2)
    assert len(first["jobs"]) == 2 and first["next"]
    seen = [j["id"] for j in vision.iter_jobs(model_type=model, limit=2)]
    assert sorted(seen) == sorted(ids), "every job once, none twice"
    assert seen[:2] == [j["id"] for j in first["jobs"]]
    times = [vision.job(i)["enqueued_at"] for i in seen]
    assert times == sorted(times, reverse=True), "newest first"


def test_cancel_queued_job(vision: Client) -> None:
    id = vision.enqueue(stuck_job())["job"]["id"]
    assert vision.job(id)["state"] == "queued"
    assert vision.cancel(id, reason="not needed") == {"id": id, "state": "cancelled"}
    job = vision.wait(id, timeout=10)
    assert job["state"] == "cancelled"
    assert "not needed" in (job.get("reason") or ""), job


def test_retry_cancelled_job(vision: Client) -> None:
    id = vision.enqueue(stuck_job())["job"]["id"]
    vision.cancel(id)
    assert vision.retry(id)["state"] == "queued"
    assert vision.job(id)["state"] == "queued"
    vision.cancel(id)


def test_retry_of_queued_job_is_conflict(vision: Client) -> None:
    # Only dead, failed or cancelled jobs can be retried (contract, and the CLI's message).
    id = vision.enqueue(stuck_job())["job"]["id"]
    try:
        refused(lambda: vision.retry(id), 409, "conflict")
    finally:
        vision.cancel(id)


def test_wait_times_out(vision: Client) -> None:
    id = vision.enqueue(stuck_job())["job"]["id"]
    with pytest.raises(WaitTimeout) as e:
        vision.wait(id, timeout=2)
    assert e.value.job["state"] == "queued"
    vision.cancel(id)


def test_idempotent_enqueue(vision: Client) -> None:
    spec = stuck_job(id=uid("idem"))
    first = vision.enqueue(spec)
    assert first["created"] is True and first["job"]["id"] == spec["id"]
    again = vision.enqueue(spec)
    assert again["created"] is False and again["job"]["id"] == spec["id"]
    refused(lambda: vision.enqueue({**spec, "name": uid("other")}), 409, "conflict")
    vision.cancel(spec["id"])


def test_follow_logs(vision: Client) -> None:
    code = "import time\nfor i in range(3):\n    print('line', i, flush=True)\n    time.sleep(0.3)"
    id = vision.enqueue(cpu_job(code))["job"]["id"]
    lines = list(vision.follow_logs(id, timeout=60))
    assert [l for l in lines if l.startswith("line ")] == ["line 0", "line 1", "line 2"], lines
    assert vision.job(id)["state"] == "succeeded"
    # Once the job has ended, the stream gives what it wrote and ends at once.
    assert [l for l in vision.follow_logs(id, timeout=10) if l.startswith("line ")] == ["line 0", "line 1", "line 2"]


def test_reads(admin: Client, vision: Client) -> None:
    assert isinstance(vision.status(), dict)
    assert len(vision.workers()["workers"]) >= 1
    assert isinstance(vision.quotas(), dict)
    estimates = vision.estimate([cpu_job(epochs=2)])["estimates"]
    assert len(estimates) == 1 and "cost" in estimates[0]
    assert isinstance(vision.compare(stuck_job(epochs=2), gpus=[1, 2])["scenarios"], list)
    assert isinstance(admin.budgets()["budgets"], list)
