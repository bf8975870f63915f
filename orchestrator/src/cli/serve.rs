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
    eprintln!(
        "lifeboat serve: worker {} on {}",
        engine.opts.worker_id,
        redact_url(&ctx.database_url)
    );
    engine.work(shutdown, None).await?;
    eprintln!("lifeboat serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// A database URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            super::redact_url("postgres://lb:s3cret@127.0.0.1:5432/db"),
            "postgres://lb:***@127.0.0.1:5432/db"
        );
        assert_eq!(super::redact_url("sqlite://lifeboat.db"), "sqlite://lifeboat.db");
    }
}
