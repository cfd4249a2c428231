//! Who owns each interface, as the hypervisor says it: the instance's id, name, tags and
//! the rates the hypervisor itself sells it. A name like `vnet0` or `veth1a2b3c4d`
//! carries no instance id, so on most hypervisors only their own records can tell.
//!
//! Each source reads one hypervisor's records into [`Reading`]s. A record the source
//! cannot read is a [`Problem`] naming its file and line, and only that instance is
//! left out: one bad file never hides the rest of the host.

pub mod incus;
pub mod libvirt;
pub mod ovs;
pub mod proxmox;
mod refresh;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Claim, Claims, Config, InventoryConfig, Known, SourceKind, Stop};
use crate::model::ids::{IfName, InstanceId, Tag};
use crate::model::units::Rate;

pub use refresh::{Refresher, SourceStatus};

/// One kind of hypervisor record, read whole. Sources are polled from one thread, never
/// from the tick: a slow or hung hypervisor delays only the next refresh.
pub trait Source: Send {
    fn kind(&self) -> SourceKind;
    /// Something that changes whenever the records do, cheap enough to ask every
    /// second (`None`: the source cannot tell, and is read every `inventory.refresh`).
    fn stamp(&mut self) -> Option<u64>;
    /// Everything the source knows now. `Err` when it could not be asked at all: the
    /// caller keeps the last good reading rather than dropping every instance.
    fn read(&mut self) -> Result<Reading, SourceError>;
}

/// The readers of `inventory.sources` in order (`names` needs none: it is the
/// `agent.interfaces` patterns, which [`Config::claim_of`] applies itself).
pub fn sources(cfg: &InventoryConfig) -> Vec<Box<dyn Source>> {
    cfg.sources
        .iter()
        .filter_map(|kind| -> Option<Box<dyn Source>> {
            match kind {
                SourceKind::Names => None,
                SourceKind::Proxmox => Some(Box::new(proxmox::ConfigDir::new(
                    cfg.proxmox.config_dir.clone(),
                    cfg.proxmox.include_templates,
                ))),
                SourceKind::Libvirt => Some(Box::new(libvirt::StatusDir::new(cfg.libvirt.clone()))),
                SourceKind::Incus => Some(Box::new(incus::IncusApi::new(&cfg.incus))),
                SourceKind::Ovs => Some(Box::new(ovs::ExternalIds::new(cfg.ovs.clone()))),
            }
        })
        .collect()
}

/// Why a source could not be read at all (one bad record is a [`Problem`] instead).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The hypervisor answered, but not with what its API documents.
    #[error("{what}: {message}")]
    Answer { what: String, message: String },
}

/// One instance as a source found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: InstanceId,
    /// Which source found it.
    pub source: SourceKind,
    /// The hypervisor's name for it (`web1`), shown beside the id.
    pub name: Option<String>,
    /// How the hypervisor stops it (`hooks.shutdown = "hypervisor"`).
    pub stop: Option<Stop>,
    /// The hypervisor itself shapes its NICs (PVE's `rate=`, libvirt's `<bandwidth>`),
    /// as opposed to rates only sluice's own metadata names.
    pub shaped: bool,
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
    pub port: PortIds,
}

/// What Nova, Neutron and libvirt record of a port in Open vSwitch (`external_ids`):
/// kept so an operator can tell which Neutron port a tap is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortIds {
    /// The Neutron port's uuid (libvirt's `<interfaceid>`).
    pub iface_id: Option<String>,
    pub attached_mac: Option<String>,
}

/// A record a source could not read: the instance it describes is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based, when the problem is one line's.
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    pub fn at(file: &Path, line: Option<usize>, message: impl Into<String>) -> Problem {
        Problem {
            file: file.to_owned(),
            line,
            message: message.into(),
        }
    }
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

impl Instance {
    /// The hypervisor's upload limit for the instance: its first NIC that has one (the
    /// plan is per instance; NICs with different limits are rare and the first is the
    /// primary).
    pub fn upload(&self) -> Option<Rate> {
        self.interfaces.iter().find_map(|n| n.upload)
    }
    pub fn download(&self) -> Option<Rate> {
        self.interfaces.iter().find_map(|n| n.download)
    }
}

/// Every source's latest reading, merged in source order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    /// In source order, then as each source listed them; one entry per instance id
    /// (a later source's record of the same id adds its tags and NICs only).
    pub instances: Vec<Instance>,
    pub claims: Arc<Claims>,
}

impl Inventory {
    /// Merge readings given in `inventory.sources` order. The first source that claims
    /// an interface owns it; an interface any source ignores is nobody's.
    pub fn merge<'a>(readings: impl IntoIterator<Item = &'a Reading>) -> Inventory {
        let mut claims = Claims::default();
        let mut instances: Vec<Instance> = Vec::new();
        let mut index: std::collections::HashMap<InstanceId, usize> = Default::default();
        for reading in readings {
            claims.ignored.extend(reading.ignored.iter().cloned());
            for found in &reading.instances {
                let nics: Vec<Nic> = found
                    .interfaces
                    .iter()
                    .filter(|n| !claims.interfaces.contains_key(&n.interface))
                    .cloned()
                    .collect();
                for nic in &nics {
                    claims.interfaces.insert(
                        nic.interface.clone(),
                        Claim {
                            instance: found.id.clone(),
                            source: found.source,
                        },
                    );
                }
                match index.get(&found.id).map(|&i| &mut instances[i]) {
                    Some(known) => {
                        known.tags.extend(found.tags.iter().cloned());
                        known.interfaces.extend(nics);
                        // A source that knows only the id (ovs) borrows a later
                        // one's name and way to stop it (libvirt's).
                        if known.name.is_none() {
                            known.name.clone_from(&found.name);
                        }
                        if known.stop.is_none() {
                            known.stop.clone_from(&found.stop);
                        }
                    }
                    None => {
                        claims.instances.insert(
                            found.id.clone(),
                            Known {
                                source: found.source,
                                name: found.name.clone(),
                                stop: found.stop.clone(),
                                shaped: found.shaped,
                            },
                        );
                        index.insert(found.id.clone(), instances.len());
                        instances.push(Instance {
                            interfaces: nics,
                            ..found.clone()
                        });
                    }
                }
            }
        }
        for (id, known) in &mut claims.instances {
            if let Some(&i) = index.get(id) {
                if known.name.is_none() {
                    known.name.clone_from(&instances[i].name);
                }
                if known.stop.is_none() {
                    known.stop.clone_from(&instances[i].stop);
                }
            }
        }
        Inventory {
            instances,
            claims: Arc::new(claims),
        }
    }

    /// `config` seeing what the hypervisors said: their claims decide whose each
    /// interface is, and their tags and rates become each instance's, beneath what the
    /// config's `[instances."ID"]` already sets (drop-ins, merged after this, override
    /// both). Tags add up: a rule may match a hypervisor's tag or an operator's.
    pub fn apply(&self, mut config: Config) -> Config {
        config.claims = self.claims.clone();
        for found in &self.instances {
            let slot = config.instances.entry(found.id.clone()).or_default();
            slot.base_rate = slot.base_rate.or(found.upload());
            slot.download_rate = slot.download_rate.or(found.download());
            slot.tags.extend(found.tags.iter().cloned());
        }
        config
    }
}

/// A fingerprint of the `*.<ext>` files directly in `dirs` (names, sizes, change
/// times): what a file-reading source's [`Source::stamp`] is. Polling this is how a
/// change is seen on Proxmox's pmxcfs, where a change made on another cluster node
/// reaches this node's FUSE mount without an inotify event.
pub fn files_stamp(dirs: &[&Path], ext: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for dir in dirs {
        dir.hash(&mut h);
        let Ok(entries) = std::fs::read_dir(dir) else {
            0u8.hash(&mut h);
            continue;
        };
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == ext))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((e.file_name(), m.len(), m.modified().ok(), ctime(&m)))
            })
            .collect();
        files.sort();
        files.hash(&mut h);
    }
    h.finish()
}

fn ctime(m: &std::fs::Metadata) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (m.ctime(), m.ctime_nsec())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn name(s: &str) -> IfName {
        IfName::new(s).unwrap()
    }

    fn instance(source: SourceKind, id: &str, nics: &[&str], rate: Option<&str>) -> Instance {
        Instance {
            id: InstanceId::new(id).unwrap(),
            source,
            name: Some(format!("{source}-{id}")),
            stop: None,
            shaped: rate.is_some(),
            tags: [Tag::new(source.as_str()).unwrap()].into(),
            interfaces: nics
                .iter()
                .map(|n| Nic {
                    interface: name(n),
                    upload: rate.map(|r| r.parse().unwrap()),
                    download: rate.map(|r| r.parse().unwrap()),
                    port: Default::default(),
                })
                .collect(),
        }
    }

    fn config(sources: &str, instances: &str) -> Config {
        let text = format!(
            "[agent]\ninterfaces = ['^tap(?P<instance>\\d+)i\\d+$']\n[penalty]\nbase_rate = '100mbit'\n[inventory]\nsources = [{sources}]\n{instances}"
        );
        Config::parse(Path::new("t.toml"), &text).unwrap().config
    }

    /// Who owns each interface, by source order: the spec's table.
    #[test]
    fn the_first_source_that_claims_an_interface_owns_it() {
        let pve = Reading {
            instances: vec![instance(
                SourceKind::Proxmox,
                "101",
                &["tap101i0", "vnet7"],
                None,
            )],
            ignored: [name("fwpr101p0")].into(),
            problems: vec![],
        };
        let virt = Reading {
            instances: vec![instance(
                SourceKind::Libvirt,
                "uuid-a",
                &["vnet7", "vnet8"],
                None,
            )],
            ..Reading::default()
        };
        // (inventory.sources, interface, its owner)
        type Owner = Option<(&'static str, SourceKind)>;
        let cases: &[(&str, &str, Owner)] = &[
            (
                "'proxmox', 'libvirt', 'names'",
                "vnet7",
                Some(("101", SourceKind::Proxmox)),
            ),
            (
                "'libvirt', 'proxmox', 'names'",
                "vnet7",
                Some(("uuid-a", SourceKind::Libvirt)),
            ),
            (
                "'proxmox', 'libvirt', 'names'",
                "vnet8",
                Some(("uuid-a", SourceKind::Libvirt)),
            ),
            (
                "'proxmox', 'names'",
                "tap102i0",
                Some(("102", SourceKind::Names)),
            ),
            (
                "'names', 'proxmox'",
                "tap101i0",
                Some(("101", SourceKind::Names)),
            ),
            ("'proxmox'", "tap102i0", None),
            ("'proxmox', 'names'", "fwpr101p0", None),
            ("'names'", "vnet7", None),
        ];
        for (sources, interface, want) in cases {
            let cfg = config(sources, "");
            let order: Vec<&Reading> = cfg
                .inventory
                .sources
                .iter()
                .filter_map(|s| match s {
                    SourceKind::Proxmox => Some(&pve),
                    SourceKind::Libvirt => Some(&virt),
                    _ => None,
                })
                .collect();
            let cfg = Inventory::merge(order).apply(cfg);
            let got = cfg.claim_of(&name(interface));
            let got = got.as_ref().map(|c| (c.instance.as_str(), c.source));
            assert_eq!(got, *want, "sources [{sources}], interface {interface}");
        }
    }

    #[test]
    fn hypervisor_rates_and_tags_sit_beneath_the_operators() {
        let pve = Reading {
            instances: vec![
                instance(SourceKind::Proxmox, "101", &["tap101i0"], Some("200mbit")),
                instance(SourceKind::Proxmox, "102", &["tap102i0"], Some("50mbit")),
            ],
            ..Reading::default()
        };
        let cfg = config(
            "'proxmox'",
            "[instances.'102']\nbase_rate = '80mbit'\ntags = ['gold']\n",
        );
        let cfg = Inventory::merge([&pve]).apply(cfg);
        let id = |s| InstanceId::new(s).unwrap();
        assert_eq!(cfg.base_rate(&id("101")).to_string(), "200mbit");
        assert_eq!(
            cfg.download_rate(&id("101")).unwrap().to_string(),
            "200mbit"
        );
        assert_eq!(
            cfg.base_rate(&id("102")).to_string(),
            "80mbit",
            "the operator's wins"
        );
        assert_eq!(cfg.download_rate(&id("102")).unwrap().to_string(), "50mbit");
        let tags: Vec<&str> = cfg.tags(&id("102")).iter().map(Tag::as_str).collect();
        assert_eq!(tags, ["gold", "proxmox"]);
        assert_eq!(cfg.name_of(&id("101")), Some("proxmox-101"));
        assert_eq!(cfg.base_rate(&id("103")).to_string(), "100mbit");
    }
}
