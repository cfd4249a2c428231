//! `[inventory]`: which hypervisor records tell sluice who owns each interface, and the
//! claims they made. The claims are data the agent learns at run time, not config the
//! operator writes; they live here because every layer that asks "whose interface is
//! this?" asks the [`Config`](super::Config), and must get one answer.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::raw::RawInventory;
use super::validate::Checker;
use crate::model::ids::{IfName, InstanceId};

pub const DEFAULT_INVENTORY_REFRESH: Duration = Duration::from_secs(60);
pub const DEFAULT_PROXMOX_DIR: &str = "/etc/pve";
/// Where libvirtd keeps the live XML of the qemu domains it runs.
pub const DEFAULT_LIBVIRT_STATUS_DIR: &str = "/run/libvirt/qemu";
pub const DEFAULT_INCUS_SOCKET: &str = "/var/lib/incus/unix.socket";
/// Where Debian's and Red Hat's packages keep the Open vSwitch database.
pub const DEFAULT_OVS_DB_FILE: &str = "/etc/openvswitch/conf.db";

/// A kind of record that can claim interfaces. Closed: each is one adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// `agent.interfaces`: the interface's name carries the id (`tap101i0`).
    Names,
    /// Proxmox VE's guest configs (`qemu-server/`, `lxc/`).
    Proxmox,
    /// libvirt's running qemu domains.
    Libvirt,
    /// Incus's (or LXD's) REST API over its unix socket.
    Incus,
    /// `Interface.external_ids` in Open vSwitch (Nova, Neutron, libvirt write them).
    Ovs,
}

impl SourceKind {
    pub const ALL: [SourceKind; 5] = [
        SourceKind::Names,
        SourceKind::Proxmox,
        SourceKind::Libvirt,
        SourceKind::Incus,
        SourceKind::Ovs,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Names => "names",
            SourceKind::Proxmox => "proxmox",
            SourceKind::Libvirt => "libvirt",
            SourceKind::Incus => "incus",
            SourceKind::Ovs => "ovs",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SourceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = SourceKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown source {s:?} (one of {})", all.join(", "))
            })
    }
}

/// `[inventory]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryConfig {
    /// In order: the first source that claims an interface owns it. Never empty, no
    /// source twice.
    pub sources: Vec<SourceKind>,
    /// A source is read again at least this often, even when nothing said it changed.
    pub refresh: Duration,
    pub proxmox: ProxmoxSource,
    pub libvirt: LibvirtSource,
    pub incus: IncusSource,
    pub ovs: OvsSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxmoxSource {
    /// pmxcfs's mount: `qemu-server/` and `lxc/` (this node's guests) are under it.
    pub config_dir: PathBuf,
    /// Templates never run, so they are skipped unless asked for.
    pub include_templates: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtSource {
    /// `<domstatus>` files of the running domains, one per domain.
    pub status_dir: PathBuf,
    /// `virsh` for `hooks.shutdown = "hypervisor"`.
    pub virsh: PathBuf,
    /// `virsh --connect` (`None`: virsh's default, `qemu:///system` as root).
    pub uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncusSource {
    pub socket: PathBuf,
}

/// The `ovs` source reads `Interface.external_ids` with the backend's `agent.ovs_vsctl`
/// and `agent.ovsdb` (one database, set once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvsSource {
    /// The database's file: it changes only when a row does (vswitchd's statistics are
    /// ephemeral columns, never written), so its size and time are the source's stamp.
    pub db_file: PathBuf,
    pub vsctl: PathBuf,
    pub db: Option<String>,
    pub timeout: Duration,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            sources: vec![SourceKind::Names],
            refresh: DEFAULT_INVENTORY_REFRESH,
            proxmox: ProxmoxSource {
                config_dir: DEFAULT_PROXMOX_DIR.into(),
                include_templates: false,
            },
            libvirt: LibvirtSource {
                status_dir: DEFAULT_LIBVIRT_STATUS_DIR.into(),
                virsh: "virsh".into(),
                uri: None,
            },
            incus: IncusSource {
                socket: DEFAULT_INCUS_SOCKET.into(),
            },
            ovs: OvsSource {
                db_file: DEFAULT_OVS_DB_FILE.into(),
                vsctl: "ovs-vsctl".into(),
                db: None,
                timeout: Duration::from_secs(10),
            },
        }
    }
}

impl InventoryConfig {
    /// Whether a source other than `names` is in use (then a refresh thread runs).
    pub fn reads_hypervisors(&self) -> bool {
        self.sources.iter().any(|s| *s != SourceKind::Names)
    }
}

pub(super) fn check_inventory(c: &mut Checker, raw: RawInventory) -> InventoryConfig {
    let d = InventoryConfig::default();
    let mut sources = Vec::new();
    match raw.sources {
        None => sources = d.sources.clone(),
        Some(list) if list.is_empty() => c.error(
            "inventory.sources",
            "is empty: no interface would ever be counted (the default is [\"names\"])",
        ),
        Some(list) => {
            for (i, s) in list.iter().enumerate() {
                let path = format!("inventory.sources[{}]", i + 1);
                match s.parse::<SourceKind>() {
                    Ok(k) if sources.contains(&k) => {
                        c.error(&path, format!("{k} is listed twice"));
                    }
                    Ok(k) => sources.push(k),
                    Err(e) => c.error(&path, e),
                }
            }
        }
    }
    let refresh = c.duration(
        "inventory.refresh",
        raw.refresh.as_deref(),
        d.refresh,
        Duration::from_secs(1),
    );
    let px = raw.proxmox.unwrap_or_default();
    let lv = raw.libvirt.unwrap_or_default();
    let ic = raw.incus.unwrap_or_default();
    let ov = raw.ovs.unwrap_or_default();
    let mut dir = |path: &str, value: Option<String>, default: PathBuf| -> PathBuf {
        match value {
            None => default,
            Some(v) if v.is_empty() || !v.starts_with('/') => {
                c.error(path, format!("must be an absolute path, got {v:?}"));
                default
            }
            Some(v) => v.into(),
        }
    };
    let config_dir = dir(
        "inventory.proxmox.config_dir",
        px.config_dir,
        d.proxmox.config_dir,
    );
    let status_dir = dir(
        "inventory.libvirt.status_dir",
        lv.status_dir,
        d.libvirt.status_dir,
    );
    let socket = dir("inventory.incus.socket", ic.socket, d.incus.socket);
    let db_file = dir("inventory.ovs.db_file", ov.db_file, d.ovs.db_file.clone());
    let virsh = match lv.virsh {
        Some(v) if v.is_empty() => {
            c.error("inventory.libvirt.virsh", "must not be empty");
            d.libvirt.virsh
        }
        Some(v) => v.into(),
        None => d.libvirt.virsh,
    };
    let uri = match lv.uri {
        Some(u) if u.is_empty() || u.chars().any(char::is_whitespace) => {
            c.error(
                "inventory.libvirt.uri",
                format!("must be a libvirt URI such as \"qemu:///system\", got {u:?}"),
            );
            None
        }
        u => u,
    };
    InventoryConfig {
        sources,
        refresh,
        proxmox: ProxmoxSource {
            config_dir,
            include_templates: px.include_templates.unwrap_or(false),
        },
        libvirt: LibvirtSource {
            status_dir,
            virsh,
            uri,
        },
        incus: IncusSource { socket },
        ovs: OvsSource { db_file, ..d.ovs },
    }
}

/// The interfaces the hypervisor sources claimed, and what they know of each instance.
/// Built by the inventory from its sources' latest readings; empty when only `names` is
/// in use. Shared (`Arc`) so a cache can tell by pointer that it is still current.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// Each interface's owner among the hypervisor sources: the first source in
    /// `inventory.sources` that claimed it.
    pub interfaces: HashMap<IfName, Claim>,
    /// Interfaces a source says are never an instance's own (a firewall bridge's
    /// ports carry the tap's traffic a second time).
    pub ignored: HashSet<IfName>,
    pub instances: HashMap<InstanceId, Known>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub instance: InstanceId,
    pub source: SourceKind,
}

/// What a source said about an instance beyond its rates and tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub source: SourceKind,
    /// The hypervisor's name for it (`web1`).
    pub name: Option<String>,
    /// How `hooks.shutdown = "hypervisor"` stops it (`None`: the source cannot).
    pub stop: Option<Stop>,
    /// The hypervisor limits its NICs itself (PVE's `rate=`, libvirt's `<bandwidth>`).
    pub shaped: bool,
}

/// How a hypervisor stops one of its instances: argv templates, where `{timeout}` is
/// `hooks.timeout` in whole seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// One command that shuts down cleanly and forces it after `{timeout}` itself
    /// (`qm shutdown --timeout T --forceStop 1`).
    Once(Vec<String>),
    /// Ask for a clean shutdown; when `state` does not say `stopped` after
    /// `hooks.timeout` (and has not failed: a transient domain that stopped is gone),
    /// `force` it. A paused or hung guest is not stopped.
    AskThenForce {
        ask: Vec<String>,
        state: Vec<String>,
        stopped: String,
        force: Vec<String>,
    },
    /// Incus's API on `socket`: a clean stop, forced after `hooks.timeout` when the
    /// instance has not stopped by then.
    Incus {
        socket: PathBuf,
        project: String,
        name: String,
    },
}
