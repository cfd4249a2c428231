//! The agent process: one per host, reload, corrupt state, signals.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{AgentProc, Netns, eventually, sluice_bin};

fn config_text(run: &std::path::Path, interval: &str) -> String {
    format!(
        "[agent]\ninterval = \"{interval}\"\ninterfaces = ['^kvm(?P<instance>[0-9]+)\\..*$']\nbackend = \"none\"\nstate_dir = \"{0}\"\ndata_dir = \"{0}/lib\"\n[log]\ndir = \"\"\n[penalty]\nbase_rate = \"100mbit\"\n",
        run.display()
    )
}

/// `sluice agent` run in `ns` to its end (for agents that must refuse to start).
fn agent_once(ns: &Netns, config: &std::path::Path) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(sluice_bin())
        .args(["agent", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn lock_reload_corrupt_state_and_sigterm() {
    let ns = Netns::new("lc");
    ns.add_cheap_links(&["kvm5.0".to_owned()]);
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // A corrupt state file from a previous life: moved aside, not fatal.
    std::fs::write(run.join("state.json"), b"{\"version\":1, trunc").unwrap();
    let config = tmp.path().join("sluice.toml");
    std::fs::write(&config, config_text(&run, "1s")).unwrap();

    let agent = AgentProc::start(&ns, &config, tmp.path().join("agent.log"));
    let snap = eventually(Duration::from_secs(10), "a fresh state file", || {
        sluice::state::read(&run.join("state.json")).ok().flatten()
    });
    assert_eq!(snap.pid, agent.pid() as u32);
    assert_eq!(snap.backend, "none");
    assert_eq!(snap.interfaces.len(), 1);
    assert_eq!(
        snap.interfaces[0].enforcement.as_ref().unwrap().label(),
        "observe"
    );
    let aside: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "corrupt file moved aside");
    assert_eq!(
        std::fs::read(run.join(&aside[0])).unwrap(),
        b"{\"version\":1, trunc"
    );
    assert!(
        agent.log().contains("state file is corrupt"),
        "{}",
        agent.log()
    );

    // A second agent is refused by the lock, naming the holder.
    let second = agent_once(&ns, &config);
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!("another sluice process (pid {})", agent.pid())),
        "{err}"
    );

    // SIGHUP with a broken config: the old one keeps running, and the log says why.
    std::fs::write(&config, "[agent]\ninterval = \"never\"\n").unwrap();
    agent.signal(libc::SIGHUP);
    eventually(Duration::from_secs(5), "reload failure logged", || {
        agent
            .log()
            .contains("reload failed, keeping the running config")
            .then_some(())
    });
    assert!(
        agent.log().contains("agent.interval"),
        "the error names the field:\n{}",
        agent.log()
    );
    // The running config, as the tick loop answers it (an idle host's state file is not
    // rewritten, so only the live answer shows what is in force): still the old one.
    support::http::wait_healthy(&ns, 9477, Duration::from_secs(10));
    let status = support::http::get_json(&ns, 9477, "/v1/status");
    assert_eq!(status["interval_secs"], 1, "{status}");

    // SIGHUP with a good, changed config: taken.
    std::fs::write(&config, config_text(&run, "2s")).unwrap();
    agent.signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), "new interval in the state", || {
        let s = sluice::state::read(&run.join("state.json"))
            .ok()
            .flatten()?;
        (s.interval_secs == 2).then_some(())
    });
    assert!(agent.log().contains("configuration reloaded"));
    let status = support::http::get_json(&ns, 9477, "/v1/status");
    assert_eq!(status["interval_secs"], 2, "{status}");

    // `list` asks the lock whether the agent runs (an idle host's state is not rewritten,
    // so its age cannot tell).
    let list = Command::new(sluice_bin())
        .args(["list", "--state-dir"])
        .arg(&run)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        text.starts_with(&format!("agent running (pid {})", agent.pid())),
        "{text}"
    );

    // SIGTERM: exit 0, state left for `list`.
    assert_eq!(agent.stop(), Some(0));
    let list = Command::new(sluice_bin())
        .args(["list", "--state-dir"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.starts_with("agent NOT running"), "{text}");
    assert!(
        text.lines()
            .nth(2)
            .is_some_and(|l| l.starts_with("kvm5.0") && l.contains("observe")),
        "{text}"
    );
}

/// Killed by pid if the test fails half-way.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agent run as systemd runs a `Type=notify` unit with `WatchdogSec=2`: the test
/// plays systemd, owning the NOTIFY_SOCKET datagram socket it returns.
fn notifying_agent(
    tag: &str,
    interval: &str,
    env: &[(&str, &str)],
) -> (
    Netns,
    tempfile::TempDir,
    std::os::unix::net::UnixDatagram,
    Child,
) {
    let ns = Netns::new(tag);
    ns.add_cheap_links(&["kvm9.0".to_owned(), "kvm9.1".to_owned()]);
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let config = tmp.path().join("sluice.toml");
    std::fs::write(&config, config_text(&run, interval)).unwrap();
    let socket_path = tmp.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let log = std::fs::File::create(tmp.path().join("agent.log")).unwrap();
    let child = Child(
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(sluice_bin())
            .args(["agent", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "2000000")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    (ns, tmp, socket, child)
}

/// systemd's notify protocol, as `Type=notify` with `WatchdogSec=` sees it: READY=1 and a
/// STATUS= line after the first tick, WATCHDOG=1 from the loop between ticks, STOPPING=1
/// on SIGTERM.
#[test]
fn it_tells_systemd_ready_status_and_pets_the_watchdog() {
    // Ticks every 30 s: the pets seen below come from the loop, not from ticks.
    let (_ns, _tmp, socket, mut child) = notifying_agent("sd", "30s", &[]);
    let mut buf = [0u8; 4096];
    let mut recv = || {
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.contains("READY=1"), "{first:?}");
    assert!(
        first.contains(
            "STATUS=2 interfaces, 0 penalised, 0 quotas exceeded, 0 enforce failures; last tick"
        ),
        "{first:?}"
    );
    // A pet every half watchdog period (1 s), with no tick in between: each gap must be
    // inside the 2 s systemd allows, and the loop must not spin.
    // (when, whether a tick sent it): a tick's notification carries STATUS= too.
    let mut at = vec![(std::time::Instant::now(), true)];
    for _ in 0..3 {
        // Ticks fall on the interval's boundaries, so one may land here: it pets too.
        let m = recv();
        assert!(m.lines().any(|l| l == "WATCHDOG=1"), "{m:?}");
        at.push((std::time::Instant::now(), m.contains("STATUS=")));
    }
    let gaps: Vec<(Duration, bool)> = at
        .windows(2)
        .skip(1)
        .map(|w| (w[1].0 - w[0].0, w[0].1 || w[1].1))
        .collect();
    // Every gap inside the watchdog; between two of the loop's own pets, about 1 s (a
    // tick's pet may come at any moment between them).
    assert!(
        gaps.iter()
            .all(|(g, tick)| *g < Duration::from_secs(2)
                && (*tick || *g >= Duration::from_millis(500))),
        "pets 1 s apart, inside the 2 s watchdog: {gaps:?}"
    );
    // SIGTERM: STOPPING=1, then a clean exit.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let stopping = (0..5).map(|_| recv()).find(|m| m.contains("STOPPING=1"));
    assert!(stopping.is_some());
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

/// A tick that hangs (the `hang-tick` crash point, at the third tick) stops the pets:
/// the loop pets only between ticks it finished, so systemd's watchdog sees the
/// silence and restarts the agent, although the process is still there.
#[test]
fn a_hung_tick_stops_the_watchdog() {
    let (_ns, _tmp, socket, mut child) =
        notifying_agent("sh", "1s", &[("SLUICE_CRASH_AT", "hang-tick@3")]);
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.contains("READY=1"), "{first:?}");
    // Twice the watchdog period without a word is what systemd acts on.
    socket
        .set_read_timeout(Some(Duration::from_secs(4)))
        .unwrap();
    let mut pets = 0;
    let silence = loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                pets += usize::from(m.contains("WATCHDOG=1"));
                assert!(pets < 20, "still petting: the tick never hung ({m:?})");
            }
            // A signal to the test process (another test's child exiting) is not silence.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            silence.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{silence}"
    );
    assert!(pets >= 1, "the loop petted before the hung tick");
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the agent is hung, not dead: only the watchdog can tell"
    );
}

/// A listen port that cannot be bound is logged, naming the field and the address, and
/// the agent carries on enforcing without its API (as the README says); and `/healthz`
/// answers 503 "starting" while the first tick has not finished (held there by the
/// `hang-tick` crash point at the first tick).
#[test]
fn an_unbindable_port_is_logged_and_healthz_is_503_before_the_first_tick() {
    let ns = Netns::new("lp");
    ns.add_cheap_links(&["kvm7.0".to_owned()]);
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let config = tmp.path().join("sluice.toml");
    // Someone else holds the port.
    let taken = ns.run(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let port = taken.local_addr().unwrap().port();
    std::fs::write(
        &config,
        config_text(&run, "1s").replace("[log]", &format!("listen = \"127.0.0.1:{port}\"\n[log]")),
    )
    .unwrap();
    let agent = AgentProc::start(&ns, &config, tmp.path().join("agent1.log"));
    let snap = eventually(Duration::from_secs(10), "the agent ticks anyway", || {
        sluice::state::read(&run.join("state.json"))
            .ok()
            .flatten()
            .filter(|s| s.pid == agent.pid() as u32)
    });
    assert_eq!(snap.interfaces.len(), 1);
    let log = agent.log();
    assert!(
        log.contains(&format!(
            "agent.listen 127.0.0.1:{port}: Address already in use"
        )) && log.contains("runs without its HTTP API"),
        "{log}"
    );
    assert_eq!(agent.stop(), Some(0));
    drop(taken);

    std::fs::write(&config, config_text(&run, "1s")).unwrap();
    let agent = support::AgentProc::start_with_env(
        &ns,
        &config,
        tmp.path().join("agent2.log"),
        &[("SLUICE_CRASH_AT", "hang-tick@1")],
    );
    eventually(Duration::from_secs(10), "the API listening", || {
        ns.run(|| std::net::TcpStream::connect(("127.0.0.1", 9477)).is_ok())
            .then_some(())
    });
    let (code, body) = support::http::request(&ns, 9477, "GET", "/healthz", None);
    assert_eq!(code, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "starting", "{body}");
    drop(agent);
}

/// A flood of API reads does not cost a tick: every interval boundary inside the
/// flood's window is ticked (counted by `/metrics`' tick histogram).
#[test]
fn ticks_keep_their_boundaries_under_an_api_flood() {
    let ns = Netns::new("fl");
    ns.add_cheap_links(&["kvm8.0".to_owned()]);
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let config = tmp.path().join("sluice.toml");
    std::fs::write(&config, config_text(&run, "1s")).unwrap();
    let agent = AgentProc::start(&ns, &config, tmp.path().join("agent.log"));
    support::http::wait_healthy(&ns, 9477, Duration::from_secs(15));
    let ticks = || -> u64 {
        let (_, text) = support::http::request(&ns, 9477, "GET", "/metrics", None);
        text.lines()
            .find_map(|l| l.strip_prefix("sluice_tick_duration_seconds_count "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no tick count in /metrics:\n{text}")) as u64
    };
    let before = ticks();
    let started = std::time::Instant::now();
    let answered = ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = support::store::http_client();
            let until = std::time::Instant::now() + Duration::from_secs(5);
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let client = client.clone();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while std::time::Instant::now() < until {
                        if let Ok(r) = client.get("http://127.0.0.1:9477/v1/status").send().await
                            && r.bytes().await.is_ok()
                        {
                            n += 1;
                        }
                    }
                    n
                }));
            }
            let mut n = 0;
            for t in tasks {
                n += t.await.unwrap();
            }
            n
        })
    });
    let elapsed = started.elapsed().as_secs_f64();
    let after = ticks();
    eprintln!(
        "{answered} answers in {elapsed:.1} s ({:.0}/s), {} ticks",
        answered as f64 / elapsed,
        after - before
    );
    assert!(answered > 1000, "a flood: {answered} answers");
    assert!(
        after - before >= elapsed.floor() as u64 - 1,
        "{} ticks in {elapsed:.1} s under {answered} API reads",
        after - before
    );
    assert_eq!(agent.stop(), Some(0));
}

/// A state or data directory every user may write to is refused at start, naming it:
/// anyone could swap the state, the ledger or the lock the agent then trusts.
#[test]
fn a_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let ns = Netns::new("wd");
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(run.join("lib")).unwrap();
    std::fs::set_permissions(run.join("lib"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = tmp.path().join("sluice.toml");
    std::fs::write(&config, config_text(&run, "1s")).unwrap();
    let out = agent_once(&ns, &config);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot use the directory {}",
            run.join("lib").display()
        )) && err.contains("every user may write to it (mode 777)"),
        "{err}"
    );
}
