"""The peers' jobs: INCR a counter (the drain), and push how long ago a job was enqueued
(the pickup latency: `t`, wall-clock microseconds, set by the enqueuer). Imported by the
RQ, Celery and arq workers."""

import os
import time

import redis

URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/1")
COUNTER = "peer:done"
PICKUP = "peer:pickup"
_r = redis.Redis.from_url(URL)


def now_us():
    return time.time_ns() // 1000


def incr():
    """RQ's job."""
    _r.incr(COUNTER)


def stamp(t):
    """RQ's pickup job."""
    _r.rpush(PICKUP, now_us() - t)


# Celery: the app and its task, with Redis as the broker and no result backend.
try:
    from celery import Celery

    app = Celery("peers", broker=URL)
    app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)

    @app.task(name="incr")
    def celery_incr():
        _r.incr(COUNTER)

    @app.task(name="stamp")
    def celery_stamp(t):
        _r.rpush(PICKUP, now_us() - t)

except ImportError:  # only the Celery peer needs it
    app = None


# arq: an async function and the worker's settings.
async def arq_incr(ctx):
    await ctx["redis"].incr(COUNTER)


async def arq_stamp(ctx, t):
    await ctx["redis"].rpush(PICKUP, now_us() - t)


try:
    from arq.connections import RedisSettings

    class WorkerSettings:
        functions = [arq_incr, arq_stamp]
        redis_settings = RedisSettings.from_dsn(URL)

except ImportError:  # only the arq peer needs it
    WorkerSettings = None
