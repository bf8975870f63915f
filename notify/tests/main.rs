//! lifeboat-notify integration tests, one binary (see STYLE.md §5).

mod email;
mod http_channels;
mod templates;
mod util;
