//! Follows the training container's log into the job's output, line by line.
//!
//! A log is followed once per pod, from the moment its container has started until the
//! container ends (the API server then closes the stream). A pod that replaces a
//! disrupted one gets its own follower. When a Job is adopted after a worker crash, its
//! log is read again from the start, so some lines may appear twice in the job's output.

use super::spec::CONTAINER;
use futures::io::AsyncBufReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::Api;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The log followers of one attempt.
pub(crate) struct Followers {
    pods: Api<Pod>,
    output: mpsc::Sender<String>,
    started: HashSet<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl Followers {
    pub(crate) fn new(pods: Api<Pod>, output: mpsc::Sender<String>) -> Self {
        Followers {
            pods,
            output,
            started: HashSet::new(),
            tasks: Vec::new(),
        }
    }

    /// Starts following `pod`'s log unless that is already done.
    pub(crate) fn follow(&mut self, pod: &str) {
        if self.started.insert(pod.to_string()) {
            let task = follow(self.pods.clone(), pod.to_string(), self.output.clone());
            self.tasks.push(tokio::spawn(task));
        }
    }

    /// Lets the logs of ended containers arrive in full, within `grace`; then stops.
    pub(crate) async fn drain(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!("the pod log did not end in time; the rest of it is not shipped");
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Stops following at once.
    pub(crate) async fn stop(self) {
        stop(self.tasks).await;
    }
}

/// Aborts the tasks and waits for them, so their clones of the output sender are dropped
/// before the launcher returns (the output sink ends when the last sender is gone).
async fn stop(tasks: Vec<JoinHandle<()>>) {
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn follow(pods: Api<Pod>, pod: String, output: mpsc::Sender<String>) {
    let params = LogParams {
        container: Some(CONTAINER.into()),
        follow: true,
        ..LogParams::default()
    };
    let stream = match pods.log_stream(&pod, &params).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(pod, error = %e, "cannot follow the pod's log");
            let _ = output
                .send(format!("gpuq: cannot read the log of pod {pod}: {e}"))
                .await;
            return;
        }
    };
    let mut stream = std::pin::pin!(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match stream.read_until(b'\n', &mut buf).await {
            Ok(0) => return,
            Ok(_) => {
                // Training output is not always UTF-8 (progress bars, raw bytes).
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                if output.send(line).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(pod, error = %e, "the pod's log stream broke off");
                return;
            }
        }
    }
}
