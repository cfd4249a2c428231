//! Validated names: [`IfName`] for kernel interfaces and [`InstanceId`] for the VM or
//! container that owns them.
//!
//! Both reach external commands (`ovs-vsctl set interface NAME …`) and file names, so
//! they are checked once, here, and carried as types afterwards: code that holds an
//! `IfName` never needs to wonder whether it is safe to pass on.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
/// Shared (`Arc<str>`): the same names are cloned into samples, state and verdicts every
/// tick, and a clone must not cost an allocation per interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(Arc<str>);

impl IfName {
    pub fn new(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= IFNAME_MAX
            && !s.starts_with('-')
            && s != "."
            && s != ".."
            && plain_chars(s, b"@");
        if ok {
            Ok(IfName(Arc::from(s)))
        } else {
            Err(NameError::Interface(s.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for IfName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(Arc<str>);

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
