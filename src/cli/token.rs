//! `sluice token create|list|revoke`: tokens for the agent's HTTP API. An admin token
//! releases a penalty or resets a quota through it; a viewer token reads, which needs a
//! token only where the API listens beyond loopback. The quota store has its own:
//! `sluice store token …`.

use std::path::PathBuf;
use std::process::ExitCode;

use jiff::Timestamp;

use crate::api::agent::tokens::{self, AgentRole, TOKENS_FILE};
use crate::config::{Config, DEFAULT_CONFIG_PATH};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: TokenCommand,
    /// The agent's data directory (default: the config's agent.data_dir)
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Config file (TOML, or JSON by extension)
    #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG_PATH, env = "SLUICE_CONFIG", global = true)]
    pub config: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (the only time it is shown)
    Create {
        /// admin (read and act) or viewer (read: needed where agent.listen is beyond
        /// loopback)
        #[arg(long, value_enum, default_value_t = AgentRole::Admin)]
        role: AgentRole,
    },
    /// Every token: id, role, created, revoked (never the secret)
    List {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (the 8 hex digits after `sluice_`)
    Revoke {
        #[arg(value_name = "ID")]
        id: String,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = match args.data_dir {
        Some(d) => d,
        None => Config::load(&args.config)?.config.agent.data_dir,
    };
    let path = dir.join(TOKENS_FILE);
    let now = Timestamp::now();
    match args.command {
        TokenCommand::Create { role } => {
            let (token, stored) = tokens::create(&path, role, now)?;
            eprintln!(
                "{role} token {} for the agent API (kept hashed in {}); shown once:",
                stored.id,
                path.display()
            );
            println!("{}", token.reveal());
        }
        TokenCommand::List { json } => {
            let list = tokens::list(&path)?;
            if json {
                let shown: Vec<serde_json::Value> = list
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t.id, "role": t.role, "created": t.created, "revoked": t.revoked,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else if list.is_empty() {
                println!("no tokens (sluice token create makes one)");
            } else {
                println!("{:<10}{:<8}{:<22}REVOKED", "ID", "ROLE", "CREATED");
                for t in &list {
                    println!(
                        "{:<10}{:<8}{:<22}{}",
                        t.id,
                        t.role,
                        t.created.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                        t.revoked.map_or_else(|| "-".to_owned(), |r| r.to_string())
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let t = tokens::revoke(&path, &id, now)?;
            println!(
                "revoked {} (the agent refuses it from its next request)",
                t.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
