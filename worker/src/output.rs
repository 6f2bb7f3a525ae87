//! Ships a job's output lines to its log in Redis, in batches, and picks the trainer's
//! progress (`{"epoch":k,"epochs":n,...}` lines) out of it.

use common::queue::RedisQueue;
use common::JobId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Lines kept per job in Redis.
const KEEP_LINES: usize = 1000;
/// Lines sent to Redis in one round trip at most.
const BATCH: usize = 200;

/// The task that drains a job's output channel.
pub(crate) struct OutputSink {
    task: JoinHandle<()>,
}

impl OutputSink {
    /// Starts the sink; launchers send lines into the returned sender.
    pub(crate) fn start(queue: RedisQueue, id: JobId) -> (Self, mpsc::Sender<String>) {
        let (tx, rx) = mpsc::channel(1024);
        (
            OutputSink {
                task: tokio::spawn(drain(queue, id, rx)),
            },
            tx,
        )
    }

    /// Waits until every line sent so far is written (all senders must be dropped).
    pub(crate) async fn finish(self) {
        let _ = self.task.await;
    }
}

async fn drain(queue: RedisQueue, id: JobId, mut rx: mpsc::Receiver<String>) {
    let mut lines = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut lines, BATCH).await > 0 {
        let progress = lines.iter().rev().find_map(|l| progress_of(l));
        for line in &lines {
            tracing::debug!(target: "job_output", "{line}");
        }
        if let Err(e) = queue
            .append_log(&id, &lines, progress.as_deref(), KEEP_LINES)
            .await
        {
            // Output is best effort: losing log lines must never fail or stall a job.
            tracing::warn!(error = %e, lines = lines.len(), "could not store job output");
        }
        lines.clear();
    }
}

/// `epoch k/n` from a trainer's JSON progress line.
pub(crate) fn progress_of(line: &str) -> Option<String> {
    if !line.trim_start().starts_with('{') {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let epoch = v.get("epoch")?.as_u64()?;
    let epochs = v.get("epochs")?.as_u64()?;
    Some(format!("epoch {epoch}/{epochs}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_trainer_progress() {
        assert_eq!(
            super::progress_of(r#"{"epoch":3,"epochs":10,"loss":0.2}"#).as_deref(),
            Some("epoch 3/10")
        );
        assert_eq!(super::progress_of("epoch 3"), None);
        assert_eq!(super::progress_of(r#"{"event":"done"}"#), None);
    }
}
