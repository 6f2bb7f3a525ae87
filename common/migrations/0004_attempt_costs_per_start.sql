-- An attempt handed back uncounted (a preemption victim, a worker that shut down) and the
-- attempt after it carry the same number, and both ran and are billed: a cost row is one
-- attempt's run, keyed by its start as well. A preempted attempt also keeps the GPU time it
-- lost since its last checkpoint (outcome 'preempted'), which `cost report` shows apart.

CREATE TABLE attempt_costs_v2 (
    job_id          TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    team            TEXT NOT NULL,
    experiment      TEXT NOT NULL,
    model_type      TEXT NOT NULL,
    priority        TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    ended_at        BIGINT NOT NULL,
    -- The state the attempt ended in (succeeded, failed, cancelled, dead, queued when lost
    -- or handed back, preempted).
    outcome         TEXT NOT NULL,
    cost_micros     BIGINT NOT NULL,
    -- GPU milliseconds lost since the last checkpoint (preempted attempts; else 0).
    lost_gpu_ms     BIGINT NOT NULL DEFAULT 0,
    -- What that lost time cost (part of cost_micros).
    lost_micros     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, attempt, started_at)
);

INSERT INTO attempt_costs_v2 (job_id, attempt, team, experiment, model_type, priority, started_at,
    ended_at, outcome, cost_micros)
SELECT job_id, attempt, team, experiment, model_type, priority, started_at, ended_at, outcome,
    cost_micros
FROM attempt_costs;

DROP TABLE attempt_costs;

ALTER TABLE attempt_costs_v2 RENAME TO attempt_costs;

CREATE INDEX attempt_costs_by_team ON attempt_costs (team, ended_at);
