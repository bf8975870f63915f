//! `lifeboat serve`: the worker loop that executes queued runs, until
//! SIGTERM or Ctrl-C (then in-flight steps are stopped and handed back).

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::Ctx;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(ctx: &Ctx, _args: Args) -> anyhow::Result<ExitCode> {
    let engine = ctx.engine();
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            shutdown.cancel();
        });
    }
    eprintln!("lifeboat serve: worker {} on {}", engine.opts.worker_id, ctx.database_url);
    engine.work(shutdown, None).await?;
    eprintln!("lifeboat serve: stopped");
    Ok(ExitCode::SUCCESS)
}
