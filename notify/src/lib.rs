//! Notification channels (email, Slack, Teams, PagerDuty, Opsgenie,
//! webhook, file) and the
//! templates that render incident messages. Knows nothing of the store.
//!
//! # How the orchestrator uses this crate
//!
//! 1. At start: [`Templates::load`]`(templates_dir)` (compiles and checks
//!    every template; errors name file:line:column), and for each
//!    `[channels.<name>]` [`build`]`(name, &config, &|k| std::env::var(k).ok())`
//!    (a missing env var is a [`ConfigError`] naming channel and variable).
//! 2. When a run event fires: fill a [`Context`] (shape in [`context`]),
//!    render it with [`Templates::render`] (or [`Templates::render_inline`]
//!    for a notify step's `subject`/`body`), and make a [`Message`] with
//!    [`Message::new`]; set `action` to [`Action::Acknowledge`] /
//!    [`Action::Resolve`] where a human acked or the incident ended, and
//!    `idempotency_key` to the outbox key when one event can repeat. Store
//!    the message (it is `Serialize`/`Deserialize`) in the outbox.
//! 3. The dispatcher calls [`Channel::send`], one attempt per call:
//!    `Ok(`[`Delivered`]`)` is recorded with its `detail`;
//!    [`SendError::Retryable`] is retried later, no sooner than its
//!    `retry_after`; [`SendError::Permanent`] is recorded as failed.
//!    Each attempt times out after [`channel::TIMEOUT`] (10 s).
//!
//! Inbound hooks and signed links verify `X-Lifeboat-Signature` with
//! [`signature::verify`]; outbound webhooks sign with [`signature::sign`].
//!
//! # Channels
//!
//! - [`email`]: SMTP via lettre, text + HTML alternative, to `to`.
//! - [`slack`]: incoming webhook, Block Kit (header, fields, text, button).
//! - [`pagerduty`]: Events API v2, `dedup_key` = run id (one incident per
//!   run), severity P0..P3 → critical/error/warning/info.
//! - [`teams`]: Microsoft Teams incoming webhook, a message with one
//!   Adaptive Card (heading, facts, text, a button to the run).
//! - [`opsgenie`]: Alert API, one alert per run (`alias` = the run id),
//!   created, acknowledged and closed with the run; severity P0..P3 →
//!   priority P1..P4.
//! - [`webhook`]: the [`Message`] as JSON, `Idempotency-Key` =
//!   `msg.idempotency_key`, signed when `hmac_secret_env` is set.
//! - [`file`]: each message as one `.json` or `.eml` file in a directory,
//!   written atomically under a name that sorts by time.
//!
//! # Drills
//!
//! A [`Context`] whose `run.mode` is [`Mode::Drill`] makes a drill message:
//! [`Message::new`] marks it (`drill: true`, subject and summary prefixed
//! `[DRILL] `, PagerDuty `dedup_key` = `drill-<run id>`), and every channel
//! sends [`Message::marked`], so no template can leave the marks out. Slack
//! and the webhook add `"drill": true` to their JSON, PagerDuty
//! `custom_details.drill`, Opsgenie `details.drill` and a `drill` tag (its
//! alias is `drill-<run id>`), Teams a warning line and a `Mode` fact.
//!
//! HTTP 2xx is delivered; 408, 429 and 5xx, connection errors and timeouts
//! are retryable (`Retry-After` seconds or HTTP-date honoured); other
//! statuses are permanent. SMTP 4xx and connection errors are retryable,
//! SMTP 5xx permanent.

pub mod channel;
pub mod channels;
pub mod context;
pub mod email;
pub mod event;
pub mod file;
mod http;
pub mod incident;
pub mod message;
pub mod opsgenie;
pub mod pagerduty;
pub mod signature;
pub mod slack;
pub mod teams;
pub mod templates;
pub mod webhook;

pub use channel::{Channel, ConfigError};
pub use channels::{ChannelConfig, build};
pub use context::{Context, Mode};
pub use event::Event;
pub use incident::{Action, Severity};
pub use message::{Delivered, Message, SendError};
pub use templates::{Rendered, TemplateError, Templates};
