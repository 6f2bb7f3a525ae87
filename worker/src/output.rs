//! Ships a job's output lines to its log in Redis, in batches, and picks the trainer's
//! progress (`{"epoch":k,"epochs":n,...}` lines) out of it.

use common::queue::RedisQueue;
use common::JobId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Lines kept per job in Redis.
const KEEP_LINES: usize = 1000;
/// Bytes of one line kept in Redis: with [`KEEP_LINES`], a job's log holds about 4 MiB at
/// most, whatever the job prints (a line is cut at a character boundary, and says so).
const MAX_STORED_LINE: usize = 4 * 1024;
/// Lines sent to Redis in one round trip at most.
const BATCH: usize = 200;

/// The task that drains a job's output channel.
pub(crate) struct OutputSink {
    task: JoinHandle<()>,
}

impl OutputSink {
    /// Starts the sink; launchers send lines into the returned sender.
    /// Lines are masked before anything keeps them: `secrets` (the job's secret env values)
    /// and URL passwords become `***` (see `common::redact`).
    pub(crate) fn start(queue: RedisQueue, id: JobId, secrets: Vec<String>) -> (Self, mpsc::Sender<String>) {
        let (tx, rx) = mpsc::channel(1024);
        (
            OutputSink {
                task: tokio::spawn(drain(queue, id, secrets, rx)),
            },
            tx,
        )
    }

    /// Waits until every line sent so far is written (all senders must be dropped).
    pub(crate) async fn finish(self) {
        let _ = self.task.await;
    }
}

async fn drain(queue: RedisQueue, id: JobId, secrets: Vec<String>, mut rx: mpsc::Receiver<String>) {
    let mut lines = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut lines, BATCH).await > 0 {
        for line in lines.iter_mut() {
            *line = common::redact::mask(line, &secrets);
            fit(line);
        }
        let progress = lines.iter().rev().find_map(|l| progress_of(l));
        if lines.iter().any(|l| is_checkpoint(l)) {
            // What a preemption would lose is counted from here (best effort, as output).
            if let Err(e) = queue.checkpointed(&id).await {
                tracing::warn!(error = %e, "could not record the job's checkpoint");
            }
        }
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

/// Cuts a line to [`MAX_STORED_LINE`] bytes, at a character boundary, marking the cut.
fn fit(line: &mut String) {
    if line.len() <= MAX_STORED_LINE {
        return;
    }
    let mut end = MAX_STORED_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line.truncate(end);
    line.push_str(" [cut at 4 KiB]");
}

/// Whether a line reports a checkpoint: a JSON object with a `checkpoint` field (the
/// bundled trainer's epoch lines carry `"checkpoint": EPOCH` once the epoch is saved).
pub(crate) fn is_checkpoint(line: &str) -> bool {
    line.trim_start().starts_with('{')
        && line.contains("\"checkpoint\"")
        && serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("checkpoint").map(|c| !c.is_null()))
            .unwrap_or(false)
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
    fn stored_lines_are_cut_in_bytes_at_a_character_boundary() {
        let mut short = "ok".to_string();
        super::fit(&mut short);
        assert_eq!(short, "ok");
        let mut long = "é".repeat(3000);
        super::fit(&mut long);
        assert!(long.len() <= super::MAX_STORED_LINE + 20, "{}", long.len());
        assert!(long.ends_with(" [cut at 4 KiB]"));
    }

    #[test]
    fn reads_trainer_progress() {
        assert_eq!(
            super::progress_of(r#"{"epoch":3,"epochs":10,"loss":0.2}"#).as_deref(),
            Some("epoch 3/10")
        );
        assert_eq!(super::progress_of("epoch 3"), None);
        assert_eq!(super::progress_of(r#"{"event":"done"}"#), None);
        assert!(super::is_checkpoint(r#"{"epoch":3,"epochs":10,"checkpoint":3}"#));
        assert!(!super::is_checkpoint(r#"{"epoch":3,"epochs":10}"#));
        assert!(!super::is_checkpoint(r#"{"checkpoint":null}"#));
        assert!(!super::is_checkpoint("saved \"checkpoint\" to disk"));
    }
}
