//! The CLI as an operator runs it: exit codes and what is printed.

mod support;

use std::process::{Command, Output};

use support::sluice_bin;

fn sluice(args: &[&str]) -> Output {
    Command::new(sluice_bin()).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sluice simulate` with the example config (the seed policy, 60 s interval).
fn simulate_example(trace: &std::path::Path) -> Output {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sluice.example.toml");
    sluice(&[
        "simulate",
        "--config",
        example,
        "--trace",
        trace.to_str().unwrap(),
    ])
}

/// Write `content` to `name` in a fresh temp dir (kept alive by the returned guard).
fn file(name: &str, content: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    (dir, path)
}

#[test]
fn check_accepts_the_example_and_prints_a_summary() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sluice.example.toml");
    let out = sluice(&["check", "--config", example]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ok: "));
    assert!(
        stdout.contains("stage 1: upload ≥ 90% of base for 15m → limit 90% of base for 30m"),
        "{stdout}"
    );
    assert!(stdout.contains("stage 2: upload ≥ 80% of base for 30m → limit 80% of base for 1h"));
}

/// On a host whose hypervisor has a source the config does not list, check says so.
#[test]
fn check_suggests_the_source_of_a_hypervisor_it_finds() {
    let pve = tempfile::tempdir().unwrap();
    std::fs::create_dir(pve.path().join("qemu-server")).unwrap();
    let missing = pve.path().join("no-libvirt");
    let config = |sources: &str| {
        format!(
            "[agent]\ninterfaces=['^tap(?P<instance>[0-9]+)i[0-9]+$']\ninstances_dir='{d}/none'\n[penalty]\nbase_rate='1mbit'\n\
             [inventory]\nsources=[{sources}]\nproxmox.config_dir='{d}'\nlibvirt.status_dir='{m}'\n",
            d = pve.path().display(),
            m = missing.display()
        )
    };
    let (_a, names_only) = file("a.toml", &config("'names'"));
    let out = sluice(&["check", "--config", names_only.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("  inventory: names (refresh at least every 1m)"),
        "{stdout}"
    );
    let hint = format!(
        "  hint: {}/qemu-server exists: add \"proxmox\" to inventory.sources",
        pve.path().display()
    );
    assert!(stdout.contains(&hint), "{stdout}");
    assert!(!stdout.contains("no-libvirt"), "no libvirt here: {stdout}");
    let (_b, listed) = file("b.toml", &config("'proxmox', 'names'"));
    let stdout = text(&sluice(&["check", "--config", listed.to_str().unwrap()]).stdout);
    assert!(stdout.contains("  inventory: proxmox, names"), "{stdout}");
    assert!(!stdout.contains("hint:"), "{stdout}");
}

#[test]
fn check_reports_every_problem_with_file_and_field() {
    let (_dir, path) = file(
        "bad.toml",
        "[agent]\ninterval=\"0s\"\ninterfaces=['(']\n[penalty]\nbase_rate=\"1mbit\"\n[[penalty.stage]]\nusage=0.9\ntrigger=\"1m\"\nrate=1.5\nduration=\"1m\"\n",
    );
    let out = sluice(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let p = path.display();
    assert!(
        err.contains(&format!("{p}: agent.interval: must be at least 1s")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}: agent.interfaces[1]: invalid regex")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}: penalty.stage[1].rate: must be in (0, 1], got 1.5"
        )),
        "{err}"
    );
    assert!(err.starts_with(&format!("{p}: 3 problems")), "{err}");

    let missing = sluice(&["check", "--config", "/nonexistent/sluice.toml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("/nonexistent/sluice.toml: cannot read"));
}

#[test]
fn check_warns_about_unreachable_stages_but_passes() {
    let (_dir, path) = file(
        "warn.toml",
        "[agent]\ninterfaces=['^kvm']\n[penalty]\nbase_rate=\"1gbit\"\n[[penalty.stage]]\nusage=0.9\ntrigger=\"1m\"\nrate=0.9\nduration=\"5m\"\n[[penalty.stage]]\nusage=0.8\ntrigger=\"10m\"\nrate=0.5\nduration=\"1h\"\n",
    );
    let out = sluice(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("warning:")
            && text(&out.stderr).contains("penalty.stage[2].trigger")
    );
}

#[test]
fn simulate_prints_the_worked_example() {
    // 95 % of 1 Gbit/s upload on one tap, sampled every 60 s; a quiet one beside it.
    let mut csv = String::from("time,interface,rx_bytes,tx_bytes\n");
    let per_minute: u64 = 1_000_000_000 / 8 * 95 / 100 * 60;
    for (i, t) in (0..=7200u64).step_by(60).enumerate() {
        csv.push_str(&format!(
            "{t},kvm101.0,{},{}\n",
            per_minute * i as u64,
            i * 100
        ));
        csv.push_str(&format!("{t},kvm102.0,{},0\n", i * 1000));
    }
    let (_dir, trace) = file("trace.csv", &csv);
    let out = simulate_example(&trace);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(u64, u64, u64, u64)> = events
        .iter()
        .filter(|e| e["event"] == "stage")
        .map(|e| {
            (
                e["time"].as_u64().unwrap(),
                e["from"].as_u64().unwrap(),
                e["to"].as_u64().unwrap(),
                e["upload_limit_kbps"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (900, 0, 1, 900_000),
            (2700, 1, 2, 800_000),
            (6300, 2, 0, 1_000_000),
            (7200, 0, 1, 900_000)
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e["interface"] == "kvm101.0" && e["instance"] == "101")
    );
    // The documented shape, field order included.
    let first = text(&out.stdout).lines().next().unwrap().to_owned();
    assert!(
        first.starts_with(r#"{"time":900,"interface":"kvm101.0","instance":"101","event":"stage","from":0,"to":1,"upload_limit_kbps":900000"#),
        "{first}"
    );
}

#[test]
fn simulate_warns_when_the_trace_is_coarser_than_the_interval() {
    // Samples every 300 s against the example's 60 s interval: every interval is a gap.
    let mut csv = String::from("time,interface,rx_bytes,tx_bytes\n");
    for i in 0..10u64 {
        csv.push_str(&format!("{},kvm101.0,{},0\n", i * 300, i * 35_000_000_000));
    }
    let (_dir, trace) = file("coarse.csv", &csv);
    let out = simulate_example(&trace);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).is_empty(),
        "no stage can trigger across gaps"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: 9 of 10 ticks came more than 2 × agent.interval (60s)"),
        "{err}"
    );
}

#[test]
fn simulate_names_the_bad_line() {
    let (_dir, trace) = file(
        "bad.csv",
        "time,interface,rx_bytes,tx_bytes\n0,kvm1.0,0,0\n60,kvm1.0,lots,0\n",
    );
    let out = simulate_example(&trace);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.csv") && err.contains("line 3: rx_bytes: \"lots\""),
        "{err}"
    );
}

#[test]
fn list_without_state_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = sluice(&["list", "--state-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no state at"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(dir.path().join("state.json"), "{}").unwrap();
    let out = sluice(&["list", "--state-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a sluice state file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn simulate_replays_rules_across_a_reset_in_the_rules_time_zone() {
    // A daily 1 GB upload rule in Kolkata (+05:30): its day ends at 18:30 UTC. 100 MB a
    // minute from 18:00 UTC: over the limit at 18:11, restored at 18:30 sharp, and the
    // new day's 1.0 GB by 18:40 is exactly the limit, not over it.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        r#"
[agent]
interval = "60s"
interfaces = ['^kvm(?P<instance>[0-9]+)\..*$']
[penalty]
base_rate = "1000mbit"
[[rule]]
name = "daily"
period = "day"
timezone = "Asia/Kolkata"
direction = "upload"
limit = "1GB"
notify_at = [0.5]
action = "rate_limit"
rate = "10mbit"
"#,
    )
    .unwrap();
    let start = 1_763_920_800u64; // 2026-11-23T18:00:00Z
    let mut csv = String::from("time,interface,rx_bytes,tx_bytes\n");
    for k in 0..=40u64 {
        csv.push_str(&format!(
            "{},kvm101.0,{},0\n",
            start + 60 * k,
            k * 100_000_000
        ));
    }
    let trace = dir.path().join("trace.csv");
    std::fs::write(&trace, csv).unwrap();
    let out = sluice(&[
        "simulate",
        "--config",
        config.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rule_events: Vec<(u64, String, u64)> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "rule")
        .map(|e| {
            assert_eq!(
                (e["rule"].as_str(), e["instance"].as_str()),
                (Some("daily"), Some("101"))
            );
            (
                e["time"].as_u64().unwrap(),
                e["state"].as_str().unwrap().to_owned(),
                e["used_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rule_events,
        vec![
            (start + 5 * 60, "threshold".into(), 500_000_000),
            (start + 11 * 60, "exceeded".into(), 1_100_000_000),
            (start + 30 * 60, "restored".into(), 3_000_000_000),
            (start + 35 * 60, "threshold".into(), 500_000_000),
        ]
    );
    let first = text(&out.stdout)
        .lines()
        .find(|l| l.contains("exceeded"))
        .unwrap()
        .to_owned();
    assert!(
        first.starts_with(r#"{"time":1763921460,"event":"rule","rule":"daily","instance":"101","state":"exceeded","action":"rate_limit""#),
        "{first}"
    );
    assert!(
        text(&out.stderr).contains("4 rule events"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_shows_rules_and_fails_on_a_bad_drop_in() {
    let dir = tempfile::tempdir().unwrap();
    let drop_ins = dir.path().join("instances.d");
    std::fs::create_dir(&drop_ins).unwrap();
    std::fs::write(
        drop_ins.join("panel.toml"),
        "[instances.\"7\"]\nbase_rate = \"fast\"\n",
    )
    .unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ninterfaces = ['x']\ninstances_dir = \"{}\"\n[penalty]\nbase_rate = \"1gbit\"\n\
             [[rule]]\nname = \"daily\"\nperiod = \"day\"\ntimezone = \"Asia/Kolkata\"\nlimit = \"1TB\"\n\
             action = \"disconnect\"\nexclude = [\"9\"]\n",
            drop_ins.display()
        ),
    )
    .unwrap();
    let out = sluice(&["check", "--config", config.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.contains("rule daily: 1TB both per day (Asia/Kolkata) → disconnect; covers every instance except 9"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stderr.contains("panel.toml") && stderr.contains("instances.\"7\".base_rate"),
        "{stderr}"
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_itself() {
    let bash = sluice(&["completions", "bash"]);
    assert!(bash.status.success());
    let script = text(&bash.stdout);
    // Every subcommand is completed, and the script is valid bash.
    for sub in [
        "agent",
        "list",
        "check",
        "usage",
        "events",
        "store",
        "completions",
    ] {
        assert!(script.contains(sub), "bash completion lacks {sub}");
    }
    let (_dir, path) = file("sluice.bash", &script);
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));
    for shell in ["zsh", "fish"] {
        let out = sluice(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        assert!(text(&out.stdout).contains("store"), "{shell}");
    }
    let bad = sluice(&["completions", "tcsh"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("tcsh"), "{}", text(&bad.stderr));
    // The man page is roff that man(1) renders, section 8, naming the commands.
    let page = sluice(&["manpage"]);
    assert!(page.status.success());
    let roff = text(&page.stdout);
    assert!(roff.contains(".TH sluice 8"), "{roff}");
    let (_dir, path) = file("sluice.8", &roff);
    let shown = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(&path)
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let shown = text(&shown.stdout);
    assert!(
        shown.contains("SYNOPSIS") && shown.contains("sluice-store(8)"),
        "{shown}"
    );
    // Every page a package ships, the subcommands' included.
    let dir = tempfile::tempdir().unwrap();
    let all = sluice(&["manpage", "--dir", dir.path().to_str().unwrap()]);
    assert!(all.status.success(), "{}", text(&all.stderr));
    for page in [
        "sluice.8",
        "sluice-agent.8",
        "sluice-store.8",
        "sluice-store-token-create.8",
    ] {
        let roff = std::fs::read_to_string(dir.path().join(page)).unwrap_or_default();
        assert!(roff.contains(".TH sluice"), "{page} missing or not roff");
    }
}

#[test]
fn list_watch_redraws_until_stopped_and_colours_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("state.json"),
        r#"{"version":1,"written_at":"2026-11-24T08:00:00Z","pid":4242,"backend":"tc","interval_secs":1,
            "interfaces":[{"interface":"tap7i0","instance":"7","present":true,"stage":1,
            "until":"2099-01-01T00:00:00Z","reason":{"kind":"penalty","stage":1},"upload_limit_kbps":5000}],
            "quotas":[]}"#,
    )
    .unwrap();
    let state_dir = dir.path().to_str().unwrap();
    // Not a terminal: no colour unless asked; --color always paints the penalised row.
    let plain = text(&sluice(&["list", "--state-dir", state_dir]).stdout);
    assert!(
        plain.contains("tap7i0") && !plain.contains('\x1b'),
        "{plain}"
    );
    let out = sluice(&["list", "--color", "always", "--state-dir", state_dir]);
    let coloured = text(&out.stdout);
    assert!(coloured.contains("\x1b[33mtap7i0"), "{coloured:?}");
    assert_eq!(
        sluice(&["list", "--watch", "--json", "--state-dir", state_dir])
            .status
            .code(),
        Some(2),
        "--watch and --json do not mix"
    );

    let mut child = Command::new(sluice_bin())
        .args([
            "list",
            "--watch",
            "--every",
            "300ms",
            "--state-dir",
            state_dir,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Each redraw, timed as it arrives: three must come, each about 300 ms after the
    // one before (not all at once, not stalled), each with the table.
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 8192];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0
                || tx
                    .send((std::time::Instant::now(), buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    });
    let header = "every 300ms (Ctrl-C to stop)";
    let (mut screens, mut draws) = (String::new(), Vec::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while draws.len() < 4 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (at, bytes) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("only {} redraws in 10 s:\n{screens}", draws.len()));
        screens.push_str(&String::from_utf8_lossy(&bytes));
        while draws.len() < screens.matches(header).count() {
            draws.push(at);
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    let gaps: Vec<u128> = draws
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert!(
        gaps.iter().all(|g| (200..=1500).contains(g)),
        "redraws every 300 ms, measured gaps {gaps:?} ms"
    );
    assert!(
        screens.matches("tap7i0").count() >= draws.len(),
        "{screens}"
    );
}

/// Durations and times that would overflow a clock are refused with the field named,
/// by the real binary, instead of passing `check` and panicking later (a crash loop
/// under systemd).
#[test]
fn durations_and_trace_times_past_the_clocks_are_refused() {
    let (_d, config) = file(
        "sluice.toml",
        "[agent]\ninterval = \"500000000000y\"\ninterfaces = ['^kvm(?P<instance>[0-9]+)$']\n[penalty]\nbase_rate = \"1mbit\"\n",
    );
    let out = sluice(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("agent.interval: must be at most 100 years"),
        "{}",
        text(&out.stderr)
    );
    let (_t, trace) = file(
        "trace.csv",
        "time,interface,rx_bytes,tx_bytes\n0,kvm1.0,0,0\n1e20,kvm1.0,5,5\n",
    );
    let out = simulate_example(&trace);
    assert_ne!(
        out.status.code(),
        Some(101),
        "a panic: {}",
        text(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("line 3: time: 100000000000000000000 is past the year 9999"),
        "{}",
        text(&out.stderr)
    );
}

/// A config that every user can read and that holds a secret earns a warning naming the
/// field; at mode 640 it does not.
#[test]
fn check_warns_of_a_world_readable_secret() {
    use std::os::unix::fs::PermissionsExt;
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/sluice.example.toml"
    ))
    .unwrap();
    let (_d, config) = file(
        "sluice.toml",
        &format!(
            "{example}\n[[webhook]]\nurl = \"http://hook:pa55@127.0.0.1:1/hook?token=t0ken\"\nsecret = \"s3cret\"\n"
        ),
    );
    for (mode, warned) in [(0o644, true), (0o640, false)] {
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = sluice(&["check", "--config", config.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(
            all.contains("webhook[1].secret") && all.contains("is readable by every user"),
            warned,
            "mode {mode:o}:\n{all}"
        );
        // The URL is shown without its password or query.
        assert!(
            all.contains("http://hook:***@127.0.0.1:1/hook?***"),
            "{all}"
        );
        assert!(!all.contains("pa55") && !all.contains("t0ken"), "{all}");
    }
}

/// Output piped into a reader that is gone (`sluice check | head -1`) ends the command
/// quietly, as Unix tools do, instead of a panic on EPIPE.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sluice.example.toml");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(sluice_bin())
        .args(["check", "--config", example])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}
