//! Enqueue a training job from another Rust service and follow it.
//!
//! ```sh
//! cargo run -p common --example enqueue            # uses REDIS_URL or 127.0.0.1:6379
//! ```
//! Start a worker (`cargo run -p worker`) to see the job run.

use common::{Client, JobSpec, Priority, Resources};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = Client::connect(&url, "gpuq").await?;

    let mut spec = JobSpec::new(
        "example-finetune",
        "search",
        vec!["echo".into(), "training...".into()],
    );
    spec.priority = Priority::Urgent;
    spec.model_type = "bert-base".into();
    spec.epochs = 3;
    spec.resources = Resources {
        gpus: 1,
        gpu_type: Some("a100".into()),
        ..Resources::default()
    };

    let enqueued = client.enqueue(spec).await?;
    let job = client.get(enqueued.id()).await?;
    println!("job {} is {} at position {:?}", job.id, job.state, job.position);

    let status = client.queue_status().await?;
    for p in &status.priorities {
        println!("{}: {} queued", p.priority, p.depth);
    }
    Ok(())
}
