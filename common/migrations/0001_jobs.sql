-- The job store: one row per job (its latest state) and an append-only history of
-- transitions. Written for both PostgreSQL and SQLite: integers are BIGINT, times are
-- milliseconds since the Unix epoch (Redis server time), specs are JSON text.

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    team            TEXT NOT NULL,
    model_type      TEXT NOT NULL,
    priority        TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    attempt_limit   BIGINT NOT NULL,
    spec            TEXT NOT NULL,
    enqueued_at     BIGINT NOT NULL,
    -- Outbox position of the enqueue (stream entry id parts): the FIFO order.
    enqueue_ms      BIGINT NOT NULL,
    enqueue_seq     BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    updated_at      BIGINT NOT NULL,
    worker          TEXT,
    exit_code       BIGINT,
    reason          TEXT,
    -- Run time of the latest attempt, once it has ended.
    runtime_ms      BIGINT,
    -- Outbox position of the latest transition applied: later ones win, earlier replays lose.
    last_event_ms   BIGINT NOT NULL,
    last_event_seq  BIGINT NOT NULL
);

CREATE INDEX jobs_by_state ON jobs (state, enqueue_ms, enqueue_seq);
CREATE INDEX jobs_by_enqueue ON jobs (enqueued_at);
CREATE INDEX jobs_by_team ON jobs (team, enqueued_at);
CREATE INDEX jobs_by_finish ON jobs (finished_at);

CREATE TABLE job_history (
    -- The outbox stream entry id: replaying an entry is a no-op.
    event_id    TEXT PRIMARY KEY,
    -- The entry id's parts, for ordering (the text id does not sort numerically).
    event_ms    BIGINT NOT NULL,
    event_seq   BIGINT NOT NULL,
    job_id      TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    at          BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    worker      TEXT,
    detail      TEXT,
    exit_code   BIGINT
);

CREATE INDEX job_history_by_job ON job_history (job_id, event_ms, event_seq);
