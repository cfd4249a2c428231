//! `sluice check`: validate a config, print "ok" and a summary or every problem.

use std::process::ExitCode;

use super::ConfigArg;
use crate::config::Config;
use crate::model::units::format_duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = &args.config.config;
    let loaded = match Config::load(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &loaded.warnings {
        eprintln!("warning: {}: {w}", path.display());
    }
    let c = &loaded.config;
    println!("ok: {}", path.display());
    println!(
        "  agent: every {}, backend {}, state in {}, stage 0 {}",
        format_duration(c.agent.interval),
        c.agent.backend,
        c.agent.state_dir.display(),
        if c.agent.enforce_base {
            "holds the base rate"
        } else {
            "is unlimited"
        }
    );
    let patterns: Vec<&str> = c.agent.interfaces.iter().map(|p| p.as_str()).collect();
    println!("  interfaces: {}", patterns.join("  "));
    println!(
        "  base rate: {}, download {} ({} instance override(s))",
        c.penalty.base_rate,
        c.penalty
            .download_rate
            .map_or_else(|| "not limited".to_owned(), |r| r.to_string()),
        c.instances.len()
    );
    for (i, s) in c.penalty.stages.iter().enumerate() {
        let pps = s.pps.map_or_else(String::new, |p| format!(" or ≥ {p}"));
        let packets = s
            .packet_rate
            .map_or_else(String::new, |p| format!(" and {p}"));
        println!(
            "  stage {}: upload ≥ {}% of base{pps} for {} → limit {}% of base{packets} for {}",
            i + 1,
            s.usage.get() * 100.0,
            format_duration(s.trigger),
            s.rate.get() * 100.0,
            format_duration(s.duration)
        );
    }
    for r in &c.rules {
        let covers = if r.instances.is_empty() && r.tags.is_empty() {
            "every instance".to_owned()
        } else {
            let mut who: Vec<String> = r.instances.iter().map(|i| i.to_string()).collect();
            who.extend(r.tags.iter().map(|t| format!("tag {t}")));
            who.join(", ")
        };
        println!(
            "  rule {}{}: {} {} per {} ({}) → {}; covers {covers}{}",
            r.name,
            if r.enabled { "" } else { " (disabled)" },
            r.limit,
            r.direction,
            r.period,
            r.timezone.iana_name().unwrap_or("host zone"),
            r.action,
            if r.exclude.is_empty() {
                String::new()
            } else {
                format!(
                    " except {}",
                    r.exclude
                        .iter()
                        .map(|i| i.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    if !c.webhooks.is_empty() {
        println!(
            "  webhooks: {}",
            c.webhooks
                .iter()
                .map(|w| crate::model::redact::redacted(w.url.as_str()))
                .collect::<Vec<_>>()
                .join("  ")
        );
    }
    let sources: Vec<&str> = c.inventory.sources.iter().map(|s| s.as_str()).collect();
    println!(
        "  inventory: {} (refresh at least every {})",
        sources.join(", "),
        format_duration(c.inventory.refresh)
    );
    for hint in detected_sources(&c.inventory) {
        println!("  hint: {hint}");
    }
    // The drop-ins are part of what the agent will run with: a bad one fails the check.
    let (merged, errors) = c.with_drop_ins();
    println!(
        "  instance drop-ins in {}: {} instance(s) after merging",
        c.agent.instances_dir.display(),
        merged.instances.len()
    );
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("{e}");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Hypervisors this host runs whose source `inventory.sources` does not list: the
/// interface names there may not carry the instance's id.
fn detected_sources(inv: &crate::config::InventoryConfig) -> Vec<String> {
    use crate::config::SourceKind;
    [
        (SourceKind::Proxmox, inv.proxmox.config_dir.join("qemu-server")),
        (SourceKind::Libvirt, inv.libvirt.status_dir.clone()),
    ]
    .into_iter()
    .filter(|(kind, path)| !inv.sources.contains(kind) && path.is_dir())
    .map(|(kind, path)| {
        format!(
            "{} exists: add \"{kind}\" to inventory.sources to learn instances, names, tags and rates from it",
            path.display()
        )
    })
    .collect()
}
