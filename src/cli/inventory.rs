//! `sluice inventory`: what the config's inventory sources say now — each instance with
//! its source, name, tags, the hypervisor's rates and its interfaces, then the host's
//! interfaces that no source claims. The operator's check that discovery sees what they
//! expect; it reads the sources itself, so it needs no running agent.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::ConfigArg;
use crate::config::{Config, SourceKind};
use crate::inventory::{self, Inventory, Reading};
use crate::model::ids::{IfName, InstanceId};
use crate::sample::LinkSampler;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// An array of {"id","name","source","tags","base_rate","download_rate","interfaces"}
    /// (and "ports" where OVS names the Neutron port);
    /// the interfaces no source claims are one last entry whose id and source are null
    #[arg(long)]
    pub json: bool,
}

/// One line of the listing (`id: None`: the unclaimed interfaces).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Entry {
    pub id: Option<InstanceId>,
    pub name: Option<String>,
    pub source: Option<&'static str>,
    pub tags: Vec<String>,
    pub base_rate: Option<String>,
    pub download_rate: Option<String>,
    pub interfaces: Vec<String>,
    /// The Neutron port and MAC an interface's OVS row names (the `ovs` source's).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, Port>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Port {
    pub iface_id: Option<String>,
    pub attached_mac: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = Config::load(&args.config.config)?;
    let config = loaded.config;
    let mut readings: Vec<Reading> = Vec::new();
    let mut failed = false;
    for mut source in inventory::sources(&config.inventory) {
        match source.read() {
            Ok(r) => {
                for p in &r.problems {
                    eprintln!("{}: left out: {p}", source.kind());
                }
                failed |= !r.problems.is_empty();
                readings.push(r);
            }
            Err(e) => {
                eprintln!("{}: cannot read: {e}", source.kind());
                failed = true;
            }
        }
    }
    let found = Inventory::merge(&readings);
    let links = LinkSampler::open()
        .and_then(|mut s| s.sample())
        .context("cannot list the host's interfaces")?;
    let present: Vec<IfName> = links.into_iter().map(|s| s.name).collect();
    let entries = entries(&found.apply(config), &found, &present);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!("{}", table(&entries));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The listing: the hypervisor sources' instances in source order, then the instances
/// `names` makes of the present interfaces, then the present interfaces nobody claims
/// (loopback and the ignored firewall ports left out).
pub fn entries(config: &Config, found: &Inventory, present: &[IfName]) -> Vec<Entry> {
    let mut out: Vec<Entry> = found
        .instances
        .iter()
        .map(|i| Entry {
            id: Some(i.id.clone()),
            name: i.name.clone(),
            source: Some(i.source.as_str()),
            tags: i.tags.iter().map(ToString::to_string).collect(),
            base_rate: i.upload().map(|r| r.to_string()),
            download_rate: i.download().map(|r| r.to_string()),
            interfaces: i
                .interfaces
                .iter()
                .map(|n| n.interface.to_string())
                .collect(),
            ports: i
                .interfaces
                .iter()
                .filter(|n| n.port != Default::default())
                .map(|n| {
                    let port = Port {
                        iface_id: n.port.iface_id.clone(),
                        attached_mac: n.port.attached_mac.clone(),
                    };
                    (n.interface.to_string(), port)
                })
                .collect(),
        })
        .collect();
    let mut by_names: BTreeMap<InstanceId, BTreeSet<&IfName>> = BTreeMap::new();
    let mut unclaimed = Vec::new();
    for name in present {
        match config.claim_of(name) {
            Some(c) if c.source == SourceKind::Names => {
                by_names.entry(c.instance).or_default().insert(name);
            }
            Some(_) => {}
            None if name.as_str() == "lo" || config.claims.ignored.contains(name) => {}
            None => unclaimed.push(name.to_string()),
        }
    }
    out.extend(by_names.into_iter().map(|(id, names)| Entry {
        id: Some(id),
        name: None,
        source: Some(SourceKind::Names.as_str()),
        tags: Vec::new(),
        base_rate: None,
        download_rate: None,
        interfaces: names.into_iter().map(ToString::to_string).collect(),
        ports: BTreeMap::new(),
    }));
    unclaimed.sort();
    out.push(Entry {
        id: None,
        name: None,
        source: None,
        tags: Vec::new(),
        base_rate: None,
        download_rate: None,
        interfaces: unclaimed,
        ports: BTreeMap::new(),
    });
    out
}

fn table(entries: &[Entry]) -> String {
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let mut rows = vec![[
        "ID".to_owned(),
        "NAME".into(),
        "SOURCE".into(),
        "TAGS".into(),
        "RATE".into(),
        "DOWNLOAD".into(),
        "INTERFACES".into(),
    ]];
    let mut tail = String::new();
    for e in entries {
        let Some(id) = &e.id else {
            tail = match e.interfaces.len() {
                0 => "every interface is claimed\n".to_owned(),
                _ => format!("claimed by no source: {}\n", e.interfaces.join(" ")),
            };
            continue;
        };
        rows.push([
            id.to_string(),
            dash(&e.name),
            e.source.unwrap_or("-").to_owned(),
            if e.tags.is_empty() {
                "-".into()
            } else {
                e.tags.join(",")
            },
            dash(&e.base_rate),
            dash(&e.download_rate),
            if e.interfaces.is_empty() {
                "-".into()
            } else {
                e.interfaces.join(" ")
            },
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&tail);
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn name(s: &str) -> IfName {
        IfName::new(s).unwrap()
    }

    #[test]
    fn the_listing_has_each_source_then_names_then_the_unclaimed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("qemu-server")).unwrap();
        std::fs::write(
            dir.path().join("qemu-server/101.conf"),
            "name: web1\ntags: gold\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,rate=25\n",
        )
        .unwrap();
        let text = format!(
            "[agent]\ninterfaces = ['^veth(?P<instance>\\d+)i\\d+$']\n[penalty]\nbase_rate = '100mbit'\n[inventory]\nsources = ['proxmox', 'names']\nproxmox.config_dir = '{}'\n",
            dir.path().display()
        );
        let config = Config::parse(Path::new("t.toml"), &text).unwrap().config;
        let readings: Vec<Reading> = inventory::sources(&config.inventory)
            .into_iter()
            .map(|mut s| s.read().unwrap())
            .collect();
        let found = Inventory::merge(&readings);
        let config = found.apply(config);
        let present = ["lo", "eth0", "tap101i0", "fwpr101p0", "veth200i0", "vnet0"].map(name);
        let got = serde_json::to_value(entries(&config, &found, &present)).unwrap();
        // rate=25 is 25 MiB/s: 25 × 1024 × 1024 × 8 bit/s.
        let want = serde_json::json!([
            {"id":"101","name":"web1","source":"proxmox","tags":["gold"],
             "base_rate":"209715200bit","download_rate":"209715200bit","interfaces":["tap101i0"]},
            {"id":"200","name":null,"source":"names","tags":[],
             "base_rate":null,"download_rate":null,"interfaces":["veth200i0"]},
            {"id":null,"name":null,"source":null,"tags":[],
             "base_rate":null,"download_rate":null,"interfaces":["eth0","vnet0"]},
        ]);
        assert_eq!(got, want);
        let t = table(&entries(&config, &found, &present));
        assert!(t.starts_with("ID   NAME  SOURCE   TAGS  RATE"), "{t}");
        assert!(t.ends_with("claimed by no source: eth0 vnet0\n"), "{t}");
    }
}
