//! The worker's own metrics (the pool-wide view comes from `scheduler serve`).
//! Labels come from fixed sets; never a job id.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::time::Instant;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    /// succeeded | failed | fatal | cancelled | released | stale
    pub(crate) outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpLabel {
    /// claim | finish | release | heartbeat | reap | cancel_check
    pub(crate) op: &'static str,
}

/// Every metric the worker exports.
pub(crate) struct WorkerMetrics {
    pub(crate) registry: Registry,
    pub(crate) slots_busy: Gauge,
    pub(crate) jobs: Family<OutcomeLabel, Counter>,
    pub(crate) launcher_errors: Counter,
    pub(crate) heartbeat_failures: Counter,
    redis_latency: Family<OpLabel, Histogram>,
}

impl WorkerMetrics {
    pub(crate) fn new(concurrency: u32) -> Self {
        let mut registry = Registry::with_prefix("gpuq_worker");
        let slots: Gauge = Gauge::default();
        slots.set(i64::from(concurrency));
        let slots_busy: Gauge = Gauge::default();
        let jobs = Family::<OutcomeLabel, Counter>::default();
        let launcher_errors = Counter::default();
        let heartbeat_failures = Counter::default();
        let redis_latency = Family::<OpLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register("slots", "Jobs this worker can run at once", slots.clone());
        registry.register("slots_busy", "Jobs this worker is running", slots_busy.clone());
        registry.register("jobs", "Attempts ended by this worker, by outcome", jobs.clone());
        registry.register(
            "launcher_errors",
            "Attempts the launcher failed to run",
            launcher_errors.clone(),
        );
        registry.register(
            "heartbeat_failures",
            "Heartbeat refreshes that failed",
            heartbeat_failures.clone(),
        );
        registry.register_with_unit(
            "redis_latency",
            "Round-trip time of the worker's Redis operations",
            Unit::Seconds,
            redis_latency.clone(),
        );
        WorkerMetrics {
            registry,
            slots_busy,
            jobs,
            launcher_errors,
            heartbeat_failures,
            redis_latency,
        }
    }

    /// Starts timing a Redis operation; the time is recorded when the timer is dropped.
    pub(crate) fn time(&self, op: &'static str) -> RedisTimer<'_> {
        RedisTimer {
            metrics: self,
            op,
            start: Instant::now(),
        }
    }

    pub(crate) fn count_outcome(&self, outcome: &str) {
        self.jobs
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

/// Observes a Redis round trip on drop.
pub(crate) struct RedisTimer<'a> {
    metrics: &'a WorkerMetrics,
    op: &'static str,
    start: Instant,
}

impl Drop for RedisTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .redis_latency
            .get_or_create(&OpLabel { op: self.op })
            .observe(self.start.elapsed().as_secs_f64());
    }
}
