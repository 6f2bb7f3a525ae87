//! `scheduler` binary: parse the command line, set up logging, run, map errors to exit codes.

use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = common::cli::parse_args::<scheduler::Cli>();
    // Only `serve` is a daemon; for one-shot commands, progress talk would drown the answer.
    let level = if matches!(cli.command, scheduler::Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    common::cli::init_telemetry(cli.log_format, level);
    let shutdown = CancellationToken::new();
    common::cli::spawn_signal_handler(shutdown.clone());
    match scheduler::run(cli, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
