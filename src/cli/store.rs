//! `sluice store`: run the quota store's HTTP API, and look after its database (tokens,
//! backup, restore).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use jiff::tz::TimeZone;
use tokio::signal::unix::{SignalKind, signal};

use crate::api::access::Access;
use crate::api::store::{self as http, ApiOptions};
use crate::config::{LogConfig, LogFormat};
use crate::model::ids::Label;
use crate::model::token::{Role, TokenId};
use crate::model::units::Rate;
use crate::store::SqliteStore;
use crate::store::service::{Settings, Store};
use crate::store::spec::KnownResources;
use crate::store::sqlite::backup::{lock_path, restore};
use crate::store::statement::verify_chain;
use crate::sys::AgentLock;

pub const DEFAULT_DATABASE: &str = "/var/lib/sluice/quota.db";

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<StoreCommand>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Where the store's data lives.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArg {
    /// The database: a SQLite file path (or sqlite:PATH), or a postgres:// URL
    #[arg(long, value_name = "URL", default_value = DEFAULT_DATABASE, env = "SLUICE_STORE_DATABASE")]
    pub database: String,
}

enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseArg {
    fn parse(&self) -> anyhow::Result<Database> {
        let d = self.database.as_str();
        if d.starts_with("postgres://") || d.starts_with("postgresql://") {
            return Ok(Database::Postgres(d.to_owned()));
        }
        let path = d
            .strip_prefix("sqlite://")
            .or_else(|| d.strip_prefix("sqlite:"))
            .unwrap_or(d);
        if path.is_empty() {
            bail!("--database: empty path");
        }
        Ok(Database::Sqlite(PathBuf::from(path)))
    }

    /// The store on this database, for one admin command (`settings` do not matter to
    /// tokens).
    async fn open(&self) -> anyhow::Result<Store> {
        self.open_with(Settings::default()).await
    }

    async fn open_with(&self, settings: Settings) -> anyhow::Result<Store> {
        Ok(match self.parse()? {
            Database::Sqlite(p) => Store::open_sqlite(&p, settings)?,
            Database::Postgres(url) => Store::connect_postgres(&url, settings).await?,
        })
    }

    /// The SQLite file, or why this command does not apply to PostgreSQL.
    fn sqlite_path(&self, command: &str) -> anyhow::Result<PathBuf> {
        match self.parse()? {
            Database::Sqlite(p) => Ok(p),
            Database::Postgres(_) => bail!(
                "`sluice store {command}` is for the SQLite store; for PostgreSQL use pg_dump and pg_restore"
            ),
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

impl Args {
    /// Whether this runs the store (no subcommand) rather than a one-off command.
    pub fn is_serve(&self) -> bool {
        self.command.is_none()
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArg,
    /// Address to listen on (TLS belongs to a reverse proxy in front)
    #[arg(long, value_name = "ADDR", default_value = crate::config::DEFAULT_STORE_LISTEN, env = "SLUICE_STORE_LISTEN")]
    pub listen: SocketAddr,
    /// Time zone days and months are counted in (IANA name)
    #[arg(long, value_name = "TZ", default_value = "UTC")]
    pub timezone: String,
    /// A counted resource beyond ipv4, ipv6, port_mappings and proxies (repeatable)
    #[arg(long = "resource", value_name = "NAME", value_parser = |s: &str| Label::new(s))]
    pub resources: Vec<Label>,
    /// Requests per second per token (0: no limit)
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub rate_limit: u32,
    /// Requests per second per client address, counted before the token is checked
    /// (0: no limit)
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub address_rate_limit: u32,
    /// A name the API answers to in `Host`, besides IP addresses and localhost
    /// (repeatable; what agents and browsers reach the store by)
    #[arg(long = "allowed-host", value_name = "NAME", value_parser = |s: &str| crate::config::dns_name(s))]
    pub allowed_hosts: Vec<String>,
    /// Serve /metrics without a token even when listening beyond loopback
    #[arg(long)]
    pub metrics_public: bool,
    /// How long report keys are kept (a retry later than this would count twice), and so
    /// the oldest a reported sample may be
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = crate::model::units::parse_duration)]
    pub report_retention: std::time::Duration,
    /// The most a link can carry: an agent's sample claiming more bytes than this rate
    /// allows since its previous sample of the instance is refused (400)
    #[arg(long, value_name = "RATE", default_value = "400gbit")]
    pub max_report_rate: Rate,
    /// Largest request body in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub body_limit: usize,
    /// Log level (a tracing filter)
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,
    /// Do not serve the read-only fleet dashboard at / (beyond loopback it needs a
    /// viewer, panel or admin token)
    #[arg(long)]
    pub no_dashboard: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// API tokens: create (printed once), list, revoke
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Copy the database to FILE while the store keeps running (SQLite online backup)
    Backup {
        file: PathBuf,
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Replace the database with a backup (refused while a store is serving it)
    Restore {
        file: PathBuf,
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Closed billing months' statements: check their hash chains, or write the due ones
    Statements {
        #[command(subcommand)]
        command: StatementsCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum StatementsCommand {
    /// Check every instance's chain of statements: each hashes to what it says and names
    /// the one before it. Prints each chain's head hash (keep it elsewhere); exits 1
    /// naming the first statement that does not verify.
    Verify {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Write the statements of billing months already closed that have none yet (a
    /// serving store does this by itself)
    Close {
        /// The serving store's time zone (its `--timezone`): where months start. Asked
        /// for, not defaulted: another zone would close months that overlap its own
        #[arg(long, value_name = "ZONE")]
        timezone: String,
        #[command(flatten)]
        database: DatabaseArg,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is stored only as a hash: copy it now)
    Create {
        /// admin (everything), panel (quotas, usage, reservations), viewer (reads) or
        /// agent (report for --host, read quotas)
        #[arg(long, value_parser = ["admin", "panel", "viewer", "agent"])]
        role: String,
        /// The host an agent token reports for
        #[arg(long, value_name = "HOST", value_parser = |s: &str| Label::new(s))]
        host: Option<Label>,
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// List tokens (ids, roles, hosts; never secrets)
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Revoke a token by its id (the 8 hex digits after "sluice_")
    Revoke {
        #[arg(value_parser = |s: &str| s.parse::<TokenId>())]
        id: TokenId,
        #[command(flatten)]
        database: DatabaseArg,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        None => serve(args.serve),
        Some(StoreCommand::Token { command }) => token(command),
        Some(StoreCommand::Statements { command }) => statements(command),
        Some(StoreCommand::Backup { file, database }) => {
            let store = SqliteStore::open(&database.sqlite_path("backup")?)?;
            store.backup_to(&file)?;
            println!("backed up to {}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(StoreCommand::Restore { file, database }) => {
            let path = database.sqlite_path("restore")?;
            restore(&file, &path)?;
            println!("restored {} from {}", path.display(), file.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn statements(command: StatementsCommand) -> anyhow::Result<ExitCode> {
    match command {
        StatementsCommand::Close { timezone, database } => {
            let timezone =
                TimeZone::get(&timezone).with_context(|| format!("--timezone {timezone:?}"))?;
            let settings = Settings {
                timezone,
                ..Settings::default()
            };
            let n = runtime()?.block_on(async {
                let store = database.open_with(settings).await?;
                anyhow::Ok(store.close_periods(jiff::Timestamp::now()).await?)
            })?;
            println!("wrote {n} statements");
            Ok(ExitCode::SUCCESS)
        }
        StatementsCommand::Verify { json, database } => {
            let all = runtime()?
                .block_on(async { anyhow::Ok(database.open().await?.statements(None).await?) })?;
            let mut heads = Vec::new();
            for chain in all.chunk_by(|a, b| a.instance == b.instance) {
                match verify_chain(chain) {
                    Ok(Some(head)) => heads.push(head),
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!("sluice: {e}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&heads)?);
            } else {
                for h in &heads {
                    println!(
                        "{:<24} {:>4} statements  head {}",
                        h.instance, h.statements, h.head
                    );
                }
                println!(
                    "{} chains, {} statements: all verify",
                    heads.len(),
                    heads.iter().map(|h| h.statements).sum::<usize>()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            role,
            host,
            database,
        } => {
            let role = match (role.as_str(), host) {
                ("admin", None) => Role::Admin,
                ("panel", None) => Role::Panel,
                ("viewer", None) => Role::Viewer,
                ("agent", Some(host)) => Role::Agent { host },
                ("agent", None) => bail!("--host: an agent token needs the host it reports for"),
                (other, Some(_)) => bail!("--host: a {other} token is not tied to a host"),
                (other, None) => bail!("--role: {other:?} is not a role"),
            };
            let token = runtime()?.block_on(async {
                anyhow::Ok(database.open().await?.token_create(role.clone()).await?)
            })?;
            eprintln!(
                "created {} token {} (shown once; only its hash is stored)",
                role.name(),
                token.id
            );
            println!("{}", token.reveal());
        }
        TokenCommand::List { json, database } => {
            let tokens = runtime()?
                .block_on(async { anyhow::Ok(database.open().await?.token_list().await?) })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                println!(
                    "{:<10} {:<6} {:<20} {:<26} REVOKED",
                    "ID", "ROLE", "HOST", "CREATED"
                );
                for t in tokens {
                    println!(
                        "{:<10} {:<6} {:<20} {:<26} {}",
                        t.id.as_str(),
                        t.role,
                        t.host.as_deref().unwrap_or("-"),
                        t.created,
                        t.revoked.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        TokenCommand::Revoke { id, database } => {
            runtime()?.block_on(async {
                anyhow::Ok(database.open().await?.token_revoke(id.clone()).await?)
            })?;
            println!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let _guard = crate::daemon::logging::init(&LogConfig {
        dir: None,
        format: LogFormat::Text,
        level: args.log_level.clone(),
    });
    let timezone =
        TimeZone::get(&args.timezone).with_context(|| format!("--timezone {:?}", args.timezone))?;
    let database = args.database.parse()?;
    let _lock = match &database {
        Database::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            Some(AgentLock::acquire(&lock_path(path))?)
        }
        // Stateless: any number may serve one cluster.
        Database::Postgres(_) => None,
    };
    let settings = Settings {
        timezone,
        resources: KnownResources::new(&args.resources),
        max_report_rate: args.max_report_rate,
        keep_report_keys: args.report_retention,
    };
    let options = ApiOptions {
        body_limit: args.body_limit,
        rate_limit: args.rate_limit,
        address_rate_limit: args.address_rate_limit,
        access: Access::new(args.listen, &args.allowed_hosts, args.metrics_public),
        dashboard: !args.no_dashboard,
        ..ApiOptions::default()
    };
    runtime()?.block_on(async {
        let (store, shown) = match &database {
            Database::Sqlite(path) => (
                Store::open_sqlite(path, settings)?,
                path.display().to_string(),
            ),
            Database::Postgres(url) => (
                Store::connect_postgres(url, settings).await?,
                crate::model::redact::redacted(url),
            ),
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("--listen {}", args.listen))?;
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        tracing::info!(database = %shown, "quota store starting");
        http::serve(listener, store, options, async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("quota store stopping");
        })
        .await
        .context("serving the API")?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
