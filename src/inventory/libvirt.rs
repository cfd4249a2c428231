//! libvirt: the running qemu domains, from the status XML libvirtd keeps of each one
//! (`/run/libvirt/qemu/<name>.xml`: a `<domstatus>` around the live `<domain>`).
//!
//! Why the status files and not the C API: reading them needs no libvirt library
//! linked into the agent (the package installs on hosts without libvirt), no
//! connection that can hang a refresh, and no polling of libvirtd — the directory is
//! on tmpfs, its files appear when a domain starts and go when it stops, and a stamp of
//! it is cheap enough to take every second. What is read is the live definition, after
//! libvirt chose the taps' names (`vnetN`), which the persistent XML does not hold.
//!
//! From each domain:
//! - its `<uuid>` is the instance id (Nova makes it the OpenStack instance's uuid),
//!   `<name>` its name;
//! - each `<interface>`'s `<target dev=…/>` is a host interface;
//! - `<metadata>` may hold `<sluice:instance xmlns:sluice="https://sluice.invalid/1"
//!   tags="gold,eu" base_rate="200mbit" download_rate="100mbit"/>`: tags and the plan;
//! - without a plan there, an interface's `<bandwidth>` is: `outbound` (from the guest)
//!   is the upload limit, `inbound` the download limit, their `average` in kilobytes
//!   per second as libvirt hands it to tc (`kbps`: 1000 bytes/s).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{Instance, Nic, Problem, Reading, Source, SourceError, files_stamp};
use crate::config::{LibvirtSource, SourceKind, Stop};
use crate::model::ids::{IfName, InstanceId, Tag};
use crate::model::units::Rate;

/// The namespace of sluice's element in a domain's `<metadata>`.
pub const METADATA_NS: &str = "https://sluice.invalid/1";

pub struct StatusDir {
    config: LibvirtSource,
}

impl StatusDir {
    pub fn new(config: LibvirtSource) -> StatusDir {
        StatusDir { config }
    }
}

impl Source for StatusDir {
    fn kind(&self) -> SourceKind {
        SourceKind::Libvirt
    }
    fn stamp(&mut self) -> Option<u64> {
        Some(files_stamp(&[&self.config.status_dir], "xml"))
    }
    fn read(&mut self) -> Result<Reading, SourceError> {
        let mut reading = read(&self.config.status_dir)?;
        for i in &mut reading.instances {
            i.stop = Some(stop(&self.config, &i.id));
        }
        Ok(reading)
    }
}

/// `virsh shutdown` asks the guest (ACPI) and returns at once; `destroy` pulls the plug.
/// By uuid, which a rename does not change.
fn stop(config: &LibvirtSource, id: &InstanceId) -> Stop {
    let virsh = |verb: &str| {
        let mut argv = vec![config.virsh.display().to_string()];
        if let Some(uri) = &config.uri {
            argv.extend(["--connect".to_owned(), uri.clone()]);
        }
        argv.extend([verb.to_owned(), id.to_string()]);
        argv
    };
    Stop::AskThenForce {
        ask: virsh("shutdown"),
        state: virsh("domstate"),
        stopped: "shut off".to_owned(),
        force: virsh("destroy"),
    }
}

/// Every running domain under `dir`. A file that cannot be parsed is a problem and only
/// its domain is left out. A missing directory is a failure (libvirtd makes it at start,
/// so without it nothing can be known), not a host without domains.
pub fn read(dir: &Path) -> Result<Reading, SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SourceError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    let mut reading = Reading::default();
    for file in files {
        let parsed = std::fs::read_to_string(&file)
            .map_err(|e| Problem::at(&file, None, format!("cannot read: {e}")))
            .and_then(|text| parse(&file, &text));
        match parsed {
            Ok(instance) => reading.instances.push(instance),
            // Gone between the listing and the read: the domain stopped.
            Err(p) if !file.exists() => drop(p),
            Err(p) => reading.problems.push(p),
        }
    }
    Ok(reading)
}

/// One status file (`<domstatus>`), or a plain `<domain>` (`virsh dumpxml`).
pub fn parse(file: &Path, text: &str) -> Result<Instance, Problem> {
    let doc = roxmltree::Document::parse(text).map_err(|e| {
        let pos = e.pos();
        Problem::at(file, Some(pos.row as usize), format!("not XML: {e}"))
    })?;
    let line = |n: roxmltree::Node| Some(doc.text_pos_at(n.range().start).row as usize);
    let root = doc.root_element();
    let domain = match root.tag_name().name() {
        "domain" => root,
        "domstatus" => child(root, "domain")
            .ok_or_else(|| Problem::at(file, line(root), "<domstatus> holds no <domain>"))?,
        other => {
            return Err(Problem::at(
                file,
                line(root),
                format!("<{other}> is neither a <domstatus> nor a <domain>"),
            ));
        }
    };
    let uuid = child(domain, "uuid")
        .and_then(|n| n.text())
        .map(str::trim)
        .ok_or_else(|| Problem::at(file, line(domain), "the <domain> has no <uuid>"))?;
    let id = InstanceId::new(&uuid.to_ascii_lowercase())
        .map_err(|e| Problem::at(file, line(domain), format!("<uuid> {uuid:?}: {e}")))?;
    let name = child(domain, "name")
        .and_then(|n| n.text())
        .map(|s| s.trim().to_owned());

    let mut tags = BTreeSet::new();
    let mut plan: (Option<Rate>, Option<Rate>) = (None, None);
    if let Some(meta) = child(domain, "metadata").and_then(|m| {
        m.children()
            .find(|c| c.is_element() && c.tag_name().namespace() == Some(METADATA_NS))
    }) {
        let at = |m: String| Problem::at(file, line(meta), m);
        if meta.tag_name().name() != "instance" {
            return Err(at(format!(
                "<{}> in sluice's namespace: only <instance> is known",
                meta.tag_name().name()
            )));
        }
        if let Some(list) = meta.attribute("tags") {
            for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                tags.insert(Tag::new(t).map_err(|e| at(format!("tags: {t:?}: {e}")))?);
            }
        }
        let rate = |key: &str| -> Result<Option<Rate>, Problem> {
            meta.attribute(key)
                .map(|v| {
                    v.parse::<Rate>()
                        .map_err(|e| e.to_string())
                        .and_then(Rate::as_limit)
                        .map_err(|e| at(format!("{key}: {v:?}: {e}")))
                })
                .transpose()
        };
        plan = (rate("base_rate")?, rate("download_rate")?);
    }

    let mut interfaces = Vec::new();
    let mut shaped = false;
    for nic in child(domain, "devices")
        .into_iter()
        .flat_map(|d| d.children())
        .filter(|n| n.has_tag_name("interface"))
    {
        // A user-mode or hostdev NIC has no host-side device.
        let Some(dev) = child(nic, "target").and_then(|t| t.attribute("dev")) else {
            continue;
        };
        let interface = IfName::new(dev)
            .map_err(|e| Problem::at(file, line(nic), format!("<target dev={dev:?}>: {e}")))?;
        let bandwidth = |dir: &str| -> Result<Option<Rate>, Problem> {
            let Some(n) = child(nic, "bandwidth").and_then(|b| child(b, dir)) else {
                return Ok(None);
            };
            let Some(avg) = n.attribute("average") else {
                return Ok(None);
            };
            let kbytes: u64 = avg.trim().parse().map_err(|_| {
                Problem::at(
                    file,
                    line(n),
                    format!("<{dir} average={avg:?}>: not a whole number of kilobytes/s"),
                )
            })?;
            // 0 means "no limit" to libvirt.
            Ok((kbytes > 0).then(|| Rate::from_bits_per_sec(kbytes.saturating_mul(8000))))
        };
        let (out, inb) = (bandwidth("outbound")?, bandwidth("inbound")?);
        shaped |= out.is_some() || inb.is_some();
        interfaces.push(Nic {
            interface,
            upload: plan.0.or(out),
            download: plan.1.or(plan.0).or(inb),
            port: Default::default(),
        });
    }
    Ok(Instance {
        id,
        source: SourceKind::Libvirt,
        name,
        stop: None,
        shaped,
        tags,
        interfaces,
    })
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "6f1b0b84-7d47-4a36-9a1b-0d6b2b7c1a11";

    fn status(metadata: &str, devices: &str) -> String {
        format!(
            r#"<domstatus state='running' reason='booted' pid='4242'>
  <monitor path='/var/lib/libvirt/qemu/domain-1-web1/monitor.sock' type='unix'/>
  <domain type='qemu' id='1'>
    <name>web1</name>
    <uuid>{}</uuid>
    <metadata>{metadata}</metadata>
    <memory unit='KiB'>65536</memory>
    <devices>
{devices}
    </devices>
  </domain>
</domstatus>"#,
            UUID.to_uppercase()
        )
    }

    const BRIDGED: &str = "<interface type='bridge'><mac address='52:54:00:12:34:56'/>\
        <source bridge='br0'/><bandwidth><inbound average='1000'/><outbound average='250' peak='500'/></bandwidth>\
        <target dev='vnet3'/><model type='virtio'/><alias name='net0'/></interface>";

    fn nics(i: &Instance) -> Vec<(String, Option<String>, Option<String>)> {
        i.interfaces
            .iter()
            .map(|n| {
                (
                    n.interface.to_string(),
                    n.upload.map(|r| r.to_string()),
                    n.download.map(|r| r.to_string()),
                )
            })
            .collect()
    }

    #[test]
    fn a_running_domain_is_its_uuid_name_taps_and_bandwidth() {
        let i = parse(Path::new("web1.xml"), &status("", BRIDGED)).unwrap();
        assert_eq!(i.id.as_str(), UUID, "the uuid, lower case");
        assert_eq!(i.name.as_deref(), Some("web1"));
        // 250 kB/s = 2 Mbit/s up (outbound: from the guest), 1000 kB/s = 8 Mbit/s down.
        assert_eq!(
            nics(&i),
            [("vnet3".into(), Some("2mbit".into()), Some("8mbit".into()))]
        );
    }

    #[test]
    fn sluice_metadata_sets_tags_and_the_plan_over_bandwidth() {
        let meta = r#"<s:instance xmlns:s="https://sluice.invalid/1" tags="gold, eu" base_rate="200mbit"/>
            <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"/>"#;
        let i = parse(Path::new("web1.xml"), &status(meta, BRIDGED)).unwrap();
        let tags: Vec<&str> = i.tags.iter().map(Tag::as_str).collect();
        assert_eq!(tags, ["eu", "gold"]);
        assert_eq!(
            nics(&i),
            [(
                "vnet3".into(),
                Some("200mbit".into()),
                Some("200mbit".into())
            )]
        );
    }

    #[test]
    fn nics_without_a_host_device_and_domains_without_nics() {
        let user = "<interface type='user'><mac address='52:54:00:00:00:01'/></interface>";
        let i = parse(Path::new("a.xml"), &status("", user)).unwrap();
        assert!(i.interfaces.is_empty());
        let i = parse(Path::new("a.xml"), &status("", "")).unwrap();
        assert!(i.interfaces.is_empty());
    }

    /// Bad input names the file and the line, and says what is wrong.
    #[test]
    fn bad_status_files_are_named_with_their_line() {
        let cases: &[(String, usize, &str)] = &[
            ("<domstatus><domain>".into(), 1, "not XML"),
            ("<domstatus>\n</domstatus>".into(), 1, "holds no <domain>"),
            ("<network/>".into(), 1, "neither a <domstatus>"),
            (
                status(
                    r#"<s:instance xmlns:s="https://sluice.invalid/1" base_rate="fast"/>"#,
                    "",
                ),
                6,
                "base_rate: \"fast\"",
            ),
            (
                status(
                    r#"<s:instance xmlns:s="https://sluice.invalid/1" tags="a b"/>"#,
                    "",
                ),
                6,
                "tags: \"a b\"",
            ),
            (
                status(
                    "",
                    "<interface type='bridge'><bandwidth><outbound average='1.5'/></bandwidth><target dev='vnet0'/></interface>",
                ),
                9,
                "not a whole number",
            ),
            (
                status(
                    "",
                    "<interface type='bridge'><target dev='a/b'/></interface>",
                ),
                9,
                "<target dev=\"a/b\">",
            ),
        ];
        for (text, line, message) in cases {
            let p = parse(Path::new("/run/libvirt/qemu/x.xml"), text).unwrap_err();
            assert_eq!(p.line, Some(*line), "{p}");
            assert!(p.to_string().contains(message), "{p}");
            assert!(p.to_string().starts_with("/run/libvirt/qemu/x.xml:"), "{p}");
        }
        let no_uuid = "<domain><name>x</name></domain>";
        let p = parse(Path::new("x.xml"), no_uuid).unwrap_err();
        assert!(p.message.contains("no <uuid>"), "{p}");
    }

    #[test]
    fn a_directory_reads_each_domain_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web1.xml"), status("", BRIDGED)).unwrap();
        std::fs::write(dir.path().join("bad.xml"), "<domstatus>").unwrap();
        std::fs::write(dir.path().join("web1.pid"), "4242").unwrap();
        let r = read(dir.path()).unwrap();
        assert_eq!(r.instances.len(), 1);
        assert_eq!(r.problems.len(), 1);
        assert!(r.problems[0].file.ends_with("bad.xml"));
        let gone = read(&dir.path().join("missing")).unwrap_err();
        assert!(gone.to_string().contains("missing"), "{gone}");
    }
}
