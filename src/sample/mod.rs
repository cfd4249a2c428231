//! Where counters come from: the kernel over netlink ([`LinkSampler`]), Open vSwitch's
//! `Interface.statistics` for ports with no kernel netdev ([`ovsdb`]), or a recorded
//! trace ([`trace`]) for `sluice simulate`. All produce the same [`Sample`]s.

pub(crate) mod netlink;
pub mod ovsdb;
pub mod trace;

pub use netlink::{LinkSampler, SampleError};

use crate::model::ids::IfName;

/// One interface's cumulative counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub ifindex: u32,
    pub name: IfName,
    /// Bytes the host received on the interface = the instance's upload.
    pub rx_bytes: u64,
    /// Bytes the host sent on the interface = the instance's download.
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}
