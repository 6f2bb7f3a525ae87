//! Shared core of the GPU job queue: the job model, the Redis queue protocol and the
//! client other Rust services use to enqueue training jobs.
//!
//! ```no_run
//! # async fn demo() -> common::Result<()> {
//! use common::{Client, JobSpec, Priority};
//! let client = Client::connect("redis://127.0.0.1:6379", "gpuq").await?;
//! let mut spec = JobSpec::new("resnet-sweep-1", "vision", vec!["python".into(), "train.py".into()]);
//! spec.priority = Priority::Urgent;
//! let outcome = client.enqueue(spec).await?;
//! println!("enqueued {}", outcome.id());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod admission;
mod backoff;
#[cfg(feature = "cli")]
pub mod cli;
mod client;
mod error;
#[cfg(feature = "cli")]
pub mod http;
mod id;
pub mod preemption;
mod priority;
pub mod queue;
mod record;
pub mod redact;
mod spec;
mod state;
#[cfg(feature = "store")]
pub mod store;
mod worker_info;

pub use backoff::Backoff;
pub use client::{Client, Enqueued};
pub use error::{Error, Result, SpecError};
pub use id::{JobId, WorkerId};
pub use priority::Priority;
pub use record::{listing_order, now_ms, JobEvent, JobRecord, ListCursor, ListFilter};
pub use spec::{
    is_safe_name, parse_batch, JobSpec, Memory, Resources, SecretRef, DEFAULT_TEAM, MAX_ENV_ENTRIES,
    MAX_NAME_CHARS, MAX_SECRET_ENV, MAX_SPEC_BYTES,
};
pub use state::JobState;
pub use worker_info::WorkerInfo;

/// Version of this crate, written into worker heartbeats so operators can spot mixed fleets.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
