//! The command line: one file per subcommand. This is the edge where `anyhow` is allowed.

pub mod agent;
pub mod check;
pub mod completions;
pub mod events;
pub mod export;
pub mod inventory;
pub mod list;
pub mod prune;
pub mod release;
pub mod simulate;
pub mod status;
pub mod store;
pub mod token;
pub mod usage;

#[cfg(test)]
mod fuzz;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Per-host traffic agent: measures, throttles and reports each VM's and container's network traffic"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (foreground; systemd runs it)
    Agent(agent::Args),
    /// Show every watched interface: stage, limit, rates, enforcement (reads the state file)
    List(list::Args),
    /// One screen on this host's agent: running?, interfaces, penalties, rules, store, last tick
    Status(status::Args),
    /// Validate a config file: "ok" and a summary, or every problem with its field path
    Check(check::Args),
    /// What the inventory sources say: each instance's source, name, tags, rates and interfaces
    Inventory(inventory::Args),
    /// Delete ledger buckets before a date (--dry-run says what it would delete)
    Prune(prune::Args),
    /// Remove the limits sluice installed, raise the links it held down (all, or the named); agent stopped
    Release(release::Args),
    /// Traffic per instance and period from the ledger (table, --json or --csv)
    Usage(usage::Args),
    /// Charts and numbers of traffic (json, csv, html, png, svg) from the ledger
    Export(export::Args),
    /// The event log: stage changes, quota thresholds/exceeds/restores, hooks, links
    Events(events::Args),
    /// Replay a recorded trace through a config and print what would have happened
    Simulate(simulate::Args),
    /// The quota store: serve its HTTP API (default), or manage tokens, backup, restore
    Store(store::Args),
    /// Admin tokens for the agent's HTTP API (create, list, revoke)
    Token(token::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(completions::Args),
    /// Print the man page, or write all of them with --dir (roff; for packaging)
    #[command(hide = true)]
    Manpage(completions::ManArgs),
}

/// `--config FILE`, shared by the subcommands that read one.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Config file (TOML, or JSON by extension)
    #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG_PATH, env = "SLUICE_CONFIG")]
    pub config: PathBuf,
}
