//! Validated names: [`IfName`] for kernel interfaces and [`InstanceId`] for the VM or
//! container that owns them.
//!
//! Both reach external commands (`ovs-vsctl set interface NAME …`) and file names, so
//! they are checked once, here, and carried as types afterwards: code that holds an
//! `IfName` never needs to wonder whether it is safe to pass on.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A map keyed by names or ifindexes that every tick reads once per interface. foldhash
/// (hashbrown's own default hasher) rather than SipHash: the keys come from the kernel and
/// the operator's config, not from remote peers, and at 10,000 interfaces SipHash was a
/// tenth of the tick.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "interface name {0:?} must be 1 to 15 bytes of letters, digits, '.', '-', '_', '@' or ':' (not starting with '-', not '.' or '..')"
    )]
    Interface(String),
    #[error(
        "instance id {0:?} must be 1 to 64 bytes of letters, digits, '.', '-', '_' or ':' (not starting with '-')"
    )]
    Instance(String),
    #[error(
        "{0:?} must be 1 to 64 bytes of letters, digits, '.', '-', '_' or ':' (not starting with '-')"
    )]
    Label(String),
}

fn plain_chars(s: &str, extra: &[u8]) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b) || extra.contains(&b))
}

/// A kernel network interface name, valid for the kernel and harmless in argv.
///
/// Held inline, NUL-padded to the kernel's IFNAMSIZ (16 bytes): every tick looks each
/// sampled name up in the policy's ordered map, the ledger's index and the pattern cache,
/// and clones it into samples, state and verdicts. Inline, a comparison is one 128-bit
/// compare instead of a `memcmp` call, hashing is one word, a clone copies 16 bytes with
/// no allocation or reference count, and no name lives on the heap.
#[derive(Clone, PartialEq, Eq)]
pub struct IfName {
    /// The name's bytes, then NULs (names never contain NUL; the longest leaves one).
    bytes: [u8; IFNAME_MAX + 1],
}

impl IfName {
    fn key(&self) -> u128 {
        // Big-endian: integer order is the bytes' lexicographic order, and NUL padding
        // sorts a name before every longer name it is a prefix of — `str`'s order.
        u128::from_be_bytes(self.bytes)
    }
}

impl Ord for IfName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for IfName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for IfName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.key());
    }
}

impl fmt::Debug for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IfName").field(&self.as_str()).finish()
    }
}

impl IfName {
    pub fn new(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= IFNAME_MAX
            && !s.starts_with('-')
            && s != "."
            && s != ".."
            && plain_chars(s, b"@");
        if ok {
            let mut bytes = [0; IFNAME_MAX + 1];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Ok(IfName { bytes })
        } else {
            Err(NameError::Interface(s.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        let len = self
            .bytes
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(IFNAME_MAX);
        // Built from a checked ASCII `str` only, so this never falls back.
        std::str::from_utf8(&self.bytes[..len]).unwrap_or_default()
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for IfName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for InstanceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IfName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IfName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// The VM or container an interface belongs to (a Proxmox VMID, an LXD container name).
/// Shared (`Arc<str>`, up to 64 bytes): cloned into state and verdicts every tick.
#[derive(Debug, Clone, Eq, PartialOrd, Ord)]
pub struct InstanceId(Arc<str>);

impl std::hash::Hash for InstanceId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // By text, as equality is.
        self.0.hash(state);
    }
}

impl PartialEq for InstanceId {
    fn eq(&self, other: &Self) -> bool {
        // The policy compares each interface's instance with the cached match every tick;
        // those are clones of one `Arc`, so the pointer answers without reading the text.
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl InstanceId {
    pub fn new(s: &str) -> Result<Self, NameError> {
        if !s.is_empty() && s.len() <= 64 && !s.starts_with('-') && plain_chars(s, b"") {
            Ok(InstanceId(Arc::from(s)))
        } else {
            Err(NameError::Instance(s.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for InstanceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        InstanceId::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A short operator-chosen name: a quota rule's name or an instance tag. Rule names are
/// stored in the ledger and sent in events, so they get the same plain alphabet as ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(Arc<str>);

/// The name of a `[[rule]]`.
pub type RuleName = Label;
/// A tag an instance carries (`[instances."ID"] tags`), matched by rules.
pub type Tag = Label;

impl Label {
    pub fn new(s: &str) -> Result<Self, NameError> {
        if !s.is_empty() && s.len() <= 64 && !s.starts_with('-') && plain_chars(s, b"") {
            Ok(Label(Arc::from(s)))
        } else {
            Err(NameError::Label(s.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Label::new(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Label {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_order_and_hash_as_their_text() {
        let names = [
            "a",
            "ab",
            "ab.0",
            "abc",
            "b",
            "eth0@if5",
            "exactly15chars_",
            "exactly15chars",
            "kvm10.0",
            "kvm101.0",
            "kvm2.0",
            "tap101i0",
            "A",
            "Z9",
            "_x",
        ];
        for a in names {
            let na = IfName::new(a).unwrap();
            assert_eq!(na.as_str(), a);
            assert_eq!(na.to_string(), a);
            assert_eq!(format!("{na:?}"), format!("IfName({a:?})"));
            for b in names {
                let nb = IfName::new(b).unwrap();
                assert_eq!(na.cmp(&nb), a.cmp(b), "{a} vs {b}");
                assert_eq!(na == nb, a == b, "{a} == {b}");
            }
        }
        let hash = |n: &IfName| {
            use std::hash::{BuildHasher, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(n)
        };
        // Equal names from different origins (a literal, a state file's JSON, a name cut
        // from a longer one's text) hash equal and collapse to one map key.
        let literal = IfName::new("kvm1.0").unwrap();
        let decoded: IfName = serde_json::from_str("\"kvm1.0\"").unwrap();
        let longer = IfName::new("kvm1.0x").unwrap();
        let cut = IfName::new(&longer.as_str()[..6]).unwrap();
        assert_eq!(hash(&literal), hash(&decoded));
        assert_eq!(hash(&literal), hash(&cut));
        let set: std::collections::HashSet<IfName> = [literal, decoded, cut].into();
        assert_eq!(set.len(), 1);
        assert_ne!(
            hash(&IfName::new("kvm1.0").unwrap()),
            hash(&IfName::new("kvm1.00").unwrap())
        );
    }

    #[test]
    fn instance_ids_equal_by_text_not_by_allocation() {
        let a = InstanceId::new("101").unwrap();
        assert_eq!(a, a.clone());
        assert_eq!(a, InstanceId::new("101").unwrap());
        assert_ne!(a, InstanceId::new("1010").unwrap());
    }

    #[test]
    fn interface_names() {
        for good in [
            "kvm101.0",
            "tap101i0",
            "vnet3",
            "veth-a_b",
            "a",
            "eth0@if5",
            "exactly15chars_",
        ] {
            assert!(IfName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "-rf",
            "has space",
            "a/b",
            "sixteen_chars_xx",
            "x;rm",
            "é",
            "a\nb",
        ] {
            assert!(IfName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn instance_ids() {
        assert!(InstanceId::new("101").is_ok());
        assert!(InstanceId::new("web-01.prod").is_ok());
        for bad in ["", "-1", "a b", "a/b", "a@b", &"x".repeat(65)] {
            assert!(InstanceId::new(bad).is_err(), "{bad:?}");
        }
    }
}
