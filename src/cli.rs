//! The command line: `camsig [serve]` runs the server; `camsig token` prints
//! a token the running server accepts. Both read the same configuration.

use clap::{Parser, Subcommand};
use std::time::Duration;

use crate::auth::Auth;
use crate::config::Settings;
use crate::domain::UserId;

/// Where configuration comes from, under every command's `--help`: the
/// port is a key like any other, and a newcomer looks here first.
const CONFIG_HELP: &str = "\
Configuration, each source over the one before:
  1. defaults: every key, commented, with its default in examples/camsig.toml
     (and docs/contract.md, \"Configuration\")
  2. the TOML file named by CAMSIG_CONFIG, e.g. CAMSIG_CONFIG=camsig.toml
  3. environment variables CAMSIG__SECTION__KEY (lists comma-separated), e.g.
       the port (server.bind):  CAMSIG__SERVER__BIND=0.0.0.0:9000
       the JWT secret:          CAMSIG__AUTH__JWT_SECRET=<32 bytes or more>  (unset: dev mode)
       nodes sharing a Redis:   CAMSIG__REDIS__URL=redis://redis:6379/
       calls across networks:   CAMSIG__ICE__STUN_URLS=stun:stun.l.google.com:19302";

#[derive(Debug, Parser)]
#[command(name = "camsig", version, about = "Camera presence and WebRTC signaling", after_help = CONFIG_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default). With no auth.jwt_secret: dev mode on 127.0.0.1.
    #[command(after_help = CONFIG_HELP)]
    Serve,
    /// Print a token for USER_ID, signed with auth.jwt_secret (or, in dev mode, the dev secret).
    #[command(after_help = CONFIG_HELP)]
    Token {
        /// The user id: the token's `sub`.
        user_id: String,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
        ttl: u64,
        /// A display name (the `name` claim).
        #[arg(long)]
        name: Option<String>,
        /// Mark it an admin token (the `admin` claim).
        #[arg(long)]
        admin: bool,
    },
}

/// A token for `user`, signed as the server configured by `settings` checks it.
pub fn token(settings: &Settings, user: &str, ttl: Duration, name: Option<String>, admin: bool) -> Result<String, String> {
    let user = UserId::parse(user).map_err(|e| format!("user id: {e}"))?;
    let auth = if settings.auth.jwt_secret.is_some() {
        Auth::new(settings)
    } else {
        let path = crate::dev::secret_path(settings);
        let secret = crate::dev::secret(&path).map_err(|e| format!("no auth.jwt_secret, and the dev secret in {} cannot be read: {e}", path.display()))?;
        Auth::from_secret(&secret, true)
    };
    Ok(auth.issue(&user, name, admin, ttl))
}
