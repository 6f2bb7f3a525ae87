"""One run of a Python peer: start its workers, enqueue JOBS jobs by its documented bulk
path while they run, and time it until the counter says the last one is done.

    python3 peer.py rq|celery|arq JOBS WORKERS [SAMPLES]

Then, on the idle workers, SAMPLES jobs (default 100) one at a time, each timed on this
process's clock from just before its enqueue until the job's mark (an RPUSH, waited for
with BLPOP) arrives. Prints one JSON line: peer, jobs,
enqueue_per_s (the enqueue alone), drain_per_s (from the start of the enqueue until the
last job is done), pickup_p50_ms and pickup_p99_ms.
"""

import asyncio
import json
import os
import subprocess
import sys
import time

import redis

from tasks import COUNTER, PICKUP, URL

HERE = os.path.dirname(os.path.abspath(__file__))


def workers(kind, n):
    # The worker commands come from the interpreter's own environment (run.sh makes one
    # per peer: Celery wants redis-py 6, arq below 6).
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, PYTHONPATH=HERE, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    cmd = {
        # RQ in one process (SimpleWorker): its default worker forks a work horse per job,
        # about 12 jobs/s here.
        "rq": ["rq", "worker", "--url", URL, "--quiet", "--worker-class", "rq.worker.SimpleWorker", "peers"],
        # Celery's default prefork pool, one child per core.
        "celery": ["celery", "-A", "tasks", "worker", "--loglevel", "WARNING", "--concurrency", "2"],
        "arq": ["arq", "tasks.WorkerSettings"],
    }[kind]
    return [subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]


def wait_ready(kind, r, procs):
    """Until the workers are registered (RQ, arq) or answer (Celery)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        if kind == "rq" and r.scard("rq:workers") >= len(procs):
            return
        if kind == "arq" and r.exists("arq:queue:health-check"):
            return
        if kind == "celery":
            from tasks import app
            replies = app.control.ping(timeout=0.5)
            if len(replies) >= len(procs):
                return
        time.sleep(0.1)
    raise SystemExit(f"{kind} workers did not come up")


def enqueue(kind, jobs):
    if kind == "rq":
        from rq import Queue
        from tasks import incr
        q = Queue("peers", connection=redis.Redis.from_url(URL))
        for start in range(0, jobs, 1000):
            n = min(1000, jobs - start)
            q.enqueue_many([Queue.prepare_data(incr) for _ in range(n)])
    elif kind == "celery":
        from celery import group
        from tasks import celery_incr
        for start in range(0, jobs, 1000):
            n = min(1000, jobs - start)
            group(celery_incr.s() for _ in range(n)).apply_async()
    elif kind == "arq":
        from arq import create_pool
        from arq.connections import RedisSettings

        async def run():
            pool = await create_pool(RedisSettings.from_dsn(URL))
            for start in range(0, jobs, 1000):
                n = min(1000, jobs - start)
                await asyncio.gather(*(pool.enqueue_job("arq_incr") for _ in range(n)))
            await pool.aclose()

        asyncio.run(run())


def pickup(kind, r, samples):
    """Enqueue-to-start of one job at a time on idle workers, in ms, sorted."""
    send = None
    if kind == "rq":
        from rq import Queue
        from tasks import stamp
        q = Queue("peers", connection=redis.Redis.from_url(URL))
        send = lambda: q.enqueue(stamp)
    elif kind == "celery":
        from tasks import celery_stamp
        send = lambda: celery_stamp.delay()
    lat = []
    if kind == "arq":
        from arq import create_pool
        from arq.connections import RedisSettings

        async def run():
            pool = await create_pool(RedisSettings.from_dsn(URL))
            for _ in range(samples):
                t0 = time.perf_counter()
                await pool.enqueue_job("arq_stamp")
                await asyncio.to_thread(wait_stamp, r)
                lat.append((time.perf_counter() - t0) * 1000)
            await pool.aclose()

        asyncio.run(run())
    else:
        for _ in range(samples):
            t0 = time.perf_counter()
            send()
            wait_stamp(r)
            lat.append((time.perf_counter() - t0) * 1000)
    return sorted(lat)


def wait_stamp(r):
    if r.blpop(PICKUP, timeout=60) is None:
        raise SystemExit("a pickup job did not start within 60 s")


def percentile(sorted_ms, p):
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p / 100))]


def main():
    kind, jobs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    samples = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    r = redis.Redis.from_url(URL)
    r.flushdb()
    procs = workers(kind, n)
    try:
        wait_ready(kind, r, procs)
        t0 = time.perf_counter()
        enqueue(kind, jobs)
        t_enq = time.perf_counter() - t0
        deadline = time.time() + 600
        while int(r.get(COUNTER) or 0) < jobs:
            if time.time() > deadline:
                raise SystemExit(f"{kind}: {r.get(COUNTER)} of {jobs} done after 600 s")
            time.sleep(0.005)
        t_all = time.perf_counter() - t0
        lat = pickup(kind, r, samples)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    print(json.dumps({"peer": f"{kind} {n} worker(s)", "jobs": jobs,
                      "enqueue_per_s": jobs / t_enq, "drain_per_s": jobs / t_all,
                      "pickup_p50_ms": percentile(lat, 50), "pickup_p99_ms": percentile(lat, 99)}))


if __name__ == "__main__":
    main()
