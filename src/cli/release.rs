//! `sluice release [INTERFACE…]`: remove the limits sluice installed, with the agent
//! stopped (a running agent would put them back on its next tick).
//!
//! With the tc backend it deletes exactly what sluice created — its HTB roots, its
//! ingress redirect, its ifbs — found by their marks, so it works after a crash or a
//! config change too. With the ovs backend it sets `ingress_policing_rate/burst` back to 0
//! and deletes the QoS and queue sluice put on a port (never an operator's own).
//! With any backend it raises the links a `disconnect` rule held down, as the agent's
//! last state file records them: with the package removed, nothing else would.

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::ConfigArg;
use crate::config::{BackendKind, Config};
use crate::enforce::link::{LinkState, LinkSwitch, Switched};
use crate::enforce::tc::{Scope, ifb_tap};
use crate::enforce::{OvsBackend, OvsConfig, TcBackend};
use crate::model::ids::IfName;
use crate::state::{self, LOCK_FILE, STATE_FILE};
use crate::sys::AgentLock;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interfaces to release; none: every interface sluice limited
    #[arg(value_name = "INTERFACE", value_parser = |s: &str| IfName::new(s))]
    pub interfaces: Vec<IfName>,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = Config::load(&args.config.config)?;
    let config = loaded.config;
    let names = args.interfaces;
    // Holding the agent's lock keeps an agent from starting halfway through. The state
    // directory is on a tmpfs: after a reboot it is gone, while OVS keeps its policing
    // in its database, so there can be limits to release with no directory yet.
    let dir = &config.agent.state_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = AgentLock::acquire(&config.agent.state_dir.join(LOCK_FILE)).map_err(|e| {
        anyhow::anyhow!("{e}; stop the agent first (systemctl stop sluice): a running agent re-applies its limits every tick")
    })?;
    let limits = match config.agent.backend {
        BackendKind::None => {
            println!("backend \"none\" installs no limits");
            ExitCode::SUCCESS
        }
        BackendKind::Tc => release_tc(&names)?,
        BackendKind::Ovs => release_ovs(&config, &names)?,
    };
    let links = raise_disconnected(&dir.join(STATE_FILE), &names)?;
    Ok(if limits == ExitCode::SUCCESS {
        links
    } else {
        limits
    })
}

/// Bring up the links the agent's last state file says a `disconnect` rule held down
/// (all, or those among `names`). Only those: sluice never raises a link it did not
/// down. Links that no longer exist have nothing to raise.
fn raise_disconnected(state_path: &Path, names: &[IfName]) -> anyhow::Result<ExitCode> {
    let snapshot =
        state::read(state_path).with_context(|| format!("reading {}", state_path.display()))?;
    let held: Vec<(IfName, u32)> = snapshot
        .map(|s| s.interfaces)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.disconnected && (names.is_empty() || names.contains(&r.interface)))
        .filter_map(|r| {
            let idx = sysfs_ifindex(&r.interface).ok()?;
            Some((r.interface, idx))
        })
        .collect();
    if held.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut links = LinkSwitch::open().context("opening a netlink socket")?;
    let asks: Vec<(u32, LinkState)> = held.iter().map(|(_, idx)| (*idx, LinkState::Up)).collect();
    let mut raised = Vec::new();
    let mut failed = false;
    for ((name, _), result) in held.iter().zip(links.set(&asks)) {
        match result {
            Switched::Changed | Switched::Unchanged => raised.push(name.to_string()),
            Switched::Failed(e) => {
                eprintln!("sluice: {name}: cannot set the link up: {e}");
                failed = true;
            }
        }
    }
    if !raised.is_empty() {
        println!(
            "raised: {} (held down by a disconnect rule)",
            raised.join(", ")
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn release_tc(names: &[IfName]) -> anyhow::Result<ExitCode> {
    let scope = if names.is_empty() {
        Scope::All
    } else {
        let mut set = HashSet::new();
        for n in names {
            set.insert(ifindex(n)?);
        }
        Scope::Only(set)
    };
    let mut backend = TcBackend::open().context("opening a netlink socket")?;
    let outcome = backend.release(&scope).context("reading tc state")?;
    for (tap, why) in &outcome.failed {
        eprintln!("sluice: ifindex {tap}: {why}");
    }
    println!(
        "released: {} change(s){}",
        outcome.changes,
        match &scope {
            Scope::All => " on every interface sluice shaped".to_owned(),
            Scope::Only(_) => format!(
                " on {}",
                names
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    );
    Ok(if outcome.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// An interface's ifindex from sysfs (in this process's namespace).
fn ifindex(name: &IfName) -> anyhow::Result<u32> {
    if ifb_tap(name.as_str()).is_some() {
        anyhow::bail!("{name} is one of sluice's ifbs; release the interface it shapes");
    }
    sysfs_ifindex(name)
}

fn sysfs_ifindex(name: &IfName) -> anyhow::Result<u32> {
    let path = format!("/sys/class/net/{name}/ifindex");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no interface named {name} (reading {path})"))?;
    let idx = text
        .trim()
        .parse()
        .with_context(|| format!("{path}: not an ifindex"))?;
    Ok(idx)
}

fn release_ovs(config: &Config, names: &[IfName]) -> anyhow::Result<ExitCode> {
    let mut ovs = OvsBackend::new(
        OvsConfig {
            ovs_vsctl: config.agent.ovs_vsctl.clone(),
            db: config.agent.ovsdb.clone(),
            timeout: config.agent.command_timeout,
            client: config.agent.ovs_client,
        },
        None,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let wanted: HashSet<&IfName> = names.iter().collect();
    // Without names: every interface the config watches (others' limits are theirs).
    let released = runtime
        .block_on(ovs.release(|n| {
            if wanted.is_empty() {
                config.instance_of(n).is_some()
            } else {
                wanted.contains(n)
            }
        }))
        .map_err(|e| anyhow::anyhow!(e))?;
    if released.is_empty() {
        println!("released: nothing (no watched interface holds policing or a QoS of sluice's)");
    } else {
        let list: Vec<String> = released.iter().map(|n| n.to_string()).collect();
        println!("released: {}", list.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
