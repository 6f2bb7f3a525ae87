//! The k8s crate's integration tests, one binary: the manifests' promises.

mod hpa_burst;
mod manifests;
mod monitoring;
mod quotas;
mod security;
