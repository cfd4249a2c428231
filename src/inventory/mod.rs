//! Who owns each interface, as the hypervisor says it: the instance's id, name, tags and
//! the rates the hypervisor itself sells it. A name like `vnet0` or `veth1a2b3c4d`
//! carries no instance id, so on most hypervisors only their own records can tell.
//!
//! Each source reads one hypervisor's records into [`Reading`]s. A record the source
//! cannot read is a [`Problem`] naming its file and line, and only that instance is
//! left out: one bad file never hides the rest of the host.

pub mod proxmox;

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::model::ids::{IfName, InstanceId, Tag};
use crate::model::units::Rate;

/// One instance as a source found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: InstanceId,
    /// The hypervisor's name for it (`web1`), shown beside the id.
    pub name: Option<String>,
    pub tags: BTreeSet<Tag>,
    pub interfaces: Vec<Nic>,
}

/// One of an instance's host-side interfaces, with the limits the hypervisor applies to
/// it, from the instance's view (upload: instance → world).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub interface: IfName,
    pub upload: Option<Rate>,
    pub download: Option<Rate>,
}

/// A record a source could not read: the instance it describes is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based, when the problem is one line's.
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(n) => write!(f, "{}:{n}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// What one read of a source found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    pub instances: Vec<Instance>,
    /// Interfaces the source knows are not an instance's own and must never be counted
    /// (a firewall bridge's ports carry the same traffic as the tap: counting them too
    /// would bill it twice).
    pub ignored: BTreeSet<IfName>,
    pub problems: Vec<Problem>,
}
