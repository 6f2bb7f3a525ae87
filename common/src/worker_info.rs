//! What a worker publishes in its heartbeat.

use serde::{Deserialize, Serialize};

/// The heartbeat record of a live worker. It lives in a key with a TTL, so a worker that
/// dies simply disappears from listings when the TTL runs out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's id.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Start time, ms since epoch.
    pub started_at: u64,
    /// Software version.
    pub version: String,
    /// Launcher in use (`local`, `kube`, `noop`).
    pub launcher: String,
    /// Jobs it runs at once.
    pub concurrency: u32,
    /// Jobs it is running now.
    pub jobs: Vec<String>,
    /// True once it has stopped taking new work (shutting down).
    #[serde(default)]
    pub draining: bool,
    /// Where it serves /metrics, /healthz and /readyz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    /// The pools whose jobs it claims; empty for all (a Kubernetes worker by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
    /// The GPU devices it gives to jobs (`--gpus`), as `CUDA_VISIBLE_DEVICES` names them;
    /// their count is what it adds to its first pool's capacity while it lives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// The devices its running attempts hold now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus_busy: Vec<String>,
}

impl WorkerInfo {
    /// The record of a worker process starting now on `host`: this process's pid, this
    /// crate's version, no jobs yet.
    pub fn starting(id: &crate::WorkerId, host: impl Into<String>, launcher: &str, concurrency: u32) -> Self {
        WorkerInfo {
            id: id.to_string(),
            host: host.into(),
            pid: std::process::id(),
            started_at: crate::now_ms(),
            version: crate::VERSION.to_string(),
            launcher: launcher.to_string(),
            concurrency,
            jobs: Vec::new(),
            draining: false,
            metrics_addr: None,
            pools: Vec::new(),
            gpus: Vec::new(),
            gpus_busy: Vec::new(),
        }
    }
}
