-- Costs: monthly budgets, and the actual cost of every attempt, recorded when it ends
-- (in the same transaction as the transition that ended it).

CREATE TABLE budgets (
    team            TEXT NOT NULL,
    -- '' for a team-wide budget, else the value of the job label `experiment`.
    experiment      TEXT NOT NULL,
    -- Calendar month in the pricing time zone, "2026-11".
    month           TEXT NOT NULL,
    amount_micros   BIGINT NOT NULL,
    warn_ppm        BIGINT NOT NULL,
    PRIMARY KEY (team, experiment, month)
);

CREATE TABLE attempt_costs (
    job_id          TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    team            TEXT NOT NULL,
    experiment      TEXT NOT NULL,
    model_type      TEXT NOT NULL,
    priority        TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    ended_at        BIGINT NOT NULL,
    -- The state the attempt ended in (succeeded, failed, cancelled, dead, queued when lost).
    outcome         TEXT NOT NULL,
    cost_micros     BIGINT NOT NULL,
    PRIMARY KEY (job_id, attempt)
);

CREATE INDEX attempt_costs_by_team ON attempt_costs (team, ended_at);
