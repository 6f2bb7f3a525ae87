"""The peers' one job: INCR a counter. Imported by the RQ, Celery and arq workers."""

import os

import redis

URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/1")
COUNTER = "peer:done"
_r = redis.Redis.from_url(URL)


def incr():
    """RQ's job."""
    _r.incr(COUNTER)


# Celery: the app and its task, with Redis as the broker and no result backend.
try:
    from celery import Celery

    app = Celery("peers", broker=URL)
    app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)

    @app.task(name="incr")
    def celery_incr():
        _r.incr(COUNTER)

except ImportError:  # only the Celery peer needs it
    app = None


# arq: an async function and the worker's settings.
async def arq_incr(ctx):
    await ctx["redis"].incr(COUNTER)


try:
    from arq.connections import RedisSettings

    class WorkerSettings:
        functions = [arq_incr]
        redis_settings = RedisSettings.from_dsn(URL)

except ImportError:  # only the arq peer needs it
    WorkerSettings = None
