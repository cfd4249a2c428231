//! `sluice`: clap dispatch only; each subcommand lives in `sluice::cli`.

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A command whose output is piped into `head` ends quietly when the reader goes, as
    // Unix tools do, instead of panicking on EPIPE. The daemons keep Rust's default
    // (SIGPIPE ignored): a closed log pipe must not kill an agent.
    let daemon = matches!(&cli.command, Command::Agent(_))
        || matches!(&cli.command, Command::Store(a) if a.is_serve());
    if !daemon {
        // SAFETY: setting a signal's disposition to its default before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Agent(args) => sluice::cli::agent::run(args),
        Command::List(args) => sluice::cli::list::run(args),
        Command::Status(args) => sluice::cli::status::run(args),
        Command::Token(args) => sluice::cli::token::run(args),
        Command::Check(args) => sluice::cli::check::run(args),
        Command::Inventory(args) => sluice::cli::inventory::run(args),
        Command::Prune(args) => sluice::cli::prune::run(args),
        Command::Release(args) => sluice::cli::release::run(args),
        Command::Usage(args) => sluice::cli::usage::run(args),
        Command::Events(args) => sluice::cli::events::run(args),
        Command::Export(args) => sluice::cli::export::run(args),
        Command::Simulate(args) => sluice::cli::simulate::run(args),
        Command::Store(args) => sluice::cli::store::run(args),
        Command::Completions(args) => sluice::cli::completions::run(args),
        Command::Manpage(args) => sluice::cli::completions::manpage(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}
