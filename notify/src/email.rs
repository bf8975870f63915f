//! Email over SMTP (lettre): a multipart message, plain text with an HTML
//! alternative, to the channel's recipients.
//!
//! `smtp_url`: `smtp://host[:port]` is plain text when the host is loopback
//! (`127.0.0.1`, `::1`, `localhost`) and requires STARTTLS otherwise;
//! `?tls=starttls` always requires STARTTLS (default port 587); `?tls=none`
//! forces plain text (only for a trusted relay); `smtps://host[:port]` is
//! implicit TLS (default port 465). Credentials, when configured, come from
//! `username_env`/`password_env` and are never sent over plain text to a
//! non-loopback host.

use std::net::IpAddr;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use reqwest::Url;

use crate::channel::{Channel, ConfigError, TIMEOUT, env_var};
use crate::message::{Delivered, Message, SendError};

pub struct Email {
    name: String,
    /// `host:port`, for what a probe says.
    server: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    Plain,
    StartTls,
    Implicit,
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Host, port and security of an `smtp_url`.
fn parse_smtp_url(channel: &str, smtp_url: &str) -> Result<(String, u16, Security), ConfigError> {
    let bad = |m: String| ConfigError::invalid(channel, format!("smtp_url `{smtp_url}`: {m}"));
    let url = Url::parse(smtp_url).map_err(|e| bad(e.to_string()))?;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("no host".into()))?;
    let host = host.trim_matches(['[', ']']).to_string();
    let mut tls = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "tls" => tls = Some(value.into_owned()),
            other => return Err(bad(format!("unknown parameter `{other}`; only `tls` is known"))),
        }
    }
    let security = match (url.scheme(), tls.as_deref()) {
        ("smtps", None | Some("implicit")) => Security::Implicit,
        ("smtp", Some("starttls")) => Security::StartTls,
        ("smtp", Some("none")) => Security::Plain,
        ("smtp", None) if is_loopback(&host) => Security::Plain,
        ("smtp", None) => Security::StartTls,
        ("smtp" | "smtps", Some(other)) => {
            return Err(bad(format!("tls=`{other}`; expected starttls or none (or use smtps://)")));
        }
        (scheme, _) => return Err(bad(format!("scheme `{scheme}`; expected smtp or smtps"))),
    };
    let port = url.port().unwrap_or(match security {
        Security::Implicit => 465,
        Security::StartTls => 587,
        Security::Plain => 25,
    });
    Ok((host, port, security))
}

impl Email {
    pub fn new(
        name: &str,
        smtp_url: &str,
        from: &str,
        to: &[String],
        username_env: Option<&str>,
        password_env: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Email, ConfigError> {
        let (host, port, security) = parse_smtp_url(name, smtp_url)?;
        let mailbox = |field: &str, s: &str| {
            s.parse::<Mailbox>().map_err(|e| {
                ConfigError::invalid(name, format!("{field} `{s}` is not an address: {e}"))
            })
        };
        let from = mailbox("from", from)?;
        if to.is_empty() {
            return Err(ConfigError::invalid(name, "`to` lists no recipients"));
        }
        let to = to.iter().map(|t| mailbox("to", t)).collect::<Result<Vec<_>, _>>()?;
        let tls_error = |e: lettre::transport::smtp::Error| {
            ConfigError::invalid(name, format!("TLS setup for {host}: {e}"))
        };
        let mut builder = match security {
            Security::Plain => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
            Security::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host).map_err(tls_error)?
            }
            Security::Implicit => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&host).map_err(tls_error)?
            }
        }
        .port(port)
        .timeout(Some(TIMEOUT));
        match (username_env, password_env) {
            (None, None) => {}
            (Some(user_var), Some(pass_var)) => {
                if security == Security::Plain && !is_loopback(&host) {
                    return Err(ConfigError::invalid(
                        name,
                        "refusing to send SMTP credentials in plain text; use smtps:// or tls=starttls",
                    ));
                }
                let user = env_var(env, name, "username_env", user_var)?;
                let pass = env_var(env, name, "password_env", pass_var)?;
                builder = builder.credentials(Credentials::new(user, pass));
            }
            _ => {
                return Err(ConfigError::invalid(
                    name,
                    "set both username_env and password_env, or neither",
                ));
            }
        }
        Ok(Email {
            name: name.to_string(),
            server: format!("{host}:{port}"),
            transport: builder.build(),
            from,
            to,
        })
    }

    /// The email of `msg`; a drill's subject starts with `[DRILL]`.
    fn compose(&self, msg: &Message) -> Result<lettre::Message, SendError> {
        let msg = &msg.marked();
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(msg.subject.clone())
            .date_now();
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let result = match &msg.html {
            Some(html) => {
                builder.multipart(MultiPart::alternative_plain_html(msg.text.clone(), html.clone()))
            }
            None => builder.singlepart(SinglePart::plain(msg.text.clone())),
        };
        result.map_err(|e| SendError::Permanent(format!("cannot build the email: {e}")))
    }
}

#[async_trait]
impl Channel for Email {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "email"
    }

    /// Connects, says EHLO, upgrades to TLS when configured and logs in
    /// with the credentials (lettre does all of it before `NOOP`): a wrong
    /// password fails here, as it would at the first notification.
    async fn probe(&self) -> Result<String, String> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(format!("SMTP {}: connected, EHLO and login accepted", self.server)),
            Ok(false) => Err(format!("SMTP {}: the server did not answer NOOP", self.server)),
            Err(e) => Err(format!("SMTP {}: {e}", self.server)),
        }
    }

    async fn send(&self, msg: &Message) -> Result<Delivered, SendError> {
        let email = self.compose(msg)?;
        let recipients = self.to.iter().map(|m| m.email.to_string()).collect::<Vec<_>>().join(", ");
        match self.transport.send(email).await {
            Ok(response) => Ok(Delivered {
                detail: format!(
                    "to {recipients}: {} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                )
                .trim_end()
                .to_string(),
            }),
            Err(e) if e.is_permanent() || e.is_client() => {
                Err(SendError::Permanent(format!("SMTP to {recipients}: {e}")))
            }
            Err(e) => Err(SendError::retryable(format!("SMTP to {recipients}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<(String, u16, Security), ConfigError> {
        parse_smtp_url("mail", url)
    }

    #[test]
    fn loopback_smtp_is_plain() {
        assert_eq!(
            parse("smtp://127.0.0.1:2525").unwrap(),
            ("127.0.0.1".into(), 2525, Security::Plain)
        );
        assert_eq!(parse("smtp://localhost").unwrap().2, Security::Plain);
    }

    #[test]
    fn remote_smtp_requires_starttls_unless_told_otherwise() {
        assert_eq!(
            parse("smtp://mail.example.com").unwrap(),
            ("mail.example.com".into(), 587, Security::StartTls)
        );
        assert_eq!(parse("smtp://mail.example.com:25?tls=none").unwrap().2, Security::Plain);
        assert_eq!(parse("smtp://127.0.0.1:25?tls=starttls").unwrap().2, Security::StartTls);
    }

    #[test]
    fn smtps_is_implicit_tls_on_465() {
        assert_eq!(
            parse("smtps://mail.example.com").unwrap(),
            ("mail.example.com".into(), 465, Security::Implicit)
        );
    }

    #[test]
    fn unknown_schemes_and_parameters_are_config_errors() {
        assert!(parse("http://mail.example.com").is_err());
        assert!(parse("smtp://mail.example.com?tls=maybe").is_err());
        assert!(parse("smtp://mail.example.com?tsl=none").is_err());
    }

    #[test]
    fn credentials_are_never_sent_in_plain_text_to_remote_hosts() {
        let env = |_: &str| Some("x".to_string());
        let to = ["a@example.com".to_string()];
        let r = Email::new(
            "mail",
            "smtp://mail.example.com?tls=none",
            "l@example.com",
            &to,
            Some("U"),
            Some("P"),
            &env,
        );
        assert!(r.err().unwrap().to_string().contains("plain text"));
    }

    #[test]
    fn bad_recipient_is_a_config_error() {
        let to = ["not an address".to_string()];
        let r =
            Email::new("mail", "smtp://127.0.0.1:2525", "l@example.com", &to, None, None, &|_| {
                None
            });
        assert!(r.err().unwrap().to_string().contains("not an address"));
    }
}
