//! The agent end to end on a real Open vSwitch (userspace datapath) with real traffic:
//! penalty in and out, reconcile, kernel verification, restart.

mod support;

use std::path::Path;
use std::time::Duration;

use sluice::state::{self, InterfaceRecord, Snapshot};
use support::{AgentProc, Netns, Ovs, eventually, send_udp, veth};

fn record<'a>(snap: &'a Snapshot, name: &str) -> Option<&'a InterfaceRecord> {
    snap.interfaces
        .iter()
        .find(|r| r.interface.as_str() == name)
}

fn read_state(dir: &Path) -> Option<Snapshot> {
    state::read(&dir.join("state.json")).ok().flatten()
}

/// Does the kernel (asked with the tc tool, independently of sluice) hold a filter on the
/// interface's ingress?
/// The filters `tc` shows on `dev`'s ingress (its exit status checked).
fn ingress_filters(ns: &Netns, dev: &str) -> String {
    ns.exec("tc", &["filter", "show", "dev", dev, "ingress"])
}

/// The agent's config on the ovs backend and `db`: one-second ticks, watching
/// `<prefix><instance>.<n>`, a 10 Mbit base rate; `agent` adds lines to `[agent]` and
/// `rest` follows `[penalty]`'s base rate.
fn ovs_config(prefix: &str, db: &str, run: &Path, agent: &str, rest: &str) -> String {
    format!(
        r#"
[agent]
interval = "1s"
interfaces = ['^{prefix}(?P<instance>[0-9]+)\..*$']
backend = "ovs"
ovsdb = "{db}"
state_dir = "{run}"
data_dir = "{run}/lib"
{agent}
[log]
dir = ""
[penalty]
base_rate = "10mbit"
{rest}"#,
        run = run.display()
    )
}

#[test]
fn penalty_cycle_on_real_ovs() {
    let host = Netns::new("oh");
    let inst = Netns::new("oi");
    let link = veth(&host, "kvm101.0", &inst, "eth0", 11);
    let ovs = Ovs::start(&host);
    ovs.add_port("kvm101.0");
    assert_eq!(ovs.policing("kvm101.0"), (0, 0));

    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let config = tmp.path().join("sluice.toml");
    std::fs::write(
        &config,
        ovs_config(
            "kvm",
            &ovs.db,
            &run,
            "",
            "[[penalty.stage]]\nusage = 0.5\ntrigger = \"3s\"\nrate = 0.5\nduration = \"12s\"",
        ),
    )
    .unwrap();

    let agent = AgentProc::start(&host, &config, tmp.path().join("agent1.log"));
    // Stage 0 holds the base rate: 10 Mbit = 10000 kbit/s, burst 2000 kbit (the floor).
    eventually(Duration::from_secs(15), "base rate in OVSDB", || {
        (ovs.policing("kvm101.0") == (10_000, 2_000)).then_some(())
    });

    // The kernel check: sluice must agree with what tc shows on the ingress.
    let rec = eventually(
        Duration::from_secs(10),
        "a verified enforcement status",
        || {
            let snap = read_state(&run)?;
            let r = record(&snap, "kvm101.0")?.clone();
            let settled = r
                .enforcement
                .as_ref()
                .is_some_and(|e| e.label() != "pending");
            settled.then_some(r)
        },
    );
    let label = rec.enforcement.as_ref().unwrap().label();
    eprintln!(
        "kernel verification on this host: {label} ({:?})",
        rec.enforcement
    );
    let can_police = support::kernel_can_police();
    eprintln!("kernel can police ingress: {can_police}");
    if can_police {
        assert_eq!(label, "applied", "{rec:?}");
        let filters = ingress_filters(&host, "kvm101.0");
        assert!(filters.contains("police"), "{filters}");
    } else {
        assert_eq!(ingress_filters(&host, "kvm101.0").trim(), "");
        // This build machine's kernel has no tc police action: OVS takes the value, the
        // kernel holds nothing, and sluice says so.
        assert_eq!(label, "enforce_failed", "{rec:?}");
        let list = std::process::Command::new(support::sluice_bin())
            .args(["list", "--state-dir"])
            .arg(&run)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&list.stdout);
        assert!(
            text.lines()
                .any(|l| l.starts_with("kvm101.0") && l.contains("enforce_failed")),
            "{text}"
        );
        assert!(
            agent.log().contains("enforce_failed"),
            "the log says it too"
        );
    }

    // Upload at ~8 Mbit/s (≥ 0.5 × 10 Mbit) for up to 8 s: stage 1 after the 3 s trigger.
    let sender = {
        let (inst, dst) = (inst.name.clone(), link.a_ip);
        std::thread::spawn(move || {
            send_udp(&inst, dst, 1200, 10_000, 8_000_000, Duration::from_secs(8))
        })
    };
    let rec = eventually(Duration::from_secs(12), "stage 1", || {
        let snap = read_state(&run)?;
        record(&snap, "kvm101.0").filter(|r| r.stage == 1).cloned()
    });
    assert_eq!(rec.upload_limit_kbps, Some(5_000));
    assert_eq!(rec.instance.as_str(), "101");
    eventually(Duration::from_secs(5), "stage 1 limit in OVSDB", || {
        (ovs.policing("kvm101.0") == (5_000, 2_000)).then_some(())
    });
    assert!(
        agent.log().contains("stage 0 -> 1"),
        "one log line per stage change:\n{}",
        agent.log()
    );
    assert!(sender.join().unwrap() > 1000);
    if can_police {
        // The policer slows real traffic: 10 Mbit offered for 2 s, about 5 Mbit (plus
        // the 2000 kbit burst) arrives where the host receives it, after tc's ingress.
        // (Not run on this build machine's kernel: it has no police action.)
        let sink = support::receive_udp(
            &host.name,
            std::net::SocketAddrV4::new(link.a_ip, 9),
            Duration::from_secs(2),
        );
        let sent = send_udp(
            &inst.name,
            link.a_ip,
            1200,
            10_000,
            10_000_000,
            Duration::from_secs(2),
        );
        let (bytes, _) = sink.join().unwrap();
        let wire_bits = (bytes / 1200) * (1200 + support::UDP_FRAME_OVERHEAD) * 8;
        let offered_bits = sent * (1200 + support::UDP_FRAME_OVERHEAD) * 8;
        eprintln!("policed at 5 Mbit: {wire_bits} of {offered_bits} bits offered arrived in 2 s");
        assert!(
            wire_bits as f64 <= (5e6 * 2.0 + 2e6) * 1.1,
            "the 5 Mbit policer let {wire_bits} bits through in 2 s"
        );
        assert!(wire_bits as f64 >= 5e6 * 2.0 * 0.6, "{wire_bits} bits");
    }

    // Someone changes the rate by hand: set back within a tick or two.
    ovs.vsctl(&[
        "--no-wait",
        "set",
        "interface",
        "kvm101.0",
        "ingress_policing_rate=1234",
    ]);
    eventually(Duration::from_secs(5), "hand edit reconciled", || {
        (ovs.policing("kvm101.0") == (5_000, 2_000)).then_some(())
    });

    // Restart: SIGTERM exits 0 leaving the limit; the new agent keeps the penalty.
    assert_eq!(agent.stop(), Some(0));
    assert_eq!(
        ovs.policing("kvm101.0"),
        (5_000, 2_000),
        "limits stay in place over a restart"
    );
    let saved = record(&read_state(&run).unwrap(), "kvm101.0")
        .unwrap()
        .clone();
    assert_eq!(saved.stage, 1);
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent2.log"));
    eventually(Duration::from_secs(10), "restored state written", || {
        let snap = read_state(&run)?;
        (snap.pid == agent.pid() as u32).then_some(())
    });
    let after = record(&read_state(&run).unwrap(), "kvm101.0")
        .unwrap()
        .clone();
    assert_eq!(
        (after.stage, after.until),
        (1, saved.until),
        "same penalty, same expiry"
    );
    assert_eq!(ovs.policing("kvm101.0"), (5_000, 2_000));

    // The penalty ends on its wall-clock expiry: back to the base rate.
    eventually(Duration::from_secs(20), "back to stage 0", || {
        let snap = read_state(&run)?;
        record(&snap, "kvm101.0")
            .filter(|r| r.stage == 0)
            .map(|_| ())
    });
    eventually(
        Duration::from_secs(5),
        "base rate restored in OVSDB",
        || (ovs.policing("kvm101.0") == (10_000, 2_000)).then_some(()),
    );
    assert!(agent.log().contains("stage 1 -> 0"));

    // The interface leaves the config (SIGHUP with a pattern that no longer matches it):
    // the policing sluice set — marked in external_ids — is cleared, mark and all.
    assert!(
        ovs.vsctl(&["get", "interface", "kvm101.0", "external_ids"])
            .contains("sluice"),
        "sluice marks the rows it limits"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(r"'^kvm(?P<instance>[0-9]+)\..*$'", "'^nothing-matches$'"),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "policing cleared when the interface leaves the config",
        || (ovs.policing("kvm101.0") == (0, 0)).then_some(()),
    );
    assert!(
        !ovs.vsctl(&["get", "interface", "kvm101.0", "external_ids"])
            .contains("sluice")
    );
    assert_eq!(agent.stop(), Some(0));
}

/// The native OVSDB session (the default client): no process started in steady state,
/// a hand edit put back within a tick, and an ovsdb-server restarted under the running
/// agent reconnected to and converged on.
#[test]
fn native_session_forks_nothing_and_survives_a_database_restart() {
    let host = Netns::new("onh");
    let inst = Netns::new("oni");
    let _link = veth(&host, "kvm102.0", &inst, "eth0", 12);
    let mut ovs = Ovs::start(&host);
    ovs.add_port("kvm102.0");

    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // Any ovs-vsctl the agent ran would leave a line here.
    let calls = tmp.path().join("vsctl-calls");
    let wrapper = tmp.path().join("counting-vsctl");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec ovs-vsctl \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let config = tmp.path().join("sluice.toml");
    std::fs::write(
        &config,
        ovs_config(
            "kvm",
            &ovs.db,
            &run,
            &format!("ovs_vsctl = \"{wrapper}\"", wrapper = wrapper.display()),
            "",
        ),
    )
    .unwrap();
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent.log"));
    eventually(Duration::from_secs(15), "base rate in OVSDB", || {
        (ovs.policing("kvm102.0") == (10_000, 2_000)).then_some(())
    });

    // Ten ticks under strace, a hand edit among them: not one execve by the agent or
    // any thread or child of it.
    let trace = tmp.path().join("strace.out");
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=execve,execveat", "-o"])
        .arg(&trace)
        .args(["-p", &agent.pid().to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1)); // strace attaches
    ovs.vsctl(&[
        "--no-wait",
        "set",
        "interface",
        "kvm102.0",
        "ingress_policing_rate=1234",
    ]);
    let edited = std::time::Instant::now();
    eventually(Duration::from_secs(3), "hand edit put back", || {
        (ovs.policing("kvm102.0") == (10_000, 2_000)).then_some(())
    });
    eprintln!("hand edit put back after {:?}", edited.elapsed());
    std::thread::sleep(Duration::from_secs(9));
    // SAFETY: kill(2) on our own child's pid; strace detaches on SIGINT.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    strace.wait().unwrap();
    let traced = std::fs::read_to_string(&trace).unwrap();
    assert!(
        !traced.contains("execve"),
        "the agent started processes in steady state:\n{traced}"
    );
    assert!(!calls.exists(), "ovs-vsctl was run");

    // ovsdb-server restarted under the agent: it reconnects, and a hand edit made on the
    // new server is put back.
    ovs.restart_db();
    ovs.vsctl(&[
        "--no-wait",
        "set",
        "interface",
        "kvm102.0",
        "ingress_policing_rate=4321",
    ]);
    eventually(
        Duration::from_secs(10),
        "converged after the restart",
        || (ovs.policing("kvm102.0") == (10_000, 2_000)).then_some(()),
    );
    assert!(
        agent.log().contains("OVSDB session lost"),
        "the loss is logged:\n{}",
        agent.log()
    );
    let rec = eventually(Duration::from_secs(5), "a settled status", || {
        let snap = read_state(&run)?;
        let r = record(&snap, "kvm102.0")?.clone();
        let reason = format!("{:?}", r.enforcement);
        (!reason.contains("OVSDB")).then_some(r)
    });
    eprintln!("after the restart: {:?}", rec.enforcement);
    assert!(!calls.exists(), "ovs-vsctl was run");
}

/// The enforcement status of `name` in the agent's state, once it is no longer pending.
fn settled_status(run: &Path, name: &str) -> sluice::enforce::Enforcement {
    eventually(Duration::from_secs(15), "a settled status", || {
        let snap = read_state(run)?;
        let e = record(&snap, name)?.enforcement.clone()?;
        (e != sluice::enforce::Enforcement::Pending).then_some(e)
    })
}

/// (ingress_policing_kpkts_rate, ingress_policing_kpkts_burst) of an interface.
fn kpkts(ovs: &Ovs, name: &str) -> (u64, u64) {
    let get = |col: &str| -> u64 {
        ovs.vsctl(&["get", "interface", name, col])
            .trim()
            .parse()
            .unwrap()
    };
    (
        get("ingress_policing_kpkts_rate"),
        get("ingress_policing_kpkts_burst"),
    )
}

/// An Open vSwitch older than 2.16 has no packet-rate columns: the packet limit is
/// refused naming why, the byte limit is still written, and the session runs on the
/// schema it has. And with no ovs-vswitchd to apply what the database holds, a written
/// limit is pending, then failed naming vswitchd once the command timeout has passed.
#[test]
fn packet_limits_on_a_schema_without_kpkts_are_refused_and_the_rest_works() {
    let host = Netns::new("okh");
    let inst = Netns::new("oki");
    let _link = veth(&host, "kvm103.0", &inst, "eth0", 15);
    let _other = veth(&host, "kvm104.0", &inst, "eth1", 16);
    let ovs = Ovs::start_db_with_schema(&host.name, |schema| {
        let cols = schema["tables"]["Interface"]["columns"]
            .as_object_mut()
            .unwrap();
        assert!(cols.remove("ingress_policing_kpkts_rate").is_some());
        assert!(cols.remove("ingress_policing_kpkts_burst").is_some());
    });
    ovs.vsctl(&["--no-wait", "add-br", "br0"]);
    ovs.add_port("kvm103.0");
    ovs.add_port("kvm104.0");
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let config = tmp.path().join("sluice.toml");
    std::fs::write(
        &config,
        ovs_config(
            "kvm",
            &ovs.db,
            &run,
            "command_timeout = \"2s\"",
            "[instances.\"103\"]\npacket_rate = \"25kpps\"",
        ),
    )
    .unwrap();
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent.log"));
    eventually(Duration::from_secs(15), "byte policing in OVSDB", || {
        (ovs.policing("kvm103.0") == (10_000, 2_000)).then_some(())
    });
    match settled_status(&run, "kvm103.0") {
        sluice::enforce::Enforcement::EnforceFailed { reason } => assert!(
            reason.starts_with(
                "cannot limit its packet rate: this Open vSwitch has no \
                 Interface.ingress_policing_kpkts_rate (packet-rate policing came with OVS 2.16)"
            ),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    let snap = read_state(&run).unwrap();
    assert_eq!(
        record(&snap, "kvm103.0").unwrap().packet_limit_pps,
        Some(25_000),
        "decided and shown"
    );
    assert_eq!(ovs.policing("kvm104.0"), (10_000, 2_000));
    match settled_status(&run, "kvm104.0") {
        sluice::enforce::Enforcement::EnforceFailed { reason } => assert!(
            reason.starts_with("ovs-vswitchd has not applied the change within 2s"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    drop(agent);
}

/// The interface's status, settled: applied where the kernel can police, and where it
/// cannot (this build machine), failed for the upload policer alone — the download
/// shaping is not among what it lacks.
fn upload_only_lacking(run: &Path, name: &str) {
    use sluice::enforce::Enforcement;
    let status = settled_status(run, name);
    if support::kernel_can_police() {
        assert_eq!(status, Enforcement::Applied);
        return;
    }
    match status {
        Enforcement::EnforceFailed { reason } => {
            assert!(reason.contains("no policing filter"), "{reason}");
            assert!(!reason.contains("HTB"), "{reason}");
            assert!(!reason.contains("QoS"), "{reason}");
        }
        other => panic!("{name}: {other:?}"),
    }
}

/// Download limits on OVS: sluice's own linux-htb QoS and queue on the port, the HTB class
/// ovs-vswitchd makes of it holding the rate against real traffic, an operator's QoS left
/// alone and reported, and everything sluice made gone when the limit is.
#[test]
fn download_limit_is_a_qos_of_its_own_and_the_kernel_shapes_it() {
    let host = Netns::new("odh");
    let inst = Netns::new("odi");
    let link = veth(&host, "kvm101.0", &inst, "eth0", 13);
    let _other = veth(&host, "kvm102.0", &inst, "eth1", 14);
    let ovs = Ovs::start(&host);
    ovs.add_port("kvm101.0");
    ovs.add_port("kvm102.0");
    // An operator's own QoS on the second port.
    ovs.vsctl(&[
        "--no-wait",
        "--",
        "set",
        "port",
        "kvm102.0",
        "qos=@q",
        "--",
        "--id=@q",
        "create",
        "qos",
        "type=linux-htb",
        "other_config:max-rate=3000000",
        "external_ids:owner=ops",
    ]);
    let operator_qos = ovs.vsctl(&["get", "port", "kvm102.0", "qos"]);

    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let config = tmp.path().join("sluice.toml");
    let write_config = |download: bool| {
        let instances = if download {
            "[instances.\"101\"]\ndownload_rate = \"8mbit\"\npacket_rate = \"25kpps\"\n\
             [instances.\"102\"]\ndownload_rate = \"8mbit\"\n"
        } else {
            ""
        };
        std::fs::write(&config, ovs_config("kvm", &ovs.db, &run, "", instances)).unwrap();
    };
    write_config(true);
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent.log"));

    let ours = |table: &str| -> Vec<String> {
        ovs.vsctl(&[
            "--format=csv",
            "--columns=external_ids,other_config",
            "list",
            table,
        ])
        .lines()
        .filter(|l| l.contains("sluice"))
        .map(str::to_owned)
        .collect()
    };
    eventually(Duration::from_secs(15), "sluice's QoS on kvm101.0", || {
        let qos = ours("qos");
        (qos.len() == 1 && ours("queue").len() == 1).then_some(qos)
    });
    let qos = ovs.vsctl(&["get", "port", "kvm101.0", "qos"]);
    let qos = qos.trim();
    assert_eq!(ovs.vsctl(&["get", "qos", qos, "type"]).trim(), "linux-htb");
    assert_eq!(
        ovs.vsctl(&["get", "qos", qos, "other_config:max-rate"])
            .trim(),
        "\"8000000\""
    );
    assert_eq!(
        ovs.vsctl(&["get", "qos", qos, "external_ids:sluice"])
            .trim()
            .trim_matches('"'),
        "kvm101.0"
    );
    let queue = ovs.vsctl(&["get", "qos", qos, "queues:0"]);
    assert_eq!(
        ovs.vsctl(&["get", "queue", queue.trim(), "other_config:max-rate"])
            .trim(),
        "\"8000000\""
    );
    // Upload holds the base rate as ingress policing beside it, and the packet rate as
    // kpkts policing: 25 kpps with a tenth of a second's bucket, rounded up.
    assert_eq!(ovs.policing("kvm101.0"), (10_000, 2_000));
    assert_eq!(kpkts(&ovs, "kvm101.0"), (25, 3));
    assert_eq!(kpkts(&ovs, "kvm102.0"), (0, 0));

    // The kernel, asked with tc: vswitchd made an HTB class of queue 0 at 8 Mbit, and
    // sluice, having asked the kernel too, finds the download held.
    upload_only_lacking(&run, "kvm101.0");
    let classes = host.exec("tc", &["class", "show", "dev", "kvm101.0"]);
    assert!(
        classes
            .lines()
            .any(|l| l.contains("htb 1:1 ") && l.contains("ceil 8Mbit")),
        "{classes}"
    );

    // The operator's QoS: untouched, and the instance reported as not enforced.
    match settled_status(&run, "kvm102.0") {
        sluice::enforce::Enforcement::EnforceFailed { reason } => {
            assert!(reason.contains("a QoS sluice did not create"), "{reason}")
        }
        other => panic!("kvm102.0: {other:?}"),
    }
    assert_eq!(ovs.vsctl(&["get", "port", "kvm102.0", "qos"]), operator_qos);
    assert_eq!(
        ovs.vsctl(&["get", "qos", operator_qos.trim(), "other_config:max-rate"])
            .trim(),
        "\"3000000\""
    );

    // Real traffic towards the instance at 20 Mbit/s: what arrives is shaped to 8 Mbit/s
    // (HTB counts frames, as the veth's byte counter does).
    let sender = {
        let (host_ns, dst) = (host.name.clone(), link.b_ip);
        std::thread::spawn(move || {
            send_udp(
                &host_ns,
                dst,
                1200,
                20_000,
                20_000_000,
                Duration::from_secs(8),
            )
        })
    };
    let received = support::settled_rate(&inst, "eth0", "rx_bytes", Duration::from_secs(2));
    eprintln!("download shaped to {:.2} Mbit/s", received / 1e6);
    assert!(
        (0.85 * 8e6..=1.05 * 8e6).contains(&received),
        "{received} bit/s received through an 8 Mbit/s download limit"
    );
    // The agent measures the packet rate too: 1,242-byte frames at the shaped 8 Mbit/s
    // are ~805 packets/s leaving the host's side towards the instance.
    let pps = eventually(Duration::from_secs(3), "a download packet rate", || {
        let snap = read_state(&run)?;
        record(&snap, "kvm101.0")?
            .download_pps
            .filter(|p| (600..=1_000).contains(p))
    });
    eprintln!("download packet rate {pps}/s");
    sender.join().unwrap();

    // The limit lifted: sluice's QoS and queue leave OVSDB, vswitchd takes the HTB off the
    // device, and the operator's QoS stays.
    write_config(false);
    agent.signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), "sluice's QoS gone", || {
        (ours("qos").is_empty() && ours("queue").is_empty()).then_some(())
    });
    assert_eq!(ovs.vsctl(&["get", "port", "kvm101.0", "qos"]).trim(), "[]");
    assert_eq!(
        kpkts(&ovs, "kvm101.0"),
        (0, 0),
        "packet policing cleared too"
    );
    eventually(Duration::from_secs(10), "the HTB qdisc gone", || {
        let q = host.exec("tc", &["qdisc", "show", "dev", "kvm101.0"]);
        (!q.contains("htb")).then_some(())
    });
    assert_eq!(ovs.vsctl(&["get", "port", "kvm102.0", "qos"]), operator_qos);
    upload_only_lacking(&run, "kvm101.0");

    // Back on, then `sluice release` with the agent stopped: policing and sluice's QoS
    // go, the operator's stays.
    write_config(true);
    agent.signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), "sluice's QoS back", || {
        (ours("qos").len() == 1).then_some(())
    });
    assert_eq!(agent.stop(), Some(0));
    let out = std::process::Command::new(support::sluice_bin())
        .args(["release", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), "released: kvm101.0, kvm102.0");
    assert!(ours("qos").is_empty() && ours("queue").is_empty());
    assert_eq!(ovs.vsctl(&["get", "port", "kvm101.0", "qos"]).trim(), "[]");
    assert_eq!(ovs.policing("kvm101.0"), (0, 0));
    assert_eq!(ovs.policing("kvm102.0"), (0, 0));
    assert_eq!(ovs.vsctl(&["get", "port", "kvm102.0", "qos"]), operator_qos);
}

/// DPDK and vhost-user ports have no kernel netdev: the agent counts them from the
/// `statistics` vswitchd writes into OVSDB (here written by hand, with no vswitchd and no
/// DPDK on this machine), into the same ledger, and says so in `list`.
#[test]
fn vhost_user_ports_are_counted_from_ovsdb_statistics() {
    let host = Netns::new("ovh");
    let ovs = Ovs::start_db(&host.name);
    ovs.vsctl(&["--no-wait", "add-br", "br0"]);
    ovs.vsctl(&[
        "--no-wait",
        "add-port",
        "br0",
        "vhu101.0",
        "--",
        "set",
        "interface",
        "vhu101.0",
        "type=dpdkvhostuserclient",
    ]);
    let stats = |rx: u64, tx: u64, rx_packets: u64, tx_packets: u64| {
        ovs.vsctl(&[
            "--no-wait",
            "set",
            "interface",
            "vhu101.0",
            &format!("statistics:rx_bytes={rx}"),
            &format!("statistics:tx_bytes={tx}"),
            &format!("statistics:rx_packets={rx_packets}"),
            &format!("statistics:tx_packets={tx_packets}"),
        ]);
    };
    stats(1_000, 2_000, 10, 20);
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let config = tmp.path().join("sluice.toml");
    std::fs::write(&config, ovs_config("vhu", &ovs.db, &run, "", "")).unwrap();
    let _agent = AgentProc::start(&host, &config, tmp.path().join("agent.log"));
    eventually(Duration::from_secs(15), "vhu101.0 watched", || {
        let snap = read_state(&run)?;
        record(&snap, "vhu101.0")
            .filter(|r| r.present && r.userspace)
            .map(drop)
    });
    // The first reading is the baseline; what vswitchd counts after it is traffic.
    stats(501_000, 1_002_000, 510, 1_020);
    let config_path = config.clone();
    eventually(Duration::from_secs(10), "the ledger counts it", || {
        let totals = support::ledger_totals(&config_path, "--interface", "vhu101.0");
        (totals == (500_000, 1_000_000)).then_some(())
    });
    // Its limit is written like any port's (vswitchd, absent here, would apply it).
    assert_eq!(ovs.policing("vhu101.0"), (10_000, 2_000));
    let list = std::process::Command::new(support::sluice_bin())
        .args(["list", "--state-dir"])
        .arg(&run)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("vhu101.0 (ovsdb counters)")),
        "{text}"
    );
}
