//! `sluice status`: one screen on this host's agent — running?, backend, interfaces,
//! penalties, rules exceeded, enforcement, the quota store and the last tick. Asks the
//! running agent's API; with the agent down it says so and shows what the state file
//! last recorded. Exit status 0 when the agent runs, 3 when it does not (as
//! `systemctl status`), 1 when the question cannot be asked.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;

use super::ConfigArg;
use crate::api::agent::{LedgerStatus, SourceView, StatusView, StoreStatus};
use crate::config::Config;
use crate::model::human::human_bytes;
use crate::model::human::human_secs;
use crate::state::{self, LOCK_FILE, STATE_FILE};
use crate::sys::{self, Holder};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print what the agent's /v1/status answers, as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// Where to reach an API bound to `addr` from this host.
pub fn api_base(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => "127.0.0.1".to_owned(),
            SocketAddr::V6(_) => "[::1]".to_owned(),
        }
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("http://{ip}:{}", addr.port())
}

/// GET `url` as JSON, bounded in time. With `SLUICE_TOKEN` set, it is sent as the
/// bearer token: where the API listens beyond loopback, reads need a viewer token.
pub fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = crate::report::reporter::client().map_err(anyhow::Error::msg)?;
        let mut request = client.get(url).timeout(Duration::from_secs(5));
        if let Ok(token) = std::env::var("SLUICE_TOKEN") {
            request = request.bearer_auth(token.trim());
        }
        let resp = request.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            anyhow::bail!(
                "{url}: HTTP {status}: {}; set SLUICE_TOKEN to a token from `sluice token create --role viewer`",
                String::from_utf8_lossy(&body)
            );
        }
        if !status.is_success() {
            anyhow::bail!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).with_context(|| format!("{url}: unreadable answer"))
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config.config)?.config;
    let holder = sys::holder(&config.agent.state_dir.join(LOCK_FILE));
    let now = Timestamp::now();
    let asked = match (&holder, config.agent.listen) {
        (Holder::Running(_), Some(addr)) => Some(get_json::<StatusView>(&format!(
            "{}/v1/status",
            api_base(addr)
        ))),
        _ => None,
    };
    if args.json {
        match asked {
            Some(Ok(view)) => {
                println!("{}", serde_json::to_string_pretty(&view)?);
                return Ok(ExitCode::SUCCESS);
            }
            Some(Err(e)) => return Err(e),
            None => {
                println!("{}", serde_json::json!({ "running": false }));
                return Ok(ExitCode::from(3));
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<13}{v}\n"));
    match (&holder, asked) {
        (Holder::Running(_), Some(Ok(s))) => {
            line(
                &mut out,
                "agent:",
                format!(
                    "running (pid {}), sluice {}, up {}",
                    s.pid,
                    s.version,
                    human_secs(since(s.started_at, now))
                ),
            );
            line(
                &mut out,
                "backend:",
                format!("{}, every {}s", s.backend, s.interval_secs),
            );
            line(
                &mut out,
                "interfaces:",
                format!("{} matched ({} instances)", s.interfaces, s.instances),
            );
            line(&mut out, "penalties:", format!("{} active", s.penalised));
            line(
                &mut out,
                "rules:",
                format!(
                    "{} in force, {} quotas exceeded",
                    s.rules, s.quotas_exceeded
                ),
            );
            line(
                &mut out,
                "enforcement:",
                format!(
                    "{} failed, {} links held down",
                    s.enforce_failed, s.links_down
                ),
            );
            line(&mut out, "ledger:", ledger_line(&s.ledger, now));
            line(&mut out, "store:", store_line(s.store.as_ref(), now));
            for src in &s.inventory {
                line(&mut out, "inventory:", source_line(src, now));
            }
            line(
                &mut out,
                "last tick:",
                match (s.last_tick, s.last_tick_ms) {
                    (Some(at), Some(ms)) => {
                        format!("{ms:.1} ms, {} ago", human_secs(since(at, now)))
                    }
                    _ => "none yet".to_owned(),
                },
            );
            if let Some(addr) = config.agent.listen {
                line(&mut out, "api:", api_base(addr));
            }
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        (Holder::Running(pid), asked) => {
            line(&mut out, "agent:", format!("running (pid {pid})"));
            let why = match asked {
                Some(Err(e)) => format!("not answering: {e:#}"),
                _ => "not served (agent.listen = \"\")".to_owned(),
            };
            line(&mut out, "api:", why);
            out.push_str(&from_state_file(&config, now)?);
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        (Holder::NotRunning, _) => {
            line(
                &mut out,
                "agent:",
                "NOT running: limits stay as last applied (systemctl start sluice)".to_owned(),
            );
            out.push_str(&from_state_file(&config, now)?);
            print!("{out}");
            Ok(ExitCode::from(3))
        }
        (Holder::Unknown(why), _) => {
            line(&mut out, "agent:", format!("status unknown ({why})"));
            out.push_str(&from_state_file(&config, now)?);
            print!("{out}");
            Ok(ExitCode::from(1))
        }
    }
}

fn since(t: Timestamp, now: Timestamp) -> u64 {
    u64::try_from(now.duration_since(t).as_secs()).unwrap_or(0)
}

fn ledger_line(l: &LedgerStatus, now: Timestamp) -> String {
    match (&l.failing_since, &l.last_error) {
        (Some(t), e) => format!(
            "FAILING for {} ({}): still enforcing; traffic is counted when it writes again",
            human_secs(since(*t, now)),
            e.as_deref().unwrap_or("unknown error")
        ),
        (None, _) if l.failures > 0 => {
            format!("writing ({} failed commits since start)", l.failures)
        }
        (None, _) => "writing".to_owned(),
    }
}

fn store_line(st: Option<&StoreStatus>, now: Timestamp) -> String {
    let Some(st) = st else {
        return "none configured (no [store]: usage is not reported)".to_owned();
    };
    let spool = format!(
        "spool {}{}",
        human_bytes(st.spool_bytes),
        match (st.quotas_failing_since, st.quotas_fetched) {
            (Some(t), Some(f)) => format!(
                "; quotas: the store has not answered for {}, keeping its answer of {} ago",
                human_secs(since(t, now)),
                human_secs(since(f, now))
            ),
            (Some(t), None) => format!(
                "; quotas: the store has not answered for {}, using the cached ones",
                human_secs(since(t, now))
            ),
            (None, Some(f)) => format!("; quotas fetched {} ago", human_secs(since(f, now))),
            (None, None) => String::new(),
        }
    );
    match (&st.failing_since, &st.last_error, st.last_report) {
        (Some(t), Some(why), _) => format!(
            "{} UNREACHABLE for {} ({why}); {spool}",
            st.target,
            human_secs(since(*t, now))
        ),
        (_, _, Some(t)) => format!(
            "{} reachable (last report {} ago); {spool}",
            st.target,
            human_secs(since(t, now))
        ),
        _ => format!("{} (nothing reported yet); {spool}", st.target),
    }
}

fn source_line(s: &SourceView, now: Timestamp) -> String {
    let read = match s.read_at {
        Some(t) => format!("read {} ago", human_secs(since(t, now))),
        None => "never read".to_owned(),
    };
    let problems = match s.problems {
        0 => String::new(),
        n => format!(", {n} left out (see the log)"),
    };
    match &s.error {
        Some(why) => format!(
            "{} FAILING ({why}); keeping its last {} instances, {read}",
            s.source, s.instances
        ),
        None => format!("{} {} instances, {read}{problems}", s.source, s.instances),
    }
}

/// What the state file last recorded, for an agent that cannot be asked.
fn from_state_file(config: &Config, now: Timestamp) -> anyhow::Result<String> {
    let path = config.agent.state_dir.join(STATE_FILE);
    Ok(match state::read(&path)? {
        None => format!("state:       none at {}\n", path.display()),
        Some(snap) => {
            let penalised = snap.interfaces.iter().filter(|r| r.stage > 0).count();
            let exceeded = snap.quotas.iter().filter(|q| q.exceeded).count();
            format!(
                "state:       written {} ago: backend {}, {} interfaces, {penalised} penalised, {exceeded} quotas exceeded\n",
                human_secs(since(snap.written_at, now)),
                snap.backend,
                snap.interfaces.len(),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_line_says_whether_commits_fail_and_since_when() {
        let now: Timestamp = "2027-01-01T12:00:00Z".parse().unwrap();
        let status = |since: Option<i64>, error: Option<&str>, failures| LedgerStatus {
            failing_since: since.map(|s| now - jiff::SignedDuration::from_secs(s)),
            last_error: error.map(str::to_owned),
            failures,
        };
        for (l, want) in [
            (status(None, None, 0), "writing"),
            (
                status(None, None, 3),
                "writing (3 failed commits since start)",
            ),
            (
                status(Some(75), Some("database or disk is full"), 9),
                "FAILING for 1m 15s (database or disk is full): still enforcing; traffic is counted when it writes again",
            ),
        ] {
            assert_eq!(ledger_line(&l, now), want);
        }
    }

    /// The store line says whether the store answers and whether the quotas (and the
    /// fleet's counts) in force are fresh or the last answer kept while it is away.
    #[test]
    fn the_store_line_says_which_quota_answer_is_in_force() {
        let now: Timestamp = "2027-01-01T12:00:00Z".parse().unwrap();
        let ago = |s: i64| Some(now - jiff::SignedDuration::from_secs(s));
        let st = |failing: Option<Timestamp>, fetched, quotas_failing| StoreStatus {
            target: "http://store:9478".into(),
            spool_bytes: 0,
            last_report: ago(1),
            failing_since: failing,
            last_error: failing.map(|_| "connection refused".to_owned()),
            quotas_fetched: fetched,
            quotas_failing_since: quotas_failing,
        };
        let cases = [
            (
                st(None, ago(5), None),
                "reachable (last report 1s ago); spool 0 B; quotas fetched 5s ago",
            ),
            (
                st(ago(90), ago(100), ago(90)),
                "UNREACHABLE for 1m 30s (connection refused); spool 0 B; quotas: the store has not answered for 1m 30s, keeping its answer of 1m 40s ago",
            ),
            (
                st(ago(30), None, ago(30)),
                "quotas: the store has not answered for 30s, using the cached ones",
            ),
        ];
        for (status, want) in cases {
            let got = store_line(Some(&status), now);
            assert!(got.contains(want), "{got}\n  wanted {want}");
        }
        assert!(store_line(None, now).starts_with("none configured"));
    }

    #[test]
    fn the_api_is_reached_on_loopback_when_bound_to_any() {
        let table = [
            ("127.0.0.1:9477", "http://127.0.0.1:9477"),
            ("0.0.0.0:9477", "http://127.0.0.1:9477"),
            ("[::]:9477", "http://[::1]:9477"),
            ("[fd00::1]:80", "http://[fd00::1]:80"),
            ("10.0.0.5:9000", "http://10.0.0.5:9000"),
        ];
        for (addr, want) in table {
            assert_eq!(api_base(addr.parse().unwrap()), want, "{addr}");
        }
    }
}
