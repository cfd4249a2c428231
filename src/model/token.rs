//! API tokens: `sluice_<id>_<secret>`, printed once at creation, kept only as a hash.
//!
//! The public `id` finds the row (and names the token in lists and revocations); the
//! secret's SHA-256 is compared in constant time. A secret of 256 random bits needs no
//! slow password hash: nothing about it can be guessed from the stored digest.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::ids::Label;

/// Why a token, its id or its role could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The stored host of an agent token is not a valid name.
    #[error("name: {0}")]
    Host(#[from] crate::model::ids::NameError),
    #[error("making a token: {0}")]
    Random(#[source] getrandom::Error),
}

const PREFIX: &str = "sluice_";

/// What a store token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything the API offers, reports for any host included.
    Admin,
    /// What a control panel needs: read, check, reserve, commit, roll back, set quotas
    /// and usage. Not a report: usage comes from the agents that measured it.
    Panel,
    /// Reads only: the fleet page, stats, quotas and usage.
    Viewer,
    /// Report usage for its own host and read quotas.
    Agent { host: Label },
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Panel => "panel",
            Role::Viewer => "viewer",
            Role::Agent { .. } => "agent",
        }
    }
    pub fn host(&self) -> Option<&Label> {
        match self {
            Role::Admin | Role::Panel | Role::Viewer => None,
            Role::Agent { host } => Some(host),
        }
    }
    /// From the stored (role, host) pair. Only an agent has a host: a stored pair that
    /// gives another role one was not written by this store, and is refused.
    pub fn from_parts(role: &str, host: Option<&str>) -> Result<Role, TokenError> {
        match (role, host) {
            ("admin", None) => Ok(Role::Admin),
            ("panel", None) => Ok(Role::Panel),
            ("viewer", None) => Ok(Role::Viewer),
            ("agent", Some(h)) => Ok(Role::Agent {
                host: Label::new(h)?,
            }),
            _ => Err(TokenError::Invalid {
                field: "role",
                reason: format!(
                    "{role:?} (host {host:?}) is not admin, panel or viewer without a host, or agent with one"
                ),
            }),
        }
    }
}

/// The public half of a token: 8 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenId(String);

impl TokenId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TokenId {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(TokenId(s.to_ascii_lowercase()))
        } else {
            Err(TokenError::Invalid {
                field: "token",
                reason: format!("{s:?} is not a token id (8 hex digits)"),
            })
        }
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A whole token as a client presents it. Not `Debug`/`Display`: it must not be logged.
pub struct Token {
    pub id: TokenId,
    secret: [u8; 32],
}

impl Token {
    /// A new random token.
    pub fn generate() -> Result<Token, TokenError> {
        let mut id = [0u8; 4];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut id)
            .and_then(|()| getrandom::fill(&mut secret))
            .map_err(TokenError::Random)?;
        Ok(Token {
            id: TokenId(hex::encode(id)),
            secret,
        })
    }

    /// Parse what came after `Bearer `; `None` for anything that is not a token's shape.
    pub fn parse(s: &str) -> Option<Token> {
        let rest = s.strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let id = id.parse().ok()?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(secret, &mut bytes).ok()?;
        Some(Token { id, secret: bytes })
    }

    /// The string to hand to the client, once.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}{}_{}", self.id, hex::encode(self.secret))
    }

    /// What is stored.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.secret).into()
    }

    /// Whether this token's secret matches a stored digest, in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        stored.len() == 32 && bool::from(self.digest().ct_eq(stored))
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: TokenId,
    pub role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_only_its_own_secret_matches() {
        let t = Token::generate().unwrap();
        let shown = t.reveal();
        assert!(shown.starts_with("sluice_"), "{shown}");
        assert_eq!(shown.len(), 7 + 8 + 1 + 64);
        let back = Token::parse(&shown).unwrap();
        assert_eq!(back.id, t.id);
        assert!(back.matches(&t.digest()));
        let other = Token::generate().unwrap();
        assert!(!other.matches(&t.digest()));
        assert!(!back.matches(&t.digest()[..31]));
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        for s in [
            "",
            "sluice_",
            "sluice_0123abcd",
            "sluice_0123abcd_00",
            "other_0123abcd_0000000000000000000000000000000000000000000000000000000000000000",
            "sluice_0123abcz_0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(Token::parse(s).is_none(), "{s:?}");
        }
    }
}
