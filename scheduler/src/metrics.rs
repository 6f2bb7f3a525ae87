//! Pool-wide metrics, served by `scheduler serve` on /metrics.
//!
//! Gauges are read from Redis at scrape time (queue depth per priority is the HPA's input).
//! Counters and histograms are fed by the outbox drainer, which sees every transition
//! exactly once per store write: replayed outbox entries are not counted again.
//! Label values come from fixed sets (priority, outcome) or bounded ones (model type);
//! never a job id.

use common::queue::{QueueStatus, RedisQueue};
use common::store::AppliedTransition;
use common::{now_ms, JobState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabel {
    priority: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    priority: String,
    model_type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishLabels {
    priority: String,
    model_type: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TeamLabels {
    team: String,
    pool: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model_type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TeamLabel {
    team: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PreemptionLabels {
    pool: String,
    victim_priority: String,
    reason: String,
}

/// Everything `serve` exports.
pub struct ServeMetrics {
    registry: Registry,
    queued: Family<PriorityLabel, Gauge>,
    admissible: Family<PriorityLabel, Gauge>,
    oldest_age: Family<PriorityLabel, Gauge<f64, AtomicU64>>,
    running: Gauge,
    retrying: Gauge,
    dead: Gauge,
    workers: Gauge,
    slots: Family<SlotLabel, Gauge>,
    outbox: Gauge,
    outbox_limit: Gauge,
    outbox_refused: Gauge,
    enqueued: Family<JobLabels, Counter>,
    started: Family<JobLabels, Counter>,
    finished: Family<FinishLabels, Counter>,
    attempts_failed: Family<JobLabels, Counter>,
    wait: Family<PriorityLabel, Histogram>,
    run: Family<OutcomeLabel, Histogram>,
    attempts: Family<OutcomeLabel, Histogram>,
    /// Failed attempts to write the job store (each retried).
    pub store_write_failures: Counter,
    pool_gpus: Family<PoolLabels, Gauge>,
    team_gpus: Family<TeamLabels, Gauge>,
    waiting: Family<ReasonLabel, Gauge>,
    overrunning: Family<ModelLabel, Gauge>,
    budget_forecast: Family<TeamLabel, Gauge<f64, AtomicU64>>,
    preemptions: Family<PreemptionLabels, Counter>,
    preemption_lost: Family<PreemptionLabels, Counter<f64, AtomicU64>>,
}

impl Default for ServeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServeMetrics {
    /// Registers every metric under the `gpuq_` prefix.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("gpuq");
        let m = ServeMetrics {
            registry: Registry::default(),
            queued: Family::default(),
            admissible: Family::default(),
            oldest_age: Family::default(),
            running: Gauge::default(),
            retrying: Gauge::default(),
            dead: Gauge::default(),
            workers: Gauge::default(),
            slots: Family::default(),
            outbox: Gauge::default(),
            outbox_limit: Gauge::default(),
            outbox_refused: Gauge::default(),
            enqueued: Family::default(),
            started: Family::default(),
            finished: Family::default(),
            attempts_failed: Family::default(),
            // 1 s .. ~9 h: training jobs wait and run for a long time.
            wait: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.01, 3.0, 14))),
            run: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 3.0, 12))),
            attempts: Family::new_with_constructor(|| Histogram::new([1.0, 2.0, 3.0, 5.0, 10.0])),
            store_write_failures: Counter::default(),
            pool_gpus: Family::default(),
            team_gpus: Family::default(),
            waiting: Family::default(),
            overrunning: Family::default(),
            budget_forecast: Family::default(),
            preemptions: Family::default(),
            preemption_lost: Family::default(),
        };
        r.register(
            "preemptions",
            "Jobs preempted and handed back, by pool, victim priority and reason (priority, reclaim)",
            m.preemptions.clone(),
        );
        r.register(
            "preemption_lost_gpu_seconds",
            "GPU seconds preempted jobs lost (since their last checkpoint, or their start)",
            m.preemption_lost.clone(),
        );
        r.register(
            "pool_gpus",
            "GPUs of each pool by state (capacity, used, reserved, free)",
            m.pool_gpus.clone(),
        );
        r.register(
            "team_gpus",
            "GPUs each team holds in each pool (used, borrowed) and its nominal quota",
            m.team_gpus.clone(),
        );
        r.register(
            "jobs_waiting",
            "Queued jobs by why they wait (admissible: only for a worker)",
            m.waiting.clone(),
        );
        r.register(
            "jobs_overrunning",
            "Running jobs past twice their duration estimate, by model type",
            m.overrunning.clone(),
        );
        r.register(
            "team_budget_forecast_ratio",
            "This month's spend plus the estimates of unfinished jobs, over the budget",
            m.budget_forecast.clone(),
        );
        r.register(
            "jobs_queued",
            "Jobs waiting in each priority list",
            m.queued.clone(),
        );
        r.register(
            "jobs_admissible",
            "Queued jobs of each priority that no quota or cap holds up: what more workers could start (the autoscaler's input)",
            m.admissible.clone(),
        );
        r.register_with_unit(
            "oldest_queued_job_age",
            "Age of the job at the head of each priority list",
            Unit::Seconds,
            m.oldest_age.clone(),
        );
        r.register("jobs_running", "Jobs held by workers", m.running.clone());
        r.register(
            "jobs_retrying",
            "Jobs waiting out a retry backoff",
            m.retrying.clone(),
        );
        r.register("jobs_dead", "Jobs in the dead-letter list", m.dead.clone());
        r.register("workers_live", "Workers with a live heartbeat", m.workers.clone());
        r.register(
            "worker_slots",
            "Worker slots by state (busy, free)",
            m.slots.clone(),
        );
        r.register(
            "outbox_pending",
            "Transitions not yet written to the job store",
            m.outbox.clone(),
        );
        r.register(
            "outbox_limit",
            "Outbox entries past which enqueue is refused (the outbox is never trimmed)",
            m.outbox_limit.clone(),
        );
        r.register(
            "outbox_refused",
            "Transitions the job store refused, set aside until `scheduler store retry`",
            m.outbox_refused.clone(),
        );
        r.register("jobs_enqueued", "Jobs enqueued", m.enqueued.clone());
        r.register("jobs_started", "Attempts started", m.started.clone());
        r.register(
            "jobs_finished",
            "Jobs that reached a final state, by outcome",
            m.finished.clone(),
        );
        r.register(
            "attempts_failed",
            "Attempts that failed",
            m.attempts_failed.clone(),
        );
        r.register_with_unit(
            "job_wait",
            "Time from queued to started",
            Unit::Seconds,
            m.wait.clone(),
        );
        r.register_with_unit(
            "job_run",
            "Run time of attempts, by how they ended",
            Unit::Seconds,
            m.run.clone(),
        );
        r.register(
            "job_attempts",
            "Attempts a job took, by final outcome",
            m.attempts.clone(),
        );
        r.register(
            "store_write_failures",
            "Failed writes to the job store",
            m.store_write_failures.clone(),
        );
        ServeMetrics { registry: r, ..m }
    }

    /// Counts one transition written to the store.
    pub fn observe(&self, t: &AppliedTransition) {
        let job = JobLabels {
            priority: t.priority.clone(),
            model_type: t.model_type.clone(),
        };
        match t.to {
            JobState::Queued | JobState::Deferred if t.from.is_none() && t.attempt == 0 => {
                self.enqueued.get_or_create(&job).inc();
            }
            JobState::Running => {
                self.started.get_or_create(&job).inc();
                if let Some(ms) = t.wait_ms {
                    let p = PriorityLabel {
                        priority: t.priority.clone(),
                    };
                    self.wait.get_or_create(&p).observe(ms as f64 / 1000.0);
                }
            }
            JobState::Failed => {
                self.attempts_failed.get_or_create(&job).inc();
            }
            JobState::Succeeded | JobState::Cancelled | JobState::Dead => {
                let outcome = t.to.to_string();
                self.finished
                    .get_or_create(&FinishLabels {
                        priority: t.priority.clone(),
                        model_type: t.model_type.clone(),
                        outcome: outcome.clone(),
                    })
                    .inc();
                self.attempts
                    .get_or_create(&OutcomeLabel { outcome })
                    .observe(f64::from(t.attempt));
            }
            _ => {}
        }
        if let Some(ms) = t.run_ms {
            let outcome = OutcomeLabel {
                outcome: t.to.to_string(),
            };
            self.run.get_or_create(&outcome).observe(ms as f64 / 1000.0);
        }
    }

    /// Sets the pool, team and waiting gauges (`config`: the admission configuration,
    /// for nominal quotas).
    pub fn set_admission(&self, s: &QueueStatus, config: &common::admission::AdmissionConfig) {
        for p in &s.pools {
            let set = |state: &'static str, v: u64| {
                self.pool_gpus
                    .get_or_create(&PoolLabels {
                        pool: p.pool.clone(),
                        state,
                    })
                    .set(v as i64);
            };
            set("used", p.used);
            set("reserved", p.reserved);
            if let Some(c) = p.capacity {
                set("capacity", c);
                set("free", c.saturating_sub(p.used));
            }
        }
        // Teams that held GPUs and hold none now must read 0, not their last value.
        self.team_gpus.clear();
        let mut pools: Vec<&String> = config.pools.keys().collect();
        pools.extend(s.usage.teams.keys().filter(|p| !config.pools.contains_key(*p)));
        for pool in pools {
            let quotas = config.pools.get(pool).map(|p| &p.quotas);
            let mut teams: Vec<String> = quotas.map(|q| q.keys().cloned().collect()).unwrap_or_default();
            if let Some(u) = s.usage.teams.get(pool) {
                teams.extend(
                    u.keys()
                        .filter(|t| !teams.contains(t))
                        .cloned()
                        .collect::<Vec<_>>(),
                );
            }
            for team in teams {
                let used = s.usage.team_gpus(pool, &team);
                let labels = |kind| TeamLabels {
                    team: team.clone(),
                    pool: pool.clone(),
                    kind,
                };
                self.team_gpus.get_or_create(&labels("used")).set(used as i64);
                if let Some(q) = quotas.and_then(|q| q.get(&team)) {
                    self.team_gpus
                        .get_or_create(&labels("nominal"))
                        .set(i64::from(q.nominal));
                    self.team_gpus
                        .get_or_create(&labels("borrowed"))
                        .set(used.saturating_sub(u64::from(q.nominal)) as i64);
                }
            }
        }
        self.waiting.clear();
        for reason in [
            "admissible",
            "quota",
            "pool_full",
            "group",
            "team_cap",
            "global_cap",
            "pool_cap",
            "reserved",
        ] {
            let n = s.waiting.get(reason).copied().unwrap_or(0);
            self.waiting
                .get_or_create(&ReasonLabel {
                    reason: reason.to_string(),
                })
                .set(n as i64);
        }
    }

    /// Sets the cost gauges: running jobs past twice their estimate per model type, and
    /// each budgeted team's forecast over its budget.
    pub fn set_costs(&self, overruns: &std::collections::BTreeMap<String, u64>, forecasts: &[(String, f64)]) {
        self.overrunning.clear();
        for (model_type, n) in overruns {
            self.overrunning
                .get_or_create(&ModelLabel {
                    model_type: model_type.clone(),
                })
                .set(*n as i64);
        }
        self.budget_forecast.clear();
        for (team, ratio) in forecasts {
            self.budget_forecast
                .get_or_create(&TeamLabel { team: team.clone() })
                .set(*ratio);
        }
    }

    /// Sets the gauges from a queue snapshot.
    pub fn set_status(&self, s: &QueueStatus) {
        let now = now_ms();
        for p in &s.priorities {
            let label = PriorityLabel {
                priority: p.priority.to_string(),
            };
            self.queued.get_or_create(&label).set(p.depth as i64);
            self.admissible
                .get_or_create(&label)
                .set(p.depth.saturating_sub(p.parked) as i64);
            let age = p
                .oldest_enqueued_at
                .map(|t| now.saturating_sub(t) as f64 / 1000.0)
                .unwrap_or(0.0);
            self.oldest_age.get_or_create(&label).set(age);
        }
        let slots: u32 = s.workers.iter().map(|w| w.concurrency).sum();
        self.running.set(s.running as i64);
        self.retrying.set(s.retrying as i64);
        self.dead.set(s.dead as i64);
        self.workers.set(s.workers.len() as i64);
        self.slots
            .get_or_create(&SlotLabel { state: "busy" })
            .set(s.running as i64);
        self.slots
            .get_or_create(&SlotLabel { state: "free" })
            .set(i64::from(slots).saturating_sub(s.running as i64).max(0));
        self.outbox.set(s.outbox as i64);
    }

    /// Brings the preemption counters up to Redis's (which only grow).
    fn set_preemptions(&self, counts: &[common::queue::PreemptionCount]) {
        for c in counts {
            let labels = PreemptionLabels {
                pool: c.pool.clone(),
                victim_priority: c.victim_priority.clone(),
                reason: c.reason.clone(),
            };
            let n = self.preemptions.get_or_create(&labels);
            n.inc_by(c.victims.saturating_sub(n.get()));
            let lost = self.preemption_lost.get_or_create(&labels);
            let secs = c.lost_gpu_ms as f64 / 1000.0;
            if secs > lost.get() {
                lost.inc_by(secs - lost.get());
            }
        }
    }

    /// Reads the queue and renders everything; on a Redis failure the gauges keep their
    /// last values and the failure is logged (a scrape must still answer).
    pub async fn scrape(&self, queue: &RedisQueue) -> String {
        match queue.status().await {
            Ok(s) => {
                self.set_status(&s);
                match queue.admission().await {
                    Ok(c) => self.set_admission(&s, &c.unwrap_or_default()),
                    Err(e) => tracing::warn!(error = %e, "metrics scrape could not read the quotas"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics scrape could not read the queue"),
        }
        match queue.preemption_counts().await {
            Ok(counts) => self.set_preemptions(&counts),
            Err(e) => tracing::warn!(error = %e, "metrics scrape could not read the preemption counts"),
        }
        self.outbox_limit.set(queue.outbox_limit() as i64);
        match queue.refused_len().await {
            Ok(n) => {
                self.outbox_refused.set(n as i64);
            }
            Err(e) => tracing::warn!(error = %e, "metrics scrape could not read the refused transitions"),
        }
        common::http::render(&self.registry)
    }
}
