"""The peers' jobs: INCR a counter (the drain), and push a mark that the enqueuer waits
for (the pickup latency, timed on the enqueuer's clock). Imported by the RQ, Celery and
arq workers."""

import os

import redis

URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/1")
COUNTER = "peer:done"
PICKUP = "peer:pickup"
_r = redis.Redis.from_url(URL)


def incr():
    """RQ's job."""
    _r.incr(COUNTER)


def stamp():
    """RQ's pickup job."""
    _r.rpush(PICKUP, 1)


# Celery: the app and its task, with Redis as the broker and no result backend.
try:
    from celery import Celery

    app = Celery("peers", broker=URL)
    app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)

    @app.task(name="incr")
    def celery_incr():
        _r.incr(COUNTER)

    @app.task(name="stamp")
    def celery_stamp():
        _r.rpush(PICKUP, 1)

except ImportError:  # only the Celery peer needs it
    app = None


# arq: an async function and the worker's settings.
async def arq_incr(ctx):
    await ctx["redis"].incr(COUNTER)


async def arq_stamp(ctx):
    await ctx["redis"].rpush(PICKUP, 1)


try:
    from arq.connections import RedisSettings

    class WorkerSettings:
        functions = [arq_incr, arq_stamp]
        redis_settings = RedisSettings.from_dsn(URL)

except ImportError:  # only the arq peer needs it
    WorkerSettings = None
