"""gpuq: a Python client for gpuq's HTTP API.

    from gpuq import Client
    with Client("http://127.0.0.1:8080", token) as gq:
        job = gq.enqueue({"name": "hello", "command": ["python3", "-c", "print('hello')"]})["job"]
        gq.wait(job["id"])
"""

from .client import (
    FINAL_STATES,
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    GpuqError,
    NotFound,
    Unauthenticated,
    Unavailable,
    WaitTimeout,
)

__all__ = [
    "FINAL_STATES",
    "BadRequest",
    "Client",
    "Conflict",
    "Forbidden",
    "GpuqError",
    "NotFound",
    "Unauthenticated",
    "Unavailable",
    "WaitTimeout",
]
__version__ = "0.1.0"
