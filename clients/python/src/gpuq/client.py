"""A thin client for gpuq's HTTP API (`scheduler serve --api`).

Every method is one request (or, for `wait`, `iter_jobs` and `follow_logs`, a loop of
them) and returns the server's JSON body as it is, in plain dicts (only `logs` and
`follow_logs` give the lines themselves): the server's OpenAPI document
(`GET /openapi.json`) is the reference for their fields, and plain dicts keep this
client from going stale when the server adds a field.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, cast
from urllib.parse import quote

import httpx

JSON = Dict[str, Any]

#: The states a job does not leave by itself: the default of `Client.wait`.
FINAL_STATES = ("succeeded", "failed", "dead", "cancelled")

# The server holds a single wait for at most this long (the contract's maximum).
_MAX_SERVER_WAIT = 300


class GpuqError(Exception):
    """The server refused a request, or a wait ran out.

    `status` is the HTTP status (None for errors found by the client, such as a wait
    that timed out), `code` the server's stable error code (`bad_input`,
    `invalid_spec`, `over_budget`, `unauthenticated`, `forbidden`, `not_found`,
    `conflict`, `unavailable`, `too_many_waits`): branch on `code`, not on `message`,
    whose wording may change.
    """

    def __init__(self, status: Optional[int], code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class BadRequest(GpuqError):
    """400: the input is wrong (`bad_input`, `invalid_spec`, `over_budget`); nothing changed."""


class Unauthenticated(GpuqError):
    """401: no token, or one that is unknown, expired or revoked."""


class Forbidden(GpuqError):
    """403: the token's role or team does not allow it."""


class NotFound(GpuqError):
    """404: no such job (another team's job is reported this way too)."""


class Conflict(GpuqError):
    """409: the request conflicts with the current state (an id taken by another spec...)."""


class Unavailable(GpuqError):
    """503: Redis or the store is unreachable, or too many waits are open; try again later."""


class WaitTimeout(GpuqError, TimeoutError):
    """`Client.wait` ran out of time; `job` is the job as it last was."""

    def __init__(self, job: JSON, states: Sequence[str], timeout: float) -> None:
        super().__init__(
            None,
            "wait_timeout",
            f"job {job.get('id')} is {job.get('state')}, not {'/'.join(states)}, after {timeout:g}s",
        )
        self.job = job


_BY_STATUS = {400: BadRequest, 401: Unauthenticated, 403: Forbidden, 404: NotFound, 409: Conflict, 503: Unavailable}


def _error(response: httpx.Response) -> GpuqError:
    """The exception for a refused request, from the server's `{"code", "message"}` body
    (or, from something that is not gpuq, such as a proxy, the status alone)."""
    code, message = f"http_{response.status_code}", response.text.strip()[:500] or response.reason_phrase
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            code, message = body["code"], str(body.get("message", ""))
    except ValueError:
        pass
    return _BY_STATUS.get(response.status_code, GpuqError)(response.status_code, code, message)


def _seg(value: str) -> str:
    """A path segment: ids are the client's to choose, so `/` or `?` in one must not
    change which route is called."""
    return quote(str(value), safe="")


def _params(filters: Mapping[str, Any]) -> Dict[str, Any]:
    """Query parameters without the unset ones (the server treats a missing filter as
    "any", an empty one as a value)."""
    return {k: v for k, v in filters.items() if v is not None}


class Client:
    """A connection to one gpuq server, acting with one token.

    The token decides the team and role: a team token sees and enqueues for its own
    team only (another team's job is 404), a viewer reads, a submitter also enqueues,
    cancels and retries, an admin does everything for every team. `token` may be None
    for a server started with `--insecure-no-auth`.

    `timeout` bounds ordinary requests; `wait` and `follow_logs` set their own, since
    they are meant to be held open. Network failures raise httpx's exceptions
    (`httpx.TransportError`), so that "the server said no" (`GpuqError`) and "the
    server could not be reached" stay apart.
    """

    def __init__(self, base_url: str, token: Optional[str], timeout: float = 30.0) -> None:
        headers = {"Accept": "application/json", "User-Agent": "gpuq-python/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        """Closes the pooled connections."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise _error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> JSON:
        response = self._request(method, path, **kwargs)
        return cast(JSON, response.json()) if response.content else {}

    # Jobs

    def enqueue(self, spec: Mapping[str, Any]) -> JSON:
        """Enqueues one job; returns `{"created", "job", "warnings", "estimate"?}`.

        Give the spec an `id` to make this safe to repeat: the same id with the same spec
        again is `created: False` and changes nothing, the same id with another spec is a
        `Conflict`. A spec without `team` takes the token's team.
        """
        return self._json("POST", "/v1/jobs", json=dict(spec))

    def enqueue_batch(self, specs: Iterable[Mapping[str, Any]]) -> JSON:
        """Enqueues jobs all-or-nothing (at most 5000); returns `{"ids", "created",
        "existing", "warnings", "estimate"?}`. One bad spec refuses the whole batch."""
        return self._json("POST", "/v1/batches", json={"jobs": [dict(s) for s in specs]})

    def job(self, id: str) -> JSON:
        """The job record: its spec (secrets masked), state, attempts, times, reason."""
        return self._json("GET", f"/v1/jobs/{_seg(id)}")

    def wait(self, id: str, states: Sequence[str] = FINAL_STATES, timeout: float = 60) -> JSON:
        """Blocks until the job is in one of `states`, and returns it; raises
        `WaitTimeout` (with the job as it last was) after `timeout` seconds.

        The waiting happens on the server (`?wait=...&timeout=Ns`), which answers as soon
        as the job changes: no polling interval to tune, no load while nothing happens.
        A server-side wait lasts at most 300 s, so a longer one is a loop of them. When
        the server has too many waits open (503 `too_many_waits`), this backs off and
        tries again until the deadline rather than failing a caller who only asked to wait.
        """
        states = tuple(states)
        deadline = time.monotonic() + timeout
        wanted = ",".join(states) if states else "end"
        backoff = 0.5
        while True:
            left = deadline - time.monotonic()
            # Whole seconds, rounded up so that the last wait does not spin; 0 s (once the
            # deadline has passed) makes the server answer at once, for a last look.
            server_wait = math.ceil(max(0.0, min(left, _MAX_SERVER_WAIT)))
            try:
                response = self._request(
                    "GET",
                    f"/v1/jobs/{_seg(id)}",
                    params={"wait": wanted, "timeout": f"{server_wait}s"},
                    timeout=httpx.Timeout(self.timeout, read=server_wait + self.timeout),
                )
            except Unavailable as e:
                if e.code != "too_many_waits" or time.monotonic() + backoff >= deadline:
                    raise
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)
                continue
            job = cast(JSON, response.json())
            if job.get("state") in states or (not states and job.get("state") in FINAL_STATES):
                return job
            # Trust the state over the header: a job that passed through a wanted state
            # and left it again is not what the caller waits for.
            if time.monotonic() >= deadline:
                raise WaitTimeout(job, states or ("end",), timeout)

    def jobs(
        self,
        *,
        state: Optional[str] = None,
        priority: Optional[str] = None,
        team: Optional[str] = None,
        model_type: Optional[str] = None,
        since: Optional[int] = None,
        until: Optional[int] = None,
        before: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> JSON:
        """One page of jobs, newest first: `{"jobs": [...], "next": cursor | None}`.

        `since`/`until` are ms since the epoch; pass a page's `next` as `before` for the
        page after it, or use `iter_jobs`, which does.
        """
        params = _params(dict(state=state, priority=priority, team=team, model_type=model_type,
                              since=since, until=until, before=before, limit=limit))
        return self._json("GET", "/v1/jobs", params=params)

    def iter_jobs(self, **filters: Any) -> Iterator[JSON]:
        """Every job matching `filters` (those of `jobs`), newest first, a page at a time
        (`limit` sets the page size). Pages are fetched lazily, so stopping early costs
        nothing more, and the cursor keeps the listing stable while jobs are added."""
        filters = dict(filters)
        while True:
            page = self.jobs(**filters)
            yield from page["jobs"]
            if not page.get("next") or not page["jobs"]:
                return
            filters["before"] = page["next"]

    def cancel(self, id: str, reason: Optional[str] = None) -> JSON:
        """Cancels a job: `{"id", "state": "cancelled"}` for a job that had not started,
        `"cancelling"` while a running one's worker stops it. The reason goes into the
        job's history, next to the token's name."""
        body = {"reason": reason} if reason is not None else None
        return self._json("POST", f"/v1/jobs/{_seg(id)}/cancel", json=body)

    def retry(self, id: str) -> JSON:
        """Brings a dead, failed or cancelled job back to its queue with fresh attempts."""
        return self._json("POST", f"/v1/jobs/{_seg(id)}/retry")

    def logs(self, id: str, lines: int = 100) -> List[str]:
        """The last `lines` lines of the job's output."""
        return cast(List[str], self._json("GET", f"/v1/jobs/{_seg(id)}/logs", params={"lines": lines})["lines"])

    def follow_logs(self, id: str, timeout: Optional[float] = None) -> Iterator[str]:
        """Yields the job's output lines as they are written, and returns once the job has
        ended (the server's `event: end`).

        It reads the server-sent event stream, so lines arrive as the job prints them
        instead of by polling `logs`. `timeout` bounds the silence between two events
        (None: wait as long as the job runs). Closing the generator closes the stream.
        """
        with self._http.stream(
            "GET",
            f"/v1/jobs/{_seg(id)}/logs/stream",
            headers={"Accept": "text/event-stream"},
            timeout=httpx.Timeout(self.timeout, read=timeout),
        ) as response:
            if response.is_error:
                response.read()
                raise _error(response)
            event: str = "message"
            data: List[str] = []
            for line in response.iter_lines():
                if line == "":
                    # A blank line ends an event (SSE): dispatch it.
                    if event == "end":
                        return
                    if data:
                        yield "\n".join(data)
                    event, data = "message", []
                    continue
                if line.startswith(":"):
                    continue  # a comment: keep-alive
                field, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
            # The stream closed without a trailing blank line: what is pending still counts.
            if event != "end" and data:
                yield "\n".join(data)

    def forecast(self, id: str) -> JSON:
        """What a running job will cost by the time it ends (a `Conflict` once it ended)."""
        return self._json("GET", f"/v1/jobs/{_seg(id)}/forecast")

    def recommendations(self, id: str) -> JSON:
        """What a finished job cost, and what would have made it cheaper."""
        return self._json("GET", f"/v1/jobs/{_seg(id)}/recommendations")

    # The pool

    def status(self) -> JSON:
        """The dashboard: health, queues, pools, teams, workers, running jobs, failures."""
        return self._json("GET", "/v1/status")

    def workers(self) -> JSON:
        """Live workers, from their heartbeats: `{"workers": [...]}`."""
        return self._json("GET", "/v1/workers")

    def quotas(self) -> JSON:
        """GPU pools, team quotas with borrowing, caps on running jobs, and their usage."""
        return self._json("GET", "/v1/quotas")

    # Costs and budgets

    def estimate(self, specs: Iterable[Mapping[str, Any]], spot: bool = False, start: Optional[int] = None) -> JSON:
        """What each spec would cost (on spot capacity when `spot`), before enqueueing it;
        `start` (ms since the epoch) prices a later start (off-peak windows).
        Returns `{"estimates": [...]}`, one per spec, in order."""
        body: JSON = {"jobs": [dict(s) for s in specs], "spot": spot}
        if start is not None:
            body["start"] = start
        return self._json("POST", "/v1/costs/estimate", json=body)

    def compare(
        self,
        spec: Mapping[str, Any],
        batch_sizes: Sequence[int] = (),
        gpus: Sequence[int] = (),
        all_options: bool = False,
    ) -> JSON:
        """The cost and duration of `spec` under other batch sizes and GPU counts (every
        GPU type and spot/on-demand too with `all_options`), to choose before enqueueing:
        `{"scenarios": [...]}`."""
        body = {"spec": dict(spec), "batch_sizes": list(batch_sizes), "gpus": list(gpus), "all_options": all_options}
        return self._json("POST", "/v1/costs/compare", json=body)

    def cost_report(self, since: Optional[int] = None, until: Optional[int] = None, by: Optional[str] = None) -> JSON:
        """What jobs cost between two instants (ms), grouped `by` team, model_type or priority."""
        return self._json("GET", "/v1/costs/report", params=_params({"from": since, "to": until, "by": by}))

    def budgets(self, month: Optional[str] = None, team: Optional[str] = None) -> JSON:
        """Budgets of `month` (`YYYY-MM`, default this one), with what was spent and what
        running and queued jobs have committed: `{"budgets": [...]}`."""
        return self._json("GET", "/v1/budgets", params=_params({"month": month, "team": team}))
