//! `lifeboat serve`: the workers that execute runs, the HTTP API and
//! webhooks (`crate::serve`), and the background tasks (scheduler,
//! notifications, audit anchors), until SIGTERM or Ctrl-C. Then the server
//! stops accepting, event streams end, workers stop claiming and let steps
//! in flight finish or hand them back; the audit head is anchored last.
//! Under systemd it says when it is ready and stopping, and keeps the
//! watchdog (`serve/systemd.rs`).

use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Ctx, input_error};
use crate::audit_anchor::{Checkpointer, Sink};
use crate::serve::{self as server, App};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(ctx: &Ctx, _args: Args) -> anyhow::Result<ExitCode> {
    // Every problem of the configuration at once, before anything starts.
    let ids = server::auth::Identities::from_config(&ctx.config).map_err(|problems| {
        input_error(format!(
            "the configuration cannot be served ({} problem{}):\n  {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  ")
        ))
    })?;
    let anchors = Sink::from_config(&ctx.config.audit, &ctx.base)
        .map_err(|e| input_error(format!("[audit] anchor_file is set but {e}")))?;
    let addr = server::listen_addr(&ctx.config.server.listen)?;
    server::exposure_check(addr, &ctx.config, &ids).map_err(input_error)?;
    let shutdown = CancellationToken::new();
    let listener = match server::bind_now(addr).await {
        Ok(l) => l,
        Err(e) => return Err(input_error(format!("cannot listen on {addr}: {e}"))),
    };
    if !ctx.workflows_dir.is_dir() {
        eprintln!(
            "lifeboat serve: warning: workflows directory {} does not exist; no webhook or schedule will start anything",
            ctx.workflows_dir.display()
        );
    }
    let catalog = {
        let (dir, known) = (ctx.workflows_dir.clone(), ctx.known.clone());
        tokio::task::spawn_blocking(move || crate::catalog::Catalog::load(dir, known)).await?
    };
    let engine = ctx.engine();
    engine.use_catalog(catalog.clone());
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
            server::systemd::stopping();
            shutdown.cancel();
        });
    }
    let app = Arc::new(App::new(ctx.clone(), engine.clone(), catalog, ids, shutdown.clone()));
    eprintln!(
        "lifeboat serve: worker {} on {}; {} workflow{} in {}",
        engine.opts.worker_id,
        crate::app::redact_url(&ctx.database_url),
        app.catalog.snapshot().workflows.len(),
        if app.catalog.snapshot().workflows.len() == 1 { "" } else { "s" },
        ctx.workflows_dir.display()
    );
    for name in ctx.config.retention.unknown_workflows(|w| app.catalog.get(w).is_some()) {
        eprintln!(
            "lifeboat serve: warning: [retention.workflows] {name} names no workflow in {}; its runs (if any) are kept as [retention] runs says",
            ctx.workflows_dir.display()
        );
    }
    let background = server::spawn_background(&app);
    // Checkpoints of the audit head: now, every `anchor_every`, and last
    // after everything else stopped.
    let anchoring = anchors.map(|sink| {
        let by = format!("serve {}", engine.opts.worker_id);
        let checkpointer = Arc::new(Checkpointer::new(ctx.store.clone(), sink, by));
        let every = ctx.config.audit.anchor_every.0.max(std::time::Duration::from_secs(1));
        let task = tokio::spawn(checkpointer.clone().run(every, shutdown.clone()));
        (checkpointer, task)
    });
    let http = {
        let app = app.clone();
        tokio::spawn(async move {
            let listener = match listener {
                Some(l) => l,
                None => match server::bind(addr, &app.shutdown).await? {
                    Some(l) => l,
                    None => return Ok(()),
                },
            };
            let local = listener.local_addr()?;
            eprintln!("lifeboat serve: listening on http://{local}");
            server::systemd::ready(&format!("serving on http://{local}"));
            server::serve_http(app, listener).await
        })
    };
    let watchdog = server::systemd::spawn_watchdog(shutdown.clone());
    engine.work(shutdown.clone(), None).await?;
    shutdown.cancel();
    if let Some(task) = watchdog {
        let _ = task.await;
    }
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("lifeboat serve: HTTP server: {e:#}"),
        Err(e) => eprintln!("lifeboat serve: HTTP server task: {e}"),
    }
    for task in background {
        let _ = task.await;
    }
    if let Some((checkpointer, task)) = anchoring {
        let _ = task.await;
        checkpointer.checkpoint_logged().await;
    }
    eprintln!("lifeboat serve: stopped");
    Ok(ExitCode::SUCCESS)
}
