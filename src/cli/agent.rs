//! `sluice agent`: load the config, set up logging, run the daemon.

use std::process::ExitCode;

use anyhow::Context;

use super::ConfigArg;
use crate::config::Config;
use crate::daemon::Agent;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.config.config;
    let loaded = Config::load(&path)?;
    let _guard = crate::daemon::logging::init(&loaded.config.log);
    for w in &loaded.warnings {
        tracing::warn!("config {}: {w}", path.display());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let agent = Agent::start(&path, loaded.config)?;
        agent.run().await
    })?;
    Ok(ExitCode::SUCCESS)
}
