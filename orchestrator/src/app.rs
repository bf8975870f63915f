//! The composition root: what every command and the server share — the
//! configuration, the store, the notifier, and the engine and dispatcher
//! built from them ([`Ctx`]) — and [`AppError`], why they cannot be opened.
//! `cli` opens a `Ctx` from its flags; `serve` receives one.

use std::path::{Path, PathBuf};

/// Where to find the configuration, the database and the workflows (the
/// global flags; `None` takes the configuration's value).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub config: Option<PathBuf>,
    pub database_url: Option<String>,
    pub workflows: Option<PathBuf>,
}

/// Why a [`Ctx`] cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `url` is redacted (no password).
    #[error("cannot open database {url}: {error}")]
    Database { url: String, error: crate::store::StoreError },
    #[error("notification templates: {0}")]
    Templates(#[from] lifeboat_notify::TemplateError),
}

/// What every database command needs: config, store, engine options.
#[derive(Clone)]
pub struct Ctx {
    pub config: crate::config::Config,
    /// The file the configuration came from, if any.
    pub config_file: Option<PathBuf>,
    /// Directory that relative paths in the config are resolved against.
    pub base: PathBuf,
    pub database_url: String,
    pub store: std::sync::Arc<dyn crate::store::Store>,
    pub workflows_dir: PathBuf,
    pub known: Option<crate::compile::KnownNames>,
    /// Templates, channels and links for notifications (checked at open).
    pub notifier: std::sync::Arc<crate::exec::notifier::Notifier>,
}

impl Ctx {
    /// `open`, retried for up to a minute while the database refuses
    /// connections; bad configuration still fails at once.
    pub async fn open_patiently(opts: &Options) -> Result<Ctx, AppError> {
        let started = std::time::Instant::now();
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            match Ctx::open(opts).await {
                Ok(ctx) => return Ok(ctx),
                Err(e)
                    if started.elapsed() < std::time::Duration::from_secs(60)
                        && matches!(&e, AppError::Database { error, .. } if error.is_unreachable()) =>
                {
                    eprintln!("lifeboat serve: database not reachable yet ({e}); retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn open(opts: &Options) -> Result<Ctx, AppError> {
        let Loaded { config, base, from_file, file: config_file } =
            load_config(opts.config.as_deref())?;
        let known = from_file.then(|| config.known_names(&base));
        let database_url = opts.database_url.clone().unwrap_or_else(|| config.database_url.clone());
        let workflows_dir =
            opts.workflows.clone().unwrap_or_else(|| base.join(&config.workflows_dir));
        let store = crate::store::open(&database_url)
            .await
            .map_err(|error| AppError::Database { url: redact_url(&database_url), error })?;
        let notifier = crate::exec::notifier::Notifier::from_config(&config, &base)?;
        Ok(Ctx {
            notifier: std::sync::Arc::new(notifier),
            config,
            config_file,
            base,
            database_url,
            store,
            workflows_dir,
            known,
        })
    }

    pub fn engine(&self) -> std::sync::Arc<crate::exec::engine::Engine> {
        let exec = &self.config.executor;
        let connections = self
            .config
            .connections
            .iter()
            .filter_map(|(name, c)| std::env::var(&c.url_env).ok().map(|url| (name.clone(), url)))
            .collect();
        crate::exec::engine::Engine::new(
            self.store.clone(),
            crate::exec::engine::EngineOptions {
                lease: exec.lease.0,
                heartbeat: exec.heartbeat.0,
                poll: exec.poll.0,
                max_runs: exec.max_runs.get(),
                connections,
                workflows_dir: self.workflows_dir.clone(),
                known: self.known.clone(),
                people: std::sync::Arc::new(crate::exec::people::Directory::from_config(
                    &self.config,
                )),
                notifier: self.notifier.clone(),
                http: lifeboat_steps::http::HttpClient::new(lifeboat_steps::http::Policy::new(
                    &self.config.http,
                )),
                ..Default::default()
            },
        )
    }

    /// The notification dispatcher, as this engine's worker.
    pub fn dispatcher(
        &self,
        engine: &crate::exec::engine::Engine,
    ) -> crate::exec::dispatcher::Dispatcher {
        crate::exec::dispatcher::Dispatcher::new(
            self.store.clone(),
            engine.opts.worker_id.clone(),
            self.config.channels.clone(),
        )
    }

    /// Who is acting, for the audit trail.
    pub fn actor(&self) -> String {
        std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "cli".into())
    }
}

/// The configuration (defaults, then `lifeboat.toml` if any, then env) and
/// the directory relative paths in it are resolved against. `from_file`
/// tells whether a file was read: only then are names checked against it.
pub struct Loaded {
    pub config: crate::config::Config,
    pub base: PathBuf,
    pub from_file: bool,
    /// The file itself (`from_file`).
    pub file: Option<PathBuf>,
}

pub fn load_config(path: Option<&Path>) -> Result<Loaded, crate::config::ConfigError> {
    let (config, path) = crate::config::Config::load(path)?;
    let base = path.as_ref().and_then(|p| p.parent()).map(|d| d.to_path_buf()).unwrap_or_default();
    Ok(Loaded { config, base, from_file: path.is_some(), file: path })
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
