//! `sluice list`: every watched interface, from the state file (works with the agent down).

use std::path::PathBuf;
use std::process::ExitCode;

use jiff::Timestamp;

use super::ConfigArg;
use crate::config::{Config, DEFAULT_STATE_DIR};
use crate::enforce::Enforcement;
use crate::model::human::{human_bytes, human_pps, human_rate, human_secs};
use crate::state::{InterfaceRecord, LOCK_FILE, STATE_FILE, Snapshot};
use crate::sys::{self, Holder};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the state as JSON
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Refresh in place until interrupted (Ctrl-C)
    #[arg(long)]
    pub watch: bool,
    /// How often --watch refreshes
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = |s: &str| crate::model::units::parse_duration(s))]
    pub every: std::time::Duration,
    /// Colours: auto (only on a terminal, and not with NO_COLOR set), always, never
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Read the state from this directory instead of the config's agent.state_dir
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// When to colour the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour stdout.
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = match args.state_dir {
        Some(d) => d,
        None => match Config::load(&args.config.config) {
            Ok(l) => l.config.agent.state_dir,
            Err(e) => {
                if args.config.config.exists() {
                    eprintln!("warning: {e}\nwarning: reading the state from {DEFAULT_STATE_DIR}");
                }
                PathBuf::from(DEFAULT_STATE_DIR)
            }
        },
    };
    let path = dir.join(STATE_FILE);
    let read = || -> anyhow::Result<Snapshot> {
        crate::state::read(&path)?.ok_or_else(|| {
            anyhow::anyhow!(
                "no state at {} (has `sluice agent` run on this host?)",
                path.display()
            )
        })
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&read()?)?);
        return Ok(ExitCode::SUCCESS);
    }
    let colour = args.color.enabled();
    let screen = |now: Timestamp| -> anyhow::Result<String> {
        let agent = sys::holder(&dir.join(LOCK_FILE));
        Ok(render(&read()?, &agent, now, colour))
    };
    if !args.watch {
        print!("{}", screen(Timestamp::now())?);
        return Ok(ExitCode::SUCCESS);
    }
    use std::io::{IsTerminal, Write};
    let in_place = std::io::stdout().is_terminal();
    loop {
        let now = Timestamp::now();
        // A state file missing for a moment (agent restarting) is shown, not fatal.
        let body = screen(now).unwrap_or_else(|e| format!("{e:#}\n"));
        let mut out = std::io::stdout().lock();
        if in_place {
            // Home, draw, clear what the previous (longer) screen left below.
            write!(out, "\x1b[H{body}\x1b[J")?;
        } else {
            writeln!(out, "{body}")?;
        }
        writeln!(
            out,
            "every {} (Ctrl-C to stop); {}",
            humantime::format_duration(args.every),
            now.strftime("%H:%M:%S UTC")
        )?;
        out.flush()?;
        drop(out);
        std::thread::sleep(args.every);
    }
}

/// ANSI colours for whole rows (padding is computed on the plain text first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paint {
    Plain,
    /// A running penalty.
    Yellow,
    /// Something to act on: a failed enforcement, an exceeded quota, a link held down.
    Red,
    /// Nothing to see.
    Dim,
}

impl Paint {
    fn wrap(self, line: &str, colour: bool) -> String {
        let code = match self {
            Paint::Plain => return line.to_owned(),
            _ if !colour => return line.to_owned(),
            Paint::Yellow => "33",
            Paint::Red => "31",
            Paint::Dim => "2",
        };
        format!("\x1b[{code}m{line}\x1b[0m")
    }
}

/// The human table. `agent` says whether an agent holds the lock now: the state's age
/// cannot, since an idle host's state is only rewritten when something changes.
pub fn render(snap: &Snapshot, agent: &Holder, now: Timestamp, colour: bool) -> String {
    let age = now.duration_since(snap.written_at).as_secs().max(0) as u64;
    let who = match agent {
        Holder::Running(pid) => format!("agent running (pid {pid})"),
        Holder::NotRunning => "agent NOT running: limits stay as last applied".to_owned(),
        Holder::Unknown(why) => format!("agent status unknown ({why})"),
    };
    let who_paint = match agent {
        Holder::Running(_) => Paint::Plain,
        _ => Paint::Red,
    };
    let mut out = format!(
        "{}; backend {}, every {}s; state written {} ago by pid {}\n",
        who_paint.wrap(&who, colour),
        snap.backend,
        snap.interval_secs,
        human_secs(age),
        snap.pid,
    );
    let header = [
        "INTERFACE",
        "INSTANCE",
        "STAGE",
        "UPLOAD LIMIT",
        "DOWNLOAD LIMIT",
        "REMAINING",
        "UPLOAD",
        "DOWNLOAD",
        "DROPS UP/DOWN",
        "THROTTLED UP/DOWN",
        "STATUS",
    ];
    let mut rows: Vec<(Vec<String>, Paint)> =
        vec![(header.map(String::from).to_vec(), Paint::Plain)];
    for r in &snap.interfaces {
        let paint = if matches!(r.enforcement, Some(Enforcement::EnforceFailed { .. }))
            || r.disconnected
            || r.rule.is_some()
        {
            Paint::Red
        } else if r.stage > 0 {
            Paint::Yellow
        } else if !r.present {
            Paint::Dim
        } else {
            Paint::Plain
        };
        rows.push((row(r, now).to_vec(), paint));
    }
    out.push_str(&table(&rows, colour));
    if snap.interfaces.is_empty() {
        out.push_str("(no interface matches agent.interfaces)\n");
    }
    if !snap.quotas.is_empty() {
        out.push('\n');
        let mut rows = vec![(
            [
                "INSTANCE",
                "RULE",
                "USED",
                "LIMIT",
                "USED %",
                "ACTION",
                "STATE",
                "RESETS IN",
            ]
            .map(String::from)
            .to_vec(),
            Paint::Plain,
        )];
        for q in &snap.quotas {
            let paint = if q.exceeded { Paint::Red } else { Paint::Plain };
            rows.push((
                vec![
                    q.instance.to_string(),
                    q.rule.to_string(),
                    if q.elsewhere_bytes > 0 {
                        format!(
                            "{} ({} elsewhere)",
                            human_bytes(q.used_bytes),
                            human_bytes(q.elsewhere_bytes)
                        )
                    } else {
                        human_bytes(q.used_bytes)
                    },
                    if q.judged {
                        "95th (store)".to_owned()
                    } else {
                        human_bytes(q.limit_bytes)
                    },
                    if q.judged {
                        "-".to_owned()
                    } else {
                        format!(
                            "{:.1}%",
                            q.used_bytes as f64 * 100.0 / q.limit_bytes.max(1) as f64
                        )
                    },
                    q.action.to_string(),
                    if q.exceeded { "EXCEEDED" } else { "ok" }.to_owned(),
                    human_secs(q.period_end.duration_since(now).as_secs().max(0) as u64),
                ],
                paint,
            ));
        }
        out.push_str(&table(&rows, colour));
    }
    out
}

/// Columns padded to their widest cell; the last one is left ragged. Each row is
/// coloured whole, after padding, so escape codes never upset the widths.
fn table(rows: &[(Vec<String>, Paint)], colour: bool) -> String {
    let columns = rows.first().map_or(0, |(r, _)| r.len());
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .map(|(r, _)| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (r, paint) in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == columns - 1 {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(&paint.wrap(line.join("  ").trim_end(), colour));
        out.push('\n');
    }
    out
}

const COLUMNS: usize = 11;

fn row(r: &InterfaceRecord, now: Timestamp) -> [String; COLUMNS] {
    let stage = if r.stage == 0 {
        "0".to_owned()
    } else {
        format!("{}", r.stage)
    };
    let mut limit = r
        .upload_limit_kbps
        .map_or_else(|| "none".to_owned(), |k| human_rate(k.saturating_mul(1000)));
    if let Some(pps) = r.packet_limit_pps {
        limit.push_str(&format!(
            " {}",
            crate::model::units::PacketRate::from_per_sec(pps)
        ));
    }
    let remaining = match r.until {
        Some(until) if r.stage > 0 => human_secs(until.duration_since(now).as_secs().max(0) as u64),
        _ => "-".to_owned(),
    };
    // The byte rate, and the packet rate beside it when it is known.
    let rate = |b: Option<u64>, p: Option<u64>| {
        let mut s = b.map_or_else(|| "-".to_owned(), human_rate);
        if let (Some(_), Some(p)) = (b, p) {
            s.push_str(&format!(" {}", human_pps(p)));
        }
        s
    };
    let download_limit = r
        .download_limit_kbps
        .map_or_else(|| "none".to_owned(), |k| human_rate(k.saturating_mul(1000)));
    // Packets the upload/download shapers dropped, and times they held traffic back
    // (tc backend only): a limit that bites shows here.
    let drops = r.shaper.map_or_else(
        || "-".to_owned(),
        |d| format!("{}/{}", d.upload_dropped, d.download_dropped),
    );
    let throttled = r.shaper.map_or_else(
        || "-".to_owned(),
        |d| format!("{}/{}", d.upload_overlimits, d.download_overlimits),
    );
    let mut status = if !r.present {
        "absent (penalty kept)".to_owned()
    } else {
        match &r.enforcement {
            None => "-".to_owned(),
            Some(Enforcement::EnforceFailed { reason }) => format!("enforce_failed: {reason}"),
            Some(e) => e.label().to_owned(),
        }
    };
    if let Some(rule) = &r.rule {
        status.push_str(&format!(" [{rule}]"));
    }
    if r.disconnected {
        status.push_str(" [link held down]");
    }
    [
        if r.userspace {
            // No kernel netdev: counted from OVSDB's statistics, refreshed by vswitchd.
            format!("{} (ovsdb counters)", r.interface)
        } else {
            r.interface.to_string()
        },
        match &r.instance_name {
            Some(name) => format!("{} ({name})", r.instance),
            None => r.instance.to_string(),
        },
        stage,
        limit,
        download_limit,
        remaining,
        rate(r.upload_bps, r.upload_pps),
        rate(r.download_bps, r.download_pps),
        drops,
        throttled,
        status,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::{IfName, InstanceId};
    use crate::policy::Reason;

    #[test]
    fn table_shows_stage_limit_remaining_and_failures() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let rec = |name: &str, stage, present, enforcement| InterfaceRecord {
            interface: IfName::new(name).unwrap(),
            instance: InstanceId::new("101").unwrap(),
            instance_name: None,
            present,
            stage,
            since: None,
            until: (stage > 0).then(|| Timestamp::from_second(1_700_001_510).unwrap()),
            reason: if stage > 0 {
                Reason::Penalty { stage }
            } else {
                Reason::Base
            },
            upload_limit_kbps: Some(if stage > 0 { 900_000 } else { 1_000_000 }),
            burst_kb: Some(90_000),
            upload_bps: Some(950_000_000),
            download_bps: None,
            upload_pps: None,
            download_pps: None,
            enforcement,
            download_limit_kbps: None,
            packet_limit_pps: None,
            userspace: false,
            shaper: (stage > 0).then_some(crate::state::ShaperDrops {
                upload_dropped: 1204,
                upload_overlimits: 9000,
                download_dropped: 0,
                download_overlimits: 0,
            }),
            rule: None,
            disconnected: false,
        };
        let snap = Snapshot {
            version: 1,
            written_at: Timestamp::from_second(1_699_999_990).unwrap(),
            pid: 7,
            backend: "ovs".into(),
            interval_secs: 60,
            interfaces: vec![
                rec("kvm101.0", 1, true, Some(Enforcement::failed("no policer"))),
                InterfaceRecord {
                    upload_pps: Some(12_500),
                    download_pps: Some(830),
                    packet_limit_pps: Some(25_000),
                    ..rec("kvm101.1", 0, true, Some(Enforcement::Applied))
                },
                rec("kvm102.0", 2, false, None),
            ],
            quotas: Vec::new(),
        };
        let text = render(&snap, &Holder::Running("7".into()), now, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "agent running (pid 7); backend ovs, every 60s; state written 10s ago by pid 7"
        );
        assert!(
            lines[2].contains("kvm101.0")
                && lines[2].contains("900.0 Mbit/s")
                && lines[2].contains("25m 10s")
                && lines[2].contains("1204/0")
                && lines[2].contains("9000/0")
        );
        assert!(
            lines[2].ends_with("enforce_failed: no policer"),
            "{}",
            lines[2]
        );
        assert!(lines[3].contains("1.00 Gbit/s 25kpps") && lines[3].ends_with("applied"));
        assert!(lines[3].contains("950.0 Mbit/s 12.5kpps"), "{}", lines[3]);
        assert!(lines[4].ends_with("absent (penalty kept)"));
        let down = render(&snap, &Holder::NotRunning, now, false);
        assert!(
            down.lines()
                .next()
                .unwrap()
                .starts_with("agent NOT running")
        );
        assert!(!text.contains("RULE"), "no quota table without quotas");
        assert!(!text.contains('\x1b'), "no colour unless asked");
        // In colour: the failing row red, the penalised one yellow; the same text underneath.
        let coloured = render(&snap, &Holder::Running("7".into()), now, true);
        let lines_c: Vec<&str> = coloured.lines().collect();
        assert!(
            lines_c[2].starts_with("\x1b[31mkvm101.0"),
            "{:?}",
            lines_c[2]
        );
        assert!(lines_c[3].starts_with("kvm101.1"), "{:?}", lines_c[3]);
        assert!(
            lines_c[4].starts_with("\x1b[33mkvm102.0"),
            "{:?}",
            lines_c[4]
        );
        let plain: String = coloured
            .replace("\x1b[31m", "")
            .replace("\x1b[2m", "")
            .replace("\x1b[33m", "")
            .replace("\x1b[0m", "");
        assert_eq!(plain, text);

        // With a rule in force: the interface says so, and the quota table follows.
        let mut limited = rec("kvm101.0", 0, true, Some(Enforcement::Applied));
        limited.rule = Some("disconnect by monthly".into());
        limited.disconnected = true;
        let snap = Snapshot {
            interfaces: vec![limited],
            quotas: vec![crate::state::QuotaRecord {
                rule: crate::model::ids::RuleName::new("monthly").unwrap(),
                instance: InstanceId::new("101").unwrap(),
                period_start: Timestamp::from_second(1_699_000_000).unwrap(),
                period_end: Timestamp::from_second(1_700_003_600).unwrap(),
                used_bytes: 1_200_000_000_000,
                elsewhere_bytes: 0,
                limit_bytes: 1_000_000_000_000,
                action: crate::config::ActionKind::Disconnect,
                exceeded: true,
                judged: false,
            }],
            ..snap
        };
        let text = render(&snap, &Holder::Running("7".into()), now, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[2].ends_with("applied [disconnect by monthly] [link held down]"),
            "{}",
            lines[2]
        );
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("INSTANCE  RULE"), "{}", lines[4]);
        let cells: Vec<&str> = lines[5]
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells,
            vec![
                "101",
                "monthly",
                "1.20 TB",
                "1.00 TB",
                "120.0%",
                "disconnect",
                "EXCEEDED",
                "1h 00m"
            ]
        );
    }
}
