//! Dev mode: what a node with no `auth.jwt_secret` does. It listens on
//! 127.0.0.1 unless `server.bind` says otherwise, hands out tokens at
//! `POST /dev/token`, and signs them with a secret kept in
//! `<server.data_dir>/dev-secret`, so a restart does not sign open pages out
//! and `camsig token` signs for the server that runs.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::Settings;

const SECRET_FILE: &str = "dev-secret";

/// Where dev mode keeps its secret: `server.data_dir`, else
/// `$XDG_DATA_HOME/camsig`, else `~/.local/share/camsig`, else `./.camsig`.
pub fn data_dir(settings: &Settings) -> PathBuf {
    if let Some(d) = &settings.server.data_dir {
        return PathBuf::from(d);
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("XDG_DATA_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".local/share")))
        .map(|d| d.join("camsig"))
        .unwrap_or_else(|| PathBuf::from(".camsig"))
}

/// The dev secret's file.
pub fn secret_path(settings: &Settings) -> PathBuf {
    data_dir(settings).join(SECRET_FILE)
}

/// The kept dev secret, made (readable by its owner only) on first use.
pub fn secret(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(s) if s.len() >= 32 => return Ok(s),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let hex: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(hex.as_bytes())?;
    Ok(hex.into_bytes())
}

/// The secret a dev node signs with: the kept one, or a random one (with a
/// warning) where the file cannot be written.
pub fn secret_or_random(settings: &Settings) -> Vec<u8> {
    let path = secret_path(settings);
    match secret(&path) {
        Ok(s) => {
            tracing::warn!(
                secret_file = %path.display(),
                "DEV MODE: auth.jwt_secret is not set. Tokens are signed with the dev secret kept in {} \
                 and POST /dev/token hands them to anyone who can reach this node. Never run like this in production.",
                path.display()
            );
            s
        }
        Err(e) => {
            tracing::warn!(
                "DEV MODE: auth.jwt_secret is not set, and the dev secret cannot be kept in {} ({e}): tokens are \
                 signed with a random secret that a restart forgets. Set server.data_dir to a writable directory.",
                path.display()
            );
            rand::random::<[u8; 32]>().to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("camsig-dev-{}", rand::random::<u32>()));
        let path = dir.join("nested").join(SECRET_FILE);
        let first = secret(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(secret(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
