pub(crate) async fn run(
    _cli: &crate::Cli,
    _a: &crate::cli::DemoArgs,
    _s: tokio_util::sync::CancellationToken,
) -> crate::CliResult<()> {
    Ok(())
}
