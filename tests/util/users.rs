//! Test users: one place for who exists, their roles and their tokens.

use super::sandbox::Sandbox;

/// `(name, roles)`; each one's token is `<name>-token`, read from
/// `LIFEBOAT_TOKEN_<NAME>`.
pub const USERS: &[(&str, &[&str])] = &[
    ("alice", &["operator"]),
    ("bob", &["approver"]),
    ("carol", &["approver"]),
    ("dave", &["approver"]),
    ("olga", &["operator"]),
    ("vic", &["viewer"]),
    ("root", &["admin"]),
];

/// The token of test user `name` (what `with_users` puts in its variable).
pub fn token(name: &str) -> String {
    format!("{name}-token")
}

/// `[[users]]` entries for `names` (from [`USERS`]).
pub fn users_toml(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            let (_, roles) = USERS.iter().find(|(n, _)| n == name).expect("a known test user");
            user_toml(name, roles)
        })
        .collect()
}

/// One `[[users]]` entry whose token is read from `LIFEBOAT_TOKEN_<NAME>`.
fn user_toml(name: &str, roles: &[&str]) -> String {
    let roles: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[[users]]\nname = \"{name}\"\ntoken_env = \"LIFEBOAT_TOKEN_{}\"\nroles = [{}]\n",
        name.to_uppercase(),
        roles.join(", ")
    )
}

impl Sandbox {
    /// Adds the test users `names` to the configuration, with their tokens.
    pub fn with_users(self, names: &[&str]) -> Sandbox {
        names.iter().fold(self.config(&users_toml(names)), |sb, name| sb.with_token(name))
    }

    /// Adds user `name` with `roles` instead of its roles in [`USERS`]
    /// (e.g. an operator who may also approve), with its token.
    pub fn with_user(self, name: &str, roles: &[&str]) -> Sandbox {
        self.config(&user_toml(name, roles)).with_token(name)
    }

    fn with_token(self, name: &str) -> Sandbox {
        self.env(&format!("LIFEBOAT_TOKEN_{}", name.to_uppercase()), &token(name))
    }
}
