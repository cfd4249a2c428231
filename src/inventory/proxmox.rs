//! Proxmox VE: the guests' own config files, `qemu-server/<vmid>.conf` (VMs) and
//! `lxc/<vmid>.conf` (containers) under `/etc/pve`, in the format qemu-server and
//! pve-container write:
//!
//! - `key: value` lines; `#` lines are the description; the current config ends at the
//!   first `[section]` (pending changes and snapshots follow it and are not in force);
//! - `tags:` split on `;`, `,` or white space; `name:` (VM) or `hostname:` (container);
//!   `template: 1` marks a template, which never runs;
//! - `netN:` a property string. Its `rate=` is in MB/s as PVE's `tap_rate_limit` reads
//!   it — binary megabytes (×1024×1024 bytes/s) — one rate for both directions. A VM
//!   NIC without a `bridge` uses QEMU's user networking and has no tap.
//!
//! Host interfaces: a VM's NIC N is `tap<vmid>i<N>`, a container's `veth<vmid>i<N>`.
//! With the firewall on, PVE adds `fwbr<vmid>i<N>`, `fwln<vmid>i<N>` (`…o<N>` on OVS)
//! and `fwpr<vmid>p<N>`, which carry the same packets: they are reported as ignored.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{Instance, Nic, Problem, Reading, Source, SourceError, files_stamp};
use crate::config::{SourceKind, Stop};
use crate::model::ids::{IfName, InstanceId, Tag};
use crate::model::units::Rate;

/// What kind of guest a config file describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    /// `qemu-server/`: a VM, NICs on taps.
    Vm,
    /// `lxc/`: a container, NICs on veths.
    Container,
}

impl GuestKind {
    fn dir(self) -> &'static str {
        match self {
            GuestKind::Vm => "qemu-server",
            GuestKind::Container => "lxc",
        }
    }
    /// PVE's command for the guest kind.
    fn tool(self) -> &'static str {
        match self {
            GuestKind::Vm => "qm",
            GuestKind::Container => "pct",
        }
    }
    fn nic_prefix(self) -> &'static str {
        match self {
            GuestKind::Vm => "tap",
            GuestKind::Container => "veth",
        }
    }
    fn name_key(self) -> &'static str {
        match self {
            GuestKind::Vm => "name",
            GuestKind::Container => "hostname",
        }
    }
}

/// One guest's current config, as far as sluice needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    pub instance: Instance,
    pub template: bool,
    /// The firewall bridge's devices of every NIC (whether or not they exist now).
    pub firewall_devices: Vec<IfName>,
}

/// This node's guests, from pmxcfs's mount (`inventory.proxmox.config_dir`).
pub struct ConfigDir {
    dir: PathBuf,
    include_templates: bool,
}

impl ConfigDir {
    pub fn new(dir: PathBuf, include_templates: bool) -> ConfigDir {
        ConfigDir {
            dir,
            include_templates,
        }
    }
}

impl Source for ConfigDir {
    fn kind(&self) -> SourceKind {
        SourceKind::Proxmox
    }
    fn stamp(&mut self) -> Option<u64> {
        let dirs = [GuestKind::Vm, GuestKind::Container].map(|k| self.dir.join(k.dir()));
        Some(files_stamp(&[&dirs[0], &dirs[1]], "conf"))
    }
    fn read(&mut self) -> Result<Reading, SourceError> {
        // Without its mount (pmxcfs down) every guest would seem gone: that is a
        // failure to read, not an empty host.
        std::fs::read_dir(&self.dir).map_err(|source| SourceError::Io {
            path: self.dir.clone(),
            source,
        })?;
        Ok(read(&self.dir, self.include_templates))
    }
}

/// Read every guest under `config_dir`. Templates are left out unless
/// `include_templates`. A file that cannot be read or parsed is a problem, and only its
/// guest is left out.
pub fn read(config_dir: &Path, include_templates: bool) -> Reading {
    let mut reading = Reading::default();
    for kind in [GuestKind::Vm, GuestKind::Container] {
        let dir = config_dir.join(kind.dir());
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // A host without containers has no lxc/ at all.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                reading
                    .problems
                    .push(Problem::at(&dir, None, format!("cannot list: {e}")));
                continue;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        files.sort();
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    reading
                        .problems
                        .push(Problem::at(&file, None, format!("cannot read: {e}")));
                    continue;
                }
            };
            match parse(kind, &file, &text) {
                Ok(guest) => {
                    reading.ignored.extend(guest.firewall_devices);
                    if include_templates || !guest.template {
                        reading.instances.push(guest.instance);
                    }
                }
                Err(p) => reading.problems.push(p),
            }
        }
    }
    reading
}

/// Parse one guest's config file; its vmid is the file's name (`101.conf`).
pub fn parse(kind: GuestKind, file: &Path, text: &str) -> Result<Guest, Problem> {
    let vmid = file
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| Problem::at(file, None, "the file's name is not <vmid>.conf"))?;
    let id = InstanceId::new(&vmid.to_string())
        .map_err(|e| Problem::at(file, None, format!("vmid {vmid}: {e}")))?;
    let mut name = None;
    let mut tags = BTreeSet::new();
    let mut template = false;
    let mut nics: Vec<(u32, Nic)> = Vec::new();
    let mut firewall_devices = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            // Pending changes and snapshots: not what runs now.
            break;
        }
        let at = |m: String| Problem::at(file, Some(n), m);
        let (key, value) = line
            .split_once(':')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, _)| is_key(k))
            .ok_or_else(|| at(format!("{line:?} is not a `key: value` line")))?;
        match key {
            "tags" => {
                for t in value.split(|c: char| c == ';' || c == ',' || c.is_whitespace()) {
                    if t.is_empty() {
                        continue;
                    }
                    let tag = Tag::new(t).map_err(|e| at(format!("tags: {t:?}: {e}")))?;
                    tags.insert(tag);
                }
            }
            "template" => {
                template = boolean(value).ok_or_else(|| {
                    at(format!(
                        "template: {value:?} is not a boolean (1/0, yes/no, on/off, true/false)"
                    ))
                })?;
            }
            k if k == kind.name_key() => name = Some(value.to_owned()),
            k if let Some(index) = k.strip_prefix("net").and_then(|i| i.parse::<u32>().ok()) => {
                let nic = net_line(kind, value).map_err(|m| at(format!("{key}: {m}")))?;
                for dev in firewall_names(vmid, index) {
                    firewall_devices.extend(IfName::new(&dev).ok());
                }
                let Some(rate) = nic else { continue };
                let interface = format!("{}{vmid}i{index}", kind.nic_prefix());
                let interface = IfName::new(&interface)
                    .map_err(|e| at(format!("{key}: interface {interface}: {e}")))?;
                nics.push((
                    index,
                    Nic {
                        interface,
                        upload: rate,
                        download: rate,
                        port: Default::default(),
                    },
                ));
            }
            _ => {}
        }
    }
    nics.sort_by_key(|(i, _)| *i);
    Ok(Guest {
        instance: Instance {
            id,
            source: SourceKind::Proxmox,
            shaped: nics.iter().any(|(_, n)| n.upload.is_some()),
            name,
            stop: Some(Stop::Once(
                [
                    kind.tool(),
                    "shutdown",
                    &vmid.to_string(),
                    "--timeout",
                    "{timeout}",
                    "--forceStop",
                    "1",
                ]
                .map(str::to_owned)
                .to_vec(),
            )),
            tags,
            interfaces: nics.into_iter().map(|(_, nic)| nic).collect(),
        },
        template,
        firewall_devices,
    })
}

/// A config key as PVE writes them (`net0`, `tags`, `lxc.cgroup2.devices.allow`).
fn is_key(k: &str) -> bool {
    k.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && k.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

/// PVE's `parse_boolean`.
fn boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// A `netN` property string → `None` when the NIC has no host interface (a VM NIC
/// without a bridge), else `Some(rate)`, the rate PVE shapes it to (`None`: unlimited).
fn net_line(kind: GuestKind, value: &str) -> Result<Option<Option<Rate>>, String> {
    let mut bridge = false;
    let mut rate = None;
    for part in value.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!("{part:?} is not key=value"));
        };
        match k {
            "bridge" => bridge = !v.is_empty(),
            "rate" => rate = mib_per_sec(v).map_err(|m| format!("rate={v}: {m}"))?,
            _ => {}
        }
    }
    // A container's veth exists whatever it is plugged into.
    Ok((bridge || kind == GuestKind::Container).then_some(rate))
}

/// PVE's `rate` (MB/s, read as MiB/s) → the rate; 0 means no limit.
fn mib_per_sec(v: &str) -> Result<Option<Rate>, String> {
    let mb: f64 = v
        .parse()
        .map_err(|_| "not a number of megabytes per second".to_owned())?;
    if !mb.is_finite() || mb < 0.0 {
        return Err("must be 0 or more megabytes per second".into());
    }
    // The most a link could carry (1 Pbit/s) keeps the product in range.
    if mb > 1e8 {
        return Err("is more than any link carries".into());
    }
    let bits = (mb * 1024.0 * 1024.0).round() * 8.0;
    Ok((bits > 0.0).then(|| Rate::from_bits_per_sec(bits as u64)))
}

/// The firewall bridge's devices PVE makes for NIC `index` of guest `vmid`.
fn firewall_names(vmid: u32, index: u32) -> [String; 4] {
    [
        format!("fwbr{vmid}i{index}"),
        format!("fwln{vmid}i{index}"),
        format!("fwln{vmid}o{index}"),
        format!("fwpr{vmid}p{index}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(kind: GuestKind, file: &str, text: &str) -> Result<Guest, Problem> {
        parse(kind, Path::new(file), text)
    }

    fn rate(s: &str) -> Option<Rate> {
        Some(s.parse().unwrap())
    }

    const VM: &str = "\
#web%20server%20for%20acme
boot: order=scsi0;net0
cores: 2
memory: 2048
name: web1
net0: virtio=BC:24:11:2A:3B:4C,bridge=vmbr0,firewall=1,rate=12.5
net1: e1000=BC:24:11:2A:3B:4D,bridge=vmbr1,tag=10
net2: virtio=BC:24:11:2A:3B:4E
scsi0: local-lvm:vm-101-disk-0,size=32G
tags: gold;eu-west,metered  backup
vmgenid: 1a2b3c4d-0000-4000-8000-000000000001

[PENDING]
net0: virtio=BC:24:11:2A:3B:4C,bridge=vmbr0,rate=1
tags: pending-only

[before-upgrade]
name: old-name
net3: virtio=BC:24:11:2A:3B:4F,bridge=vmbr0
";

    #[test]
    fn a_vm_is_its_current_config_only() {
        let g = guest(GuestKind::Vm, "/etc/pve/qemu-server/101.conf", VM).unwrap();
        assert_eq!(g.instance.id.as_str(), "101");
        assert_eq!(g.instance.name.as_deref(), Some("web1"));
        let tags: Vec<&str> = g.instance.tags.iter().map(|t| t.as_str()).collect();
        assert_eq!(tags, ["backup", "eu-west", "gold", "metered"]);
        assert!(!g.template);
        // 12.5 MiB/s = 13,107,200 bytes/s = 104,857,600 bit/s, both directions; net2 has
        // no bridge (user networking: no tap); the pending rate and the snapshot's net3
        // are not in force.
        let nics: Vec<(&str, Option<Rate>, Option<Rate>)> = g
            .instance
            .interfaces
            .iter()
            .map(|n| (n.interface.as_str(), n.upload, n.download))
            .collect();
        assert_eq!(
            nics,
            [
                ("tap101i0", rate("104857600bit"), rate("104857600bit")),
                ("tap101i1", None, None),
            ]
        );
        let fw: Vec<&str> = g.firewall_devices.iter().map(|d| d.as_str()).collect();
        assert!(
            fw.contains(&"fwbr101i0") && fw.contains(&"fwpr101p0") && fw.contains(&"fwln101i2")
        );
    }

    #[test]
    fn a_container_names_its_veths_and_hostname() {
        let text = "\
arch: amd64
hostname: db1
net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,rate=0,type=veth
net1: name=eth1,hwaddr=BC:24:11:00:00:02,ip=10.0.0.5/24,rate=0.5,type=veth
ostype: debian
template: yes
";
        let g = guest(GuestKind::Container, "/etc/pve/lxc/230.conf", text).unwrap();
        assert_eq!(g.instance.name.as_deref(), Some("db1"));
        assert!(g.template);
        let nics: Vec<(&str, Option<Rate>)> = g
            .instance
            .interfaces
            .iter()
            .map(|n| (n.interface.as_str(), n.upload))
            .collect();
        // rate=0 is no limit; 0.5 MiB/s = 524,288 bytes/s = 4,194,304 bit/s.
        assert_eq!(
            nics,
            [("veth230i0", None), ("veth230i1", rate("4194304bit"))]
        );
    }

    #[test]
    fn a_bad_line_is_named_with_its_file_and_line() {
        // (kind, file, text, the problem as printed)
        let table = [
            (
                GuestKind::Vm,
                "/p/qemu-server/101.conf",
                "name: a\nnet0 virtio\n",
                "/p/qemu-server/101.conf:2: \"net0 virtio\" is not a `key: value` line",
            ),
            (
                GuestKind::Vm,
                "/p/qemu-server/101.conf",
                "net0: virtio=AA,bridge=vmbr0,rate=fast\n",
                "/p/qemu-server/101.conf:1: net0: rate=fast: not a number of megabytes per second",
            ),
            (
                GuestKind::Vm,
                "/p/qemu-server/101.conf",
                "net0: bridge=vmbr0,rate=-1\n",
                "/p/qemu-server/101.conf:1: net0: rate=-1: must be 0 or more megabytes per second",
            ),
            (
                GuestKind::Vm,
                "/p/qemu-server/101.conf",
                "net0: bridge=vmbr0,rate=inf\n",
                "/p/qemu-server/101.conf:1: net0: rate=inf: must be 0 or more megabytes per second",
            ),
            (
                GuestKind::Vm,
                "/p/qemu-server/101.conf",
                "net0: virtio,bridge=vmbr0\n",
                "/p/qemu-server/101.conf:1: net0: \"virtio\" is not key=value",
            ),
            (
                GuestKind::Container,
                "/p/lxc/102.conf",
                "template: maybe\n",
                "/p/lxc/102.conf:1: template: \"maybe\" is not a boolean (1/0, yes/no, on/off, true/false)",
            ),
            (
                GuestKind::Container,
                "/p/lxc/notes.conf",
                "hostname: a\n",
                "/p/lxc/notes.conf: the file's name is not <vmid>.conf",
            ),
            (
                GuestKind::Container,
                "/p/lxc/1234567890.conf",
                "hostname: a\n",
                "/p/lxc/1234567890.conf: the file's name is not <vmid>.conf",
            ),
        ];
        for (kind, file, text, want) in table {
            let p = guest(kind, file, text).unwrap_err();
            assert_eq!(p.to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn a_directory_of_guests_reads_each_file_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("qemu-server")).unwrap();
        std::fs::create_dir_all(dir.path().join("lxc")).unwrap();
        let write = |p: &str, t: &str| std::fs::write(dir.path().join(p), t).unwrap();
        write("qemu-server/101.conf", VM);
        write(
            "qemu-server/102.conf",
            "name: broken\nnet0: bridge=vmbr0,rate=x\n",
        );
        write(
            "qemu-server/9000.conf",
            "name: tmpl\ntemplate: 1\nnet0: virtio=AA:BB,bridge=vmbr0\n",
        );
        write("qemu-server/103.conf.tmp", "name: half-written\n");
        write(
            "lxc/230.conf",
            "hostname: db1\nnet0: name=eth0,bridge=vmbr0,type=veth\n",
        );
        let r = read(dir.path(), false);
        let ids: Vec<&str> = r.instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids,
            ["101", "230"],
            "the broken and the template are left out"
        );
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].line, Some(2));
        assert!(r.problems[0].file.ends_with("qemu-server/102.conf"));
        // The template's firewall devices are still never counted.
        assert!(r.ignored.iter().any(|d| d.as_str() == "fwbr9000i0"));
        let with = read(dir.path(), true);
        assert!(with.instances.iter().any(|i| i.id.as_str() == "9000"));
        // No lxc/ at all is no problem.
        std::fs::remove_dir_all(dir.path().join("lxc")).unwrap();
        assert_eq!(read(dir.path(), false).problems.len(), 1);
    }
}
