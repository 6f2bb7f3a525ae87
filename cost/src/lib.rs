//! The cost engine of gpuq: what a training job will cost, what it did cost, and how it
//! could have cost less. Pure logic: no network, no Redis, no clock. The caller reads
//! history, budgets and spend from the job store, passes "now" in, and stores results.
//!
//! - [`CostModel`] reads a pricing file ([`DEFAULT_PRICING_TOML`] is built in): rates per
//!   GPU type, CPU core and GiB, an off-peak window in an IANA time zone, priority and
//!   spot factors, and the table for run-time estimates.
//! - [`Pricing::quote`] prices an interval exactly, splitting it at the off-peak window on
//!   real elapsed time (daylight-saving nights included); [`Pricing::actual_cost`] prices
//!   one attempt.
//! - [`EstimateConfig::estimate`] estimates a run time from history or the default table;
//!   [`compare`] prices alternative configurations side by side.
//! - [`BudgetCheck::check`] decides whether a submission fits a monthly budget.
//! - [`forecast`] projects a running job's total cost from its pace.
//! - [`report`] aggregates costs by team, model type or priority with a trend.
//! - [`recommend`] finds concrete savings in a finished run.
//!
//! Money is [`Money`], an integer number of micro-units, never a float.
#![warn(missing_docs)]

mod budget;
mod compare;
mod config;
mod estimate;
mod forecast;
mod money;
mod pricing;
mod recommend;
mod report;
mod windows;

pub use budget::{BudgetCheck, BudgetDecision, BudgetScope, Month, DEFAULT_WARN_RATIO};
pub use compare::{compare, ComparisonRow, Scenario};
pub use config::{CostModel, DEFAULT_PRICING_TOML};
pub use estimate::{Basis, DurationEstimate, EstimateConfig, RunSample};
pub use forecast::{forecast, Forecast, Progress};
pub use money::{Currency, DecimalError, Money, Ratio};
pub use pricing::{Pricing, Quote, Spot, Usage};
pub use recommend::{
    recommend, EpochMetrics, FinishedRun, RecommendConfig, Recommendation, RecommendationKind, SimilarRun,
};
pub use report::{report, CostRow, GroupBy, PreemptionLosses, Report, ReportLine};
pub use windows::OffPeak;

/// Why a pricing file was refused. Both kinds are permanent: fix the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The file is not TOML of the expected shape (the message points at the spot).
    #[error("pricing file: {0}")]
    Syntax(String),
    /// A value is out of range or malformed.
    #[error("pricing file: {field}: {message}")]
    Invalid {
        /// Dotted path of the field, e.g. `rates.gpu.a100`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Result of loading a pricing file.
pub type Result<T, E = Error> = std::result::Result<T, E>;
