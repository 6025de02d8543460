//! The command line: `camsig` serves; `camsig token <user_id> [--ttl <s>]` prints a token.

use std::time::Duration;

use crate::auth::Auth;
use crate::config::Settings;
use crate::domain::UserId;

pub const USAGE: &str = "usage: camsig            serve (configuration: CAMSIG_CONFIG file, CAMSIG__SECTION__KEY variables)
       camsig token <user_id> [--ttl <seconds>]   print a token signed with auth.jwt_secret";

const DEFAULT_TOKEN_TTL_S: u64 = 3600;

pub enum Cli {
    Serve,
    Token { user: String, ttl: Duration },
}

impl Cli {
    pub fn parse(args: &[String]) -> Result<Cli, String> {
        match args {
            [] => Ok(Cli::Serve),
            [cmd, rest @ ..] if cmd == "token" => {
                let mut user = None;
                let mut ttl = DEFAULT_TOKEN_TTL_S;
                let mut it = rest.iter();
                while let Some(a) = it.next() {
                    match a.as_str() {
                        "--ttl" => {
                            ttl = it.next().and_then(|v| v.parse().ok()).filter(|v| *v > 0).ok_or("--ttl takes a number of seconds")?;
                        }
                        _ if user.is_none() && !a.starts_with('-') => user = Some(a.clone()),
                        _ => return Err(format!("unexpected argument {a:?}")),
                    }
                }
                Ok(Cli::Token { user: user.ok_or("token needs a user id")?, ttl: Duration::from_secs(ttl) })
            }
            [a, ..] => Err(format!("unknown command {a:?}")),
        }
    }
}

/// Prints a token for `user`, signed with the configured secret.
pub fn token(settings: &Settings, user: &str, ttl: Duration) -> Result<String, String> {
    if settings.auth.jwt_secret.is_none() {
        return Err("auth.jwt_secret is not set: a dev-mode server signs with its own random secret; use POST /dev/token".into());
    }
    let user = UserId::parse(user).map_err(|e| e.to_string())?;
    Ok(Auth::new(&settings.auth).issue(&user, None, ttl))
}
