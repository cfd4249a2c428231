//! Enforcement: turning verdicts into kernel state, and proving they took.
//!
//! Each tick the daemon hands the backend every present interface's verdict. The backend
//! diffs that against what the system holds, makes all changes in one batch, reads back,
//! and returns one [`Enforcement`] per interface. An interface is only ever reported as
//! limited when the read-back shows the limit in place.

pub mod hooks;
pub mod link;
pub(crate) mod ovs;
pub mod tc;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use link::{LinkState, LinkSwitch, Switched};
pub use ovs::{KernelProbe, OvsBackend, OvsConfig};
pub use tc::TcBackend;

use crate::config::BackendKind;
use crate::model::ids::IfName;
use crate::policy::Verdict;

/// Whether an interface holds what its verdict asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Enforcement {
    /// Read back and verified: the system holds the verdict.
    Applied,
    /// Written this tick; the kernel has not shown it yet (verified next tick).
    Pending,
    /// The system does not hold the verdict.
    EnforceFailed { reason: String },
    /// `backend = "none"`: decided, not enforced.
    ObserveOnly,
}

impl Enforcement {
    pub fn failed(reason: impl Into<String>) -> Self {
        Enforcement::EnforceFailed {
            reason: reason.into(),
        }
    }
    pub fn label(&self) -> &'static str {
        match self {
            Enforcement::Applied => "applied",
            Enforcement::Pending => "pending",
            Enforcement::EnforceFailed { .. } => "enforce_failed",
            Enforcement::ObserveOnly => "observe",
        }
    }
}

/// One interface's verdict.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub interface: &'a IfName,
    pub verdict: &'a Verdict,
    /// A hypervisor source claimed it: the hypervisor's own shaping on it may be
    /// replaced by sluice's (tc backend).
    pub hypervisor: bool,
}

/// The configured way of enforcing.
pub enum Backend {
    Ovs(OvsBackend),
    Tc(TcBackend),
    /// Observe only.
    None,
}

impl Backend {
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Ovs(_) => BackendKind::Ovs,
            Backend::Tc(_) => BackendKind::Tc,
            Backend::None => BackendKind::None,
        }
    }

    /// Make the system hold `wanted`, verify, and report one status per interface, in the
    /// order of `wanted`.
    pub async fn reconcile(&mut self, wanted: &[Wanted<'_>]) -> Vec<Enforcement> {
        match self {
            Backend::Ovs(ovs) => ovs.reconcile(wanted).await,
            Backend::Tc(tc) => tc.reconcile(wanted),
            Backend::None => vec![Enforcement::ObserveOnly; wanted.len()],
        }
    }

    /// Counters the backend reads for interfaces the kernel has no netdev for (OVS's DPDK
    /// and vhost-user ports); none for other backends.
    pub async fn userspace_samples(&mut self) -> Result<Vec<crate::sample::Sample>, String> {
        match self {
            Backend::Ovs(ovs) => ovs.userspace_samples().await,
            _ => Ok(Vec::new()),
        }
    }

    /// The shaping qdiscs' counters per interface, as of the last reconcile (tc only).
    pub fn shaper_counters(&self) -> Option<&HashMap<IfName, tc::ShaperCounters>> {
        match self {
            Backend::Tc(tc) => Some(tc.counters()),
            _ => None,
        }
    }

    /// Times the tc backend replaced a hypervisor's own shaping (`None`: other backends).
    pub fn hypervisor_replacements(&self) -> Option<u64> {
        match self {
            Backend::Tc(tc) => Some(tc.hypervisor_replacements()),
            _ => None,
        }
    }
}
