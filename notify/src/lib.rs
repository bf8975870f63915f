//! Notification channels (email, Slack, PagerDuty, webhook) and the
//! templates that render incident messages. Knows nothing of the store.

pub mod channel;
pub mod event;
pub mod templates;

pub use channel::ChannelConfig;
pub use event::Event;
