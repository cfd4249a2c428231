//! Statements: what an instance moved in a closed billing month, written once by the store
//! and never changed: volumes, the 95th percentiles, each monthly quota's use, overage and
//! top-ups.
//!
//! Each statement carries the SHA-256 of its canonical JSON and its predecessor's hash
//! (one chain per instance), so a statement edited in the database later, or one taken out
//! of the middle, no longer verifies. The chain cannot stop someone who rewrites every
//! later statement too: the head hash `verify` prints is what to keep elsewhere.
//!
//! Canonical JSON: object keys sorted (by bytes) at every depth, no whitespace, integers
//! as integers; the `hash` member is left out of what is hashed.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::view::{PercentileUse, QuotaUse};

/// The hash a chain's first statement names as its predecessor.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The percentile every statement reports.
pub const BILLED_PERCENTILE: u8 = 95;

/// One instance's closed billing month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub instance: String,
    /// [start, end) of the billing month: from its billing day, in the store's zone.
    pub start: String,
    pub end: String,
    pub reset_day: u8,
    pub upload_bytes: u64,
    pub download_bytes: u64,
    pub total_bytes: u64,
    /// The month's 95th percentiles of 5-minute rates, every host's summed.
    pub percentiles: PercentileUse,
    /// The instance's monthly quotas over that month: limit (with top-ups), used,
    /// overage.
    pub quotas: Vec<QuotaUse>,
    /// When the store wrote it.
    pub written_at: String,
    /// The hash of the instance's previous statement ([`GENESIS`] for its first).
    pub prev_hash: String,
    /// SHA-256 (hex) of this statement's canonical JSON without this member.
    pub hash: String,
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("statement {instance} {start}: not a statement: {reason}")]
    Unreadable {
        instance: String,
        start: String,
        reason: String,
    },
    #[error(
        "statement {instance} {start}: its content hashes to {actual}, but it says {claimed}: edited after it was written"
    )]
    Edited {
        instance: String,
        start: String,
        claimed: String,
        actual: String,
    },
    #[error(
        "statement {instance} {start}: it follows {claimed}, but the statement before it is {actual}: one is missing or was replaced"
    )]
    Broken {
        instance: String,
        start: String,
        claimed: String,
        actual: String,
    },
    #[error("statement {instance} {start}: stored as {stored}, but its content says {said}")]
    Misfiled {
        instance: String,
        start: String,
        stored: String,
        said: String,
    },
}

/// `v` as canonical JSON (see the module header).
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The SHA-256 (hex) of `body`'s canonical JSON without its `hash` member.
pub fn hash_of(body: &Value) -> String {
    let mut v = body.clone();
    if let Value::Object(map) = &mut v {
        map.shift_remove("hash");
    }
    hex::encode(Sha256::digest(canonical(&v).as_bytes()))
}

impl Statement {
    /// Seal a statement: set `prev_hash` and compute `hash`.
    pub fn sealed(mut self, prev_hash: &str) -> Statement {
        self.prev_hash = prev_hash.to_owned();
        self.hash = String::new();
        let v = serde_json::to_value(&self).unwrap_or(Value::Null);
        self.hash = hash_of(&v);
        self
    }

    /// The canonical JSON this statement is stored as (its hash included).
    pub fn to_canonical(&self) -> String {
        canonical(&serde_json::to_value(self).unwrap_or(Value::Null))
    }
}

/// One stored statement as `verify` reads it: the columns it is filed under and its
/// body as stored.
#[derive(Debug, Clone)]
pub struct StoredStatement {
    pub instance: String,
    pub start: String,
    pub body: String,
}

/// What a verified chain ends in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub instance: String,
    pub statements: usize,
    pub head: String,
}

/// Check one instance's chain, oldest first: every statement hashes to what it says and
/// names its predecessor's hash.
pub fn verify_chain(chain: &[StoredStatement]) -> Result<Option<ChainHead>, ChainError> {
    let mut prev = GENESIS.to_owned();
    for s in chain {
        let unreadable = |reason: String| ChainError::Unreadable {
            instance: s.instance.clone(),
            start: s.start.clone(),
            reason,
        };
        let body: Value = serde_json::from_str(&s.body).map_err(|e| unreadable(e.to_string()))?;
        let st: Statement =
            serde_json::from_value(body.clone()).map_err(|e| unreadable(e.to_string()))?;
        if (st.instance.as_str(), st.start.as_str()) != (s.instance.as_str(), s.start.as_str()) {
            return Err(ChainError::Misfiled {
                instance: s.instance.clone(),
                start: s.start.clone(),
                stored: format!("{} {}", s.instance, s.start),
                said: format!("{} {}", st.instance, st.start),
            });
        }
        let actual = hash_of(&body);
        if actual != st.hash {
            return Err(ChainError::Edited {
                instance: s.instance.clone(),
                start: s.start.clone(),
                claimed: st.hash,
                actual,
            });
        }
        if st.prev_hash != prev {
            return Err(ChainError::Broken {
                instance: s.instance.clone(),
                start: s.start.clone(),
                claimed: st.prev_hash,
                actual: prev,
            });
        }
        prev = st.hash;
    }
    Ok(chain.first().map(|s| ChainHead {
        instance: s.instance.clone(),
        statements: chain.len(),
        head: prev,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn statement(instance: &str, start: &str, upload: u64) -> Statement {
        Statement {
            instance: instance.into(),
            start: start.into(),
            end: "2026-12-01T00:00:00Z".into(),
            reset_day: 1,
            upload_bytes: upload,
            download_bytes: 5,
            total_bytes: upload + 5,
            percentiles: PercentileUse::none(crate::model::percentile::Percentile::P95),
            quotas: vec![],
            written_at: "2026-12-01T01:00:00Z".into(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn stored(s: &Statement) -> StoredStatement {
        StoredStatement {
            instance: s.instance.clone(),
            start: s.start.clone(),
            body: s.to_canonical(),
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": null, "x": "é\"q"}], "m": true}});
        assert_eq!(
            canonical(&v),
            r#"{"a":{"m":true,"z":[3,{"x":"é\"q","y":null}]},"b":1}"#
        );
    }

    #[test]
    fn the_hash_is_of_the_canonical_json_without_itself() {
        let s = statement("101", "2026-11-01T00:00:00Z", 7).sealed(GENESIS);
        let mut v = serde_json::to_value(&s).unwrap();
        v.as_object_mut().unwrap().shift_remove("hash");
        let want = hex::encode(Sha256::digest(canonical(&v).as_bytes()));
        assert_eq!(s.hash, want);
        assert_eq!(s.hash.len(), 64);
    }

    #[test]
    fn a_chain_verifies_and_every_kind_of_tampering_is_named() {
        let a = statement("101", "2026-10-01T00:00:00Z", 7).sealed(GENESIS);
        let b = statement("101", "2026-11-01T00:00:00Z", 9).sealed(&a.hash);
        let c = statement("101", "2026-12-01T00:00:00Z", 11).sealed(&b.hash);
        let chain = [stored(&a), stored(&b), stored(&c)];
        let head = verify_chain(&chain).unwrap().unwrap();
        assert_eq!((head.statements, head.head.as_str()), (3, c.hash.as_str()));
        assert_eq!(verify_chain(&[]).unwrap(), None);

        // A byte count edited in the database.
        let mut edited = chain.clone();
        edited[1].body = edited[1]
            .body
            .replace("\"upload_bytes\":9", "\"upload_bytes\":1");
        match verify_chain(&edited) {
            Err(ChainError::Edited { start, .. }) => assert_eq!(start, "2026-11-01T00:00:00Z"),
            other => panic!("{other:?}"),
        }
        // The middle one removed.
        match verify_chain(&[stored(&a), stored(&c)]) {
            Err(ChainError::Broken {
                claimed, actual, ..
            }) => {
                assert_eq!((claimed, actual), (b.hash.clone(), a.hash.clone()))
            }
            other => panic!("{other:?}"),
        }
        // Edited and re-hashed, but the next one still names the old hash.
        let forged = statement("101", "2026-11-01T00:00:00Z", 1).sealed(&a.hash);
        match verify_chain(&[stored(&a), stored(&forged), stored(&c)]) {
            Err(ChainError::Broken { start, .. }) => assert_eq!(start, "2026-12-01T00:00:00Z"),
            other => panic!("{other:?}"),
        }
        // Filed under another instance.
        let mut moved = chain.clone();
        moved[0].instance = "102".into();
        assert!(matches!(
            verify_chain(&moved),
            Err(ChainError::Misfiled { .. })
        ));
        // Not JSON, or a field that is not a statement's.
        let mut junk = chain.clone();
        junk[2].body = "{".into();
        assert!(matches!(
            verify_chain(&junk),
            Err(ChainError::Unreadable { .. })
        ));
        let mut extra = chain.clone();
        extra[0].body = extra[0].body.replacen('{', "{\"discount\":1,", 1);
        let e = verify_chain(&extra).unwrap_err().to_string();
        assert!(e.contains("discount"), "{e}");
    }
}
