//! `worker` binary: parse flags, set up logging and Redis, run until signalled.

use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // Each local attempt runs under this same binary as its supervisor (see supervise.rs).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == worker::supervise::ROLE) {
        worker::supervise::main(args[2..].to_vec());
    }
    run()
}

#[tokio::main]
async fn run() -> ExitCode {
    let config = common::cli::parse_args::<worker::Config>();
    common::cli::init_telemetry(config.log_format, "info");
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let shutdown = CancellationToken::new();
    common::cli::spawn_signal_handler(shutdown.clone());
    // Redis may come up after the worker (pods start in any order): wait for it a while.
    let queue = match config.redis.connect(Duration::from_secs(60)).await {
        Ok(q) => q,
        Err(e) => {
            eprintln!(
                "error: cannot reach Redis at {}: {e}",
                common::queue::mask_url(&config.redis.redis_url)
            );
            return ExitCode::from(if e.is_bad_input() { 2 } else { 1 });
        }
    };
    match worker::run(config, queue, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
