//! Tests and models for the manifests in this folder.
//!
//! The manifests themselves are YAML (`base/`, `overlays/`, `components/`, `redis/`,
//! `prometheus-adapter/`); `validate.sh` checks them against the Kubernetes schemas. This crate
//! checks what a schema cannot:
//!
//! - [`hpa`] models the Kubernetes HPA controller, configured from `base/hpa.yaml` itself, and
//!   [`sim`] replays a recorded queue-depth [`trace`] through it, so a test can assert the
//!   shape of the worker pool's replica [`curve`] (how fast it grows, when it may shrink);
//! - [`manifest`] loads the YAML, so tests can hold the manifests to the product's facts
//!   (ports, grace periods, least-privilege RBAC) and to each other (the KEDA alternative
//!   scales exactly like the HPA).

#![warn(missing_docs)]

pub mod curve;
mod error;
pub mod hpa;
pub mod manifest;
pub mod sim;
pub mod trace;

pub use error::{Error, Result};

/// Time in whole seconds since the start of a trace. The HPA controller works in seconds
/// (windows and periods are `*Seconds` fields), so nothing finer is needed.
pub type Seconds = u64;
