-- API tokens and the audit log of writes that are not a job's transitions.
--
-- A token is shown once, when it is created; only its SHA-256 is kept. A team token
-- (viewer or submitter) sees its own team only; an admin token sees every team.

CREATE TABLE api_tokens (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    -- '' for a token of no team (admin tokens only).
    team            TEXT NOT NULL,
    role            TEXT NOT NULL,
    -- Hex SHA-256 of the secret.
    hash            TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    created_by      TEXT NOT NULL,
    -- 0 when it never expires.
    expires_at      BIGINT NOT NULL,
    -- 0 while it is not revoked.
    revoked_at      BIGINT NOT NULL
);

-- Who changed what outside a job's history: budgets, quotas, tokens. Job writes
-- (enqueue, cancel, retry) name their actor in the job's history instead.
CREATE TABLE audit_log (
    at              BIGINT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    target          TEXT NOT NULL,
    detail          TEXT NOT NULL
);

CREATE INDEX audit_log_by_time ON audit_log (at);
