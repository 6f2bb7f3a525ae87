//! End-to-end and protocol tests against a real Redis (REDIS_URL, default 127.0.0.1:6379).
//! The binaries must be built first: `cargo build --workspace --bins` (scripts/test does it).

mod admission;
mod admission_model;
mod api;
mod browser;
mod chaos;
mod cli;
mod connections;
mod fencing;
mod leases;
mod listing;
mod mcp;
mod observability;
mod preemption;
mod protocol;
mod servers;
mod store;
mod support;
mod ui;
mod workers;
