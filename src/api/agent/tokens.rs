//! Tokens for the agent's HTTP API: the store's token model (`sluice_<id>_<secret>`,
//! printed once, kept as a SHA-256, compared in constant time, revocable), kept in a
//! small JSON file in the agent's data dir instead of a database.
//!
//! The file is rewritten atomically under an advisory lock, so two `sluice token create`
//! never lose each other's token; the agent reads it again whenever its size or mtime
//! changes, so a revocation takes effect on the next request without a reload.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::token::{Token, TokenId};
use crate::sys::write_atomic;

/// The token file's name inside `agent.data_dir`.
pub const TOKENS_FILE: &str = "api-tokens.json";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{path}: not a sluice token file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("token {0}: no such token")]
    NotFound(String),
    #[error("{0:?} is not a token id (8 hex digits)")]
    BadId(String),
    #[error("cannot make a token: {0}")]
    Random(#[source] crate::model::token::TokenError),
}

/// What an agent token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AgentRole {
    /// Read, and act: release a penalty, reset a quota.
    Admin,
    /// Read only: what the API, the dashboard and `/metrics` show. Needed only where the
    /// API listens beyond loopback (on loopback, reads are open).
    Viewer,
}

impl std::fmt::Display for AgentRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            AgentRole::Admin => "admin",
            AgentRole::Viewer => "viewer",
        })
    }
}

/// One token as stored: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredToken {
    pub id: String,
    pub role: AgentRole,
    pub sha256: String,
    pub created: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Timestamp>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    version: u32,
    tokens: Vec<StoredToken>,
}

fn io_err(path: &Path, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> TokenError {
    TokenError::Io {
        path: path.to_owned(),
        source: e.into(),
    }
}

fn read(path: &Path) -> Result<Vec<StoredToken>, TokenError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path, e)),
    };
    let file: TokenFile = serde_json::from_slice(&bytes).map_err(|e| TokenError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if file.version != VERSION {
        return Err(TokenError::Corrupt {
            path: path.to_owned(),
            reason: format!("version {} (this sluice reads {VERSION})", file.version),
        });
    }
    Ok(file.tokens)
}

/// Hold an exclusive advisory lock on `<file>.lock` while changing the file.
fn locked<T>(
    path: &Path,
    change: impl FnOnce(&mut Vec<StoredToken>) -> Result<T, TokenError>,
) -> Result<T, TokenError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let mut lock_name = path.as_os_str().to_owned();
    lock_name.push(".lock");
    let lock_path = PathBuf::from(lock_name);
    let lock: File = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io_err(&lock_path, e))?;
    // Released when `lock` is dropped (std's lock is flock on Linux, like the agent's).
    lock.lock().map_err(|e| io_err(&lock_path, e))?;
    let mut tokens = read(path)?;
    let out = change(&mut tokens)?;
    let file = TokenFile {
        version: VERSION,
        tokens,
    };
    let body = serde_json::to_vec_pretty(&file).map_err(|e| io_err(path, e))?;
    write_atomic(path, 0o600, |f| {
        f.write_all(&body)?;
        f.write_all(b"\n")
    })
    .map_err(|e| io_err(path, e))?;
    Ok(out)
}

/// Make a token for `role`; returns it whole, the only time it is seen.
pub fn create(
    path: &Path,
    role: AgentRole,
    now: Timestamp,
) -> Result<(Token, StoredToken), TokenError> {
    let token = Token::generate().map_err(TokenError::Random)?;
    let stored = StoredToken {
        id: token.id.to_string(),
        role,
        sha256: hex::encode(token.digest()),
        created: now,
        revoked: None,
    };
    let kept = stored.clone();
    locked(path, move |tokens| {
        tokens.push(kept);
        Ok(())
    })?;
    Ok((token, stored))
}

/// Revoke a token by id (kept in the file, marked, so lists show when).
pub fn revoke(path: &Path, id: &str, now: Timestamp) -> Result<StoredToken, TokenError> {
    let id: TokenId = id.parse().map_err(|_| TokenError::BadId(id.to_owned()))?;
    locked(path, |tokens| {
        let t = tokens
            .iter_mut()
            .find(|t| t.id == id.as_str())
            .ok_or_else(|| TokenError::NotFound(id.to_string()))?;
        t.revoked.get_or_insert(now);
        Ok(t.clone())
    })
}

/// Every token, revoked ones too.
pub fn list(path: &Path) -> Result<Vec<StoredToken>, TokenError> {
    read(path)
}

type FileStamp = (u64, SystemTime);

/// The agent's view of the token file, read again when it changes on disk.
pub struct AgentTokens {
    path: PathBuf,
    /// The file's (size, mtime) when last read, and what it held.
    cached: Mutex<(Option<FileStamp>, Vec<StoredToken>)>,
}

impl AgentTokens {
    pub fn new(path: PathBuf) -> AgentTokens {
        AgentTokens {
            path,
            cached: Mutex::new((None, Vec::new())),
        }
    }

    /// The role of `token` if it is live and its secret matches. A file that cannot be
    /// read admits no one (and says why, for the caller's error).
    pub fn role_of(&self, token: &Token) -> Result<Option<AgentRole>, TokenError> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(m) => Some((m.len(), m.modified().map_err(|e| io_err(&self.path, e))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&self.path, e)),
        };
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| io_err(&self.path, "token cache poisoned"))?;
        if cached.0 != stamp || stamp.is_none() {
            cached.1 = read(&self.path)?;
            cached.0 = stamp;
        }
        Ok(cached
            .1
            .iter()
            .find(|t| {
                t.id == token.id.as_str()
                    && t.revoked.is_none()
                    && hex::decode(&t.sha256).is_ok_and(|d| token.matches(&d))
            })
            .map(|t| t.role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_tokens_admit_until_revoked_and_the_file_keeps_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let tokens = AgentTokens::new(path.clone());
        let (a, _) = create(&path, AgentRole::Admin, now).unwrap();
        let (b, _) = create(&path, AgentRole::Viewer, now).unwrap();
        let shown = a.reveal();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&shown[16..]), "secret stored: {text}");
        let admin = Some(AgentRole::Admin);
        let viewer = Some(AgentRole::Viewer);
        assert_eq!(
            tokens.role_of(&Token::parse(&shown).unwrap()).unwrap(),
            admin
        );
        assert_eq!(tokens.role_of(&b).unwrap(), viewer);
        let stranger = Token::generate().unwrap();
        assert_eq!(tokens.role_of(&stranger).unwrap(), None);

        let revoked = revoke(&path, a.id.as_str(), now).unwrap();
        assert_eq!(revoked.revoked, Some(now));
        assert_eq!(
            tokens.role_of(&a).unwrap(),
            None,
            "revocation seen without a reload"
        );
        assert_eq!(tokens.role_of(&b).unwrap(), viewer);
        assert_eq!(list(&path).unwrap().len(), 2);
        assert!(matches!(
            revoke(&path, "0000beef", now),
            Err(TokenError::NotFound(_))
        ));
        assert!(matches!(
            revoke(&path, "nope", now),
            Err(TokenError::BadId(_))
        ));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_corrupt_file_admits_no_one_and_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        std::fs::write(&path, b"{\"version\":1,\"tokens\":[{\"id\":1}]}").unwrap();
        let err = AgentTokens::new(path.clone())
            .role_of(&Token::generate().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("api-tokens.json"), "{err}");
        // Nothing is half-written on a failed change.
        assert!(create(&path, AgentRole::Admin, Timestamp::now()).is_err());
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"id\":1"));
    }
}
