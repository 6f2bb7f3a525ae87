"""A live gpuq for the tests: a scheduler serving the API and one worker, on the Redis at
$REDIS_URL, in a namespace and an SQLite store of this session's own (so that tests can
run next to anything else using that Redis, and leave nothing of theirs behind).

The binaries come from target/debug (or $GPUQ_BIN_DIR): build them first with
`cargo build -p scheduler -p worker`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Generator, Iterator, List, Optional
from urllib.parse import urlparse

import httpx
import pytest

from gpuq import Client

REPO = Path(__file__).resolve().parents[3]
BIN_DIR = Path(os.environ.get("GPUQ_BIN_DIR", REPO / "target" / "debug"))
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
STARTUP = 60.0  # seconds a debug build may take to answer
STOP = 15.0  # seconds between SIGTERM and SIGKILL

# The logs of the session's processes, shown under a failing test.
_LOGS: List[Path] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(_ANSI.sub("", path.read_text(errors="replace")).splitlines()[-lines:])
    except OSError as e:
        return f"({e})"


def _redis_reachable(url: str) -> bool:
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=2):
            return True
    except OSError:
        return False


@dataclass
class Server:
    """The running scheduler: its URL and the tokens created for the tests."""

    url: str
    namespace: str
    tokens: Dict[str, str] = field(default_factory=dict)

    def client(self, who: Optional[str]) -> Client:
        """A client acting with the token named `who` (None: no token at all)."""
        return Client(self.url, self.tokens[who] if who else None, timeout=30)


class _Processes:
    """Processes started for the session, stopped in reverse order at the end."""

    def __init__(self) -> None:
        self.procs: List[subprocess.Popen] = []

    def start(self, args: List[str], log: Path) -> subprocess.Popen:
        _LOGS.append(log)
        with open(log, "wb") as out:
            # A session of its own: the worker's job processes go down with it if it is killed.
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Whatever is left of its process group (a job it did not stop), and itself.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()


def _wait_until(what: str, check: Callable[[], bool], proc: subprocess.Popen, log: Path) -> None:
    """Polls `check` until it holds, failing with the process's log when the process exits
    or STARTUP seconds pass."""
    deadline = time.monotonic() + STARTUP
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {STARTUP:g}s:\n{_tail(log)}")
        time.sleep(0.1)


def _delete_namespace(namespace: str) -> None:
    """Best effort: removes the session's keys (all under the hash tag `{namespace}`)."""
    cli = shutil.which("redis-cli")
    if not cli:
        return
    try:
        keys = subprocess.run([cli, "-u", REDIS_URL, "--scan", "--pattern", f"{{{namespace}}}*"],
                              capture_output=True, text=True, timeout=30).stdout.split()
        for i in range(0, len(keys), 500):
            subprocess.run([cli, "-u", REDIS_URL, "DEL", *keys[i:i + 500]], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pass


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    scheduler, worker = BIN_DIR / "scheduler", BIN_DIR / "worker"
    missing = [str(p) for p in (scheduler, worker) if not p.is_file()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `cargo build -p scheduler -p worker` (or set GPUQ_BIN_DIR)")
    if not _redis_reachable(REDIS_URL):
        pytest.fail(f"no Redis answers at {REDIS_URL} (set REDIS_URL)")

    tmp = tmp_path_factory.mktemp("gpuq")
    namespace = f"pytest-{secrets.token_hex(4)}"
    common = ["--redis-url", REDIS_URL, "--namespace", namespace]
    store = ["--database-url", f"sqlite://{tmp / 'jobs.db'}?mode=rwc"]

    def token(role: str, team: Optional[str]) -> str:
        args = [str(scheduler), *common, *store, "token", "create", "--role", role, "--json"]
        if team:
            args += ["--team", team]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(args)} exited with {done.returncode}: {done.stderr}")
        return json.loads(done.stdout)["token"]

    port = _free_port()
    srv = Server(url=f"http://127.0.0.1:{port}", namespace=namespace)
    srv.tokens = {
        "vision": token("submitter", "vision"),
        "vision_viewer": token("viewer", "vision"),
        "nlp": token("submitter", "nlp"),
        "admin": token("admin", None),
    }

    procs = _Processes()
    try:
        log = tmp / "scheduler.log"
        proc = procs.start([str(scheduler), *common, *store, "--log-format", "text", "serve", "--api",
                            "--listen", f"127.0.0.1:{port}"], log)
        _wait_until("GET /openapi.json",
                    lambda: httpx.get(f"{srv.url}/openapi.json", timeout=2).status_code == 200, proc, log)

        # `--gpus none` (`--gpus 0` would be device 0): it claims only jobs that need no GPU,
        # so a job asking for GPUs stays queued (the tests that cancel rely on it).
        log = tmp / "worker.log"
        proc = procs.start([str(worker), *common, "--log-format", "text", "--concurrency", "2", "--gpus", "none",
                            "--work-dir", str(tmp / "work"), "--metrics-addr", f"127.0.0.1:{_free_port()}",
                            "--grace-period", "2s", "--kill-grace", "1s"], log)
        with srv.client("admin") as admin:
            _wait_until("a worker in GET /v1/workers", lambda: len(admin.workers()["workers"]) > 0, proc, log)
        yield srv
    finally:
        procs.stop_all()
        _delete_namespace(namespace)


@pytest.fixture(scope="session")
def vision(server: Server) -> Iterator[Client]:
    """A submitter of team vision."""
    with server.client("vision") as c:
        yield c


@pytest.fixture(scope="session")
def vision_viewer(server: Server) -> Iterator[Client]:
    """A viewer of team vision."""
    with server.client("vision_viewer") as c:
        yield c


@pytest.fixture(scope="session")
def nlp(server: Server) -> Iterator[Client]:
    """A submitter of team nlp."""
    with server.client("nlp") as c:
        yield c


@pytest.fixture(scope="session")
def admin(server: Server) -> Iterator[Client]:
    """An admin (every team)."""
    with server.client("admin") as c:
        yield c


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Shows the end of the server's and the worker's logs under a failing test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for log in _LOGS:
            report.sections.append((f"{log.name} (last lines)", _tail(log)))
