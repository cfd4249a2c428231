//! Fixtures for integration tests that touch the real kernel: network namespaces, veth
//! pairs, bounded UDP traffic between namespaces, and a private Open vSwitch
//! (ovsdb-server and ovs-vswitchd, userspace datapath) in a temp dir. Everything is created under unique
//! names and removed by name or pid on drop — never by killing processes by name.
#![allow(dead_code)]

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod browser;
pub mod http;
pub mod incus;
pub mod libvirt;
pub mod postgres;
pub mod store;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fail loudly (not skip silently) when the kernel tests cannot run.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "kernel integration tests need root (CI runs them as root)"
    );
}

/// Run a command, panicking with its stderr on failure; returns stdout.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace owned by the test; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        require_root();
        let name = format!(
            "sl{tag}{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        sh("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        // No IPv6 autoconfiguration chatter: byte counts must be exactly what the test sent.
        ns.exec("sysctl", &["-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec(
            "sysctl",
            &["-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"],
        );
        ns
    }

    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// `ip -batch` inside the namespace (thousands of links in one process).
    pub fn ip_batch(&self, commands: &str) {
        let path = std::env::temp_dir().join(format!("{}-batch", self.name));
        std::fs::write(&path, commands).unwrap();
        sh("ip", &["-n", &self.name, "-batch", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(path);
    }

    /// Create `names` as cheap, traffic-less links in one `ip -batch`: `dummy` where the
    /// kernel has it (production kernels do), else `ifb` (this build machine lacks dummy).
    pub fn add_cheap_links(&self, names: &[String]) {
        let kind = if Command::new("ip")
            .args(["-n", &self.name, "link", "add", "slprobe0", "type", "dummy"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            self.ip(&["link", "del", "slprobe0"]);
            "dummy"
        } else {
            "ifb"
        };
        let batch: String = names
            .iter()
            .map(|n| format!("link add {n} type {kind}\n"))
            .collect();
        self.ip_batch(&batch);
    }

    /// A counter from sysfs as the kernel shows it inside this namespace.
    pub fn sysfs_counter(&self, dev: &str, counter: &str) -> u64 {
        self.exec(
            "cat",
            &[&format!("/sys/class/net/{dev}/statistics/{counter}")],
        )
        .trim()
        .parse()
        .unwrap()
    }

    pub fn mac(&self, dev: &str) -> String {
        self.exec("cat", &[&format!("/sys/class/net/{dev}/address")])
            .trim()
            .to_owned()
    }

    pub fn ifindex(&self, dev: &str) -> u32 {
        self.exec("cat", &[&format!("/sys/class/net/{dev}/ifindex")])
            .trim()
            .parse()
            .unwrap()
    }

    /// Run `f` on a fresh thread inside this namespace (setns affects only that thread).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Run `f` on a fresh thread inside the namespace `name`.
pub fn run_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap();
        // SAFETY: setns on a valid netns fd; affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// A veth pair between two namespaces with /24 addresses and static neighbours (no ARP
/// traffic, so byte counts are exactly what the test sends).
pub struct Link {
    pub a: String,
    pub b: String,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
}

pub fn veth(a_ns: &Netns, a: &str, b_ns: &Netns, b: &str, subnet: u8) -> Link {
    a_ns.ip(&[
        "link", "add", a, "type", "veth", "peer", "name", b, "netns", &b_ns.name,
    ]);
    let a_ip = Ipv4Addr::new(10, 250, subnet, 1);
    let b_ip = Ipv4Addr::new(10, 250, subnet, 2);
    a_ns.ip(&["addr", "add", &format!("{a_ip}/24"), "dev", a]);
    b_ns.ip(&["addr", "add", &format!("{b_ip}/24"), "dev", b]);
    a_ns.ip(&["link", "set", a, "up"]);
    b_ns.ip(&["link", "set", b, "up"]);
    let (a_mac, b_mac) = (a_ns.mac(a), b_ns.mac(b));
    a_ns.ip(&[
        "neigh",
        "replace",
        &b_ip.to_string(),
        "lladdr",
        &b_mac,
        "dev",
        a,
        "nud",
        "permanent",
    ]);
    b_ns.ip(&[
        "neigh",
        "replace",
        &a_ip.to_string(),
        "lladdr",
        &a_mac,
        "dev",
        b,
        "nud",
        "permanent",
    ]);
    Link {
        a: a.into(),
        b: b.into(),
        a_ip,
        b_ip,
    }
}

/// Ethernet + IPv4 + UDP header bytes in front of each payload on a veth.
pub const UDP_FRAME_OVERHEAD: u64 = 14 + 20 + 8;

/// Send `count` UDP datagrams of `payload` bytes from inside `ns` to `dst`, paced to about
/// `rate_bps` on the wire, stopping after `max` whatever happens. Returns datagrams sent.
pub fn send_udp(
    ns: &str,
    dst: Ipv4Addr,
    payload: usize,
    count: u64,
    rate_bps: u64,
    max: Duration,
) -> u64 {
    run_in(ns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        let buf = vec![0x5au8; payload];
        let frame_bits = (payload as u64 + UDP_FRAME_OVERHEAD) * 8;
        let per_packet = Duration::from_secs_f64(frame_bits as f64 / rate_bps as f64);
        let start = Instant::now();
        let mut sent = 0;
        while sent < count && start.elapsed() < max {
            let due = start + per_packet * sent as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            // ENOBUFS under load is possible; only count what the kernel accepted.
            if sock.send_to(&buf, SocketAddrV4::new(dst, 9)).is_ok() {
                sent += 1;
            }
        }
        sent
    })
}

/// A private Open vSwitch inside a namespace: ovsdb-server (and, unless only the
/// database is wanted, ovs-vswitchd) with every path in a temp dir, stopped by pid on drop.
pub struct Ovs {
    pub dir: tempfile::TempDir,
    pub db: String,
    ns: String,
    children: Vec<Child>,
    /// Devices a userspace datapath made in the host's namespace, deleted on drop.
    host_links: Vec<String>,
}

impl Ovs {
    /// ovsdb-server and ovs-vswitchd, with a userspace-datapath bridge `br0`.
    pub fn start(ns: &Netns) -> Ovs {
        let mut ovs = Ovs::start_db(&ns.name);
        ovs.spawn_daemon("ovs-vswitchd", &[ovs.db.clone()]);
        wait_for(
            &ovs.dir.path().join("ovs-vswitchd.ctl"),
            Duration::from_secs(10),
        );
        ovs.vsctl(&[
            "add-br",
            "br0",
            "--",
            "set",
            "bridge",
            "br0",
            "datapath_type=netdev",
        ]);
        ovs
    }

    /// ovsdb-server and ovs-vswitchd in the host's namespace, with a userspace-datapath
    /// bridge `bridge` there: where a hypervisor on the host (libvirt) plugs its taps.
    /// The bridge's own device goes with vswitchd.
    pub fn start_on_host(bridge: &str) -> Ovs {
        let exists = |dev: &str| Path::new("/sys/class/net").join(dev).exists();
        let mut ovs = Ovs::start_db("");
        // The datapath's own device: ours to delete only if no other OVS made it.
        if !exists("ovs-netdev") {
            ovs.host_links.push("ovs-netdev".into());
        }
        ovs.host_links.push(bridge.to_owned());
        ovs.spawn_daemon("ovs-vswitchd", &[ovs.db.clone()]);
        wait_for(
            &ovs.dir.path().join("ovs-vswitchd.ctl"),
            Duration::from_secs(10),
        );
        ovs.vsctl(&[
            "add-br",
            bridge,
            "--",
            "set",
            "bridge",
            bridge,
            "datapath_type=netdev",
        ]);
        ovs
    }

    /// ovsdb-server alone: enough for `--no-wait` writes and `list` reads (`ns` empty:
    /// the host's namespace).
    pub fn start_db(ns: &str) -> Ovs {
        Ovs::start_db_with_schema(ns, |_| {})
    }

    /// ovsdb-server alone on the installed vswitch schema as `edit` leaves it (say, an
    /// older OVS's, without some columns).
    pub fn start_db_with_schema(ns: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Ovs {
        let dir = tempfile::tempdir().unwrap();
        let db_file = dir.path().join("conf.db");
        let mut schema: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string("/usr/share/openvswitch/vswitch.ovsschema").unwrap(),
        )
        .unwrap();
        edit(&mut schema);
        let schema_file = dir.path().join("vswitch.ovsschema");
        std::fs::write(&schema_file, schema.to_string()).unwrap();
        sh(
            "ovsdb-tool",
            &[
                "create",
                db_file.to_str().unwrap(),
                schema_file.to_str().unwrap(),
            ],
        );
        let sock = dir.path().join("db.sock");
        let mut ovs = Ovs {
            db: format!("unix:{}", sock.display()),
            dir,
            ns: ns.to_owned(),
            children: Vec::new(),
            host_links: Vec::new(),
        };
        let remote = format!("--remote=punix:{}", sock.display());
        ovs.spawn_daemon("ovsdb-server", &[db_file.display().to_string(), remote]);
        wait_for(&sock, Duration::from_secs(10));
        ovs.vsctl(&["--no-wait", "init"]);
        ovs
    }

    /// Kill ovsdb-server (by its pid) and start it again on the same database file and
    /// socket: what a package upgrade or a crash does under running clients.
    pub fn restart_db(&mut self) {
        let mut old = self.children.remove(0);
        let _ = old.kill();
        let _ = old.wait();
        let sock = self.dir.path().join("db.sock");
        let _ = std::fs::remove_file(&sock);
        let db_file = self.dir.path().join("conf.db");
        let remote = format!("--remote=punix:{}", sock.display());
        self.spawn_daemon("ovsdb-server", &[db_file.display().to_string(), remote]);
        let new = self.children.pop().unwrap();
        self.children.insert(0, new);
        wait_for(&sock, Duration::from_secs(10));
    }

    /// Start an OVS daemon in the namespace with its control socket, log and pid file in
    /// the temp dir (and OVS_* directories pointed there, away from any system OVS).
    fn spawn_daemon(&mut self, program: &str, args: &[String]) {
        let d = self.dir.path();
        let mut cmd = if self.ns.is_empty() {
            Command::new(program)
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.ns, program]);
            c
        };
        cmd.args(args);
        cmd.arg(format!(
            "--unixctl={}",
            d.join(format!("{program}.ctl")).display()
        ));
        cmd.arg(format!(
            "--log-file={}",
            d.join(format!("{program}.log")).display()
        ));
        cmd.arg(format!(
            "--pidfile={}",
            d.join(format!("{program}.pid")).display()
        ));
        for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            cmd.env(var, d);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// ovs-vsctl against this database. It only talks to the database's unix socket, so it
    /// runs from any namespace (and the benchmark's timings carry no `ip netns exec`).
    pub fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.db);
        let mut full = vec![db.as_str(), "--timeout=30"];
        full.extend_from_slice(args);
        sh("ovs-vsctl", &full)
    }

    pub fn add_port(&self, name: &str) {
        self.vsctl(&["--no-wait", "add-port", "br0", name]);
    }

    /// (ingress_policing_rate, ingress_policing_burst) of an interface.
    pub fn policing(&self, name: &str) -> (u64, u64) {
        let get = |col: &str| -> u64 {
            self.vsctl(&["get", "interface", name, col])
                .trim()
                .parse()
                .unwrap()
        };
        (get("ingress_policing_rate"), get("ingress_policing_burst"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ovs-vswitchd.log")).unwrap_or_default()
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dev in &self.host_links {
            let _ = Command::new("ip")
                .args(["link", "del", dev])
                .stderr(Stdio::null())
                .status();
        }
    }
}

pub fn wait_for(path: &Path, max: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < max,
            "{} did not appear within {max:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll `f` every 100 ms until it returns `Some`, or panic after `max` with `what`.
pub fn eventually<T>(max: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < max,
            "timed out after {max:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn sluice_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

/// Run `sluice ARGS`, insist it succeeded (showing its stderr if not), return stdout.
#[allow(dead_code)]
pub fn sluice_stdout(args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = Command::new(sluice_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `sluice inventory --json` with `config`: what the inventory sources see.
pub fn inventory_json(config: &Path) -> serde_json::Value {
    let args = ["inventory", "--json", "--config", config.to_str().unwrap()];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    serde_json::from_slice(&sluice_stdout(&args)).unwrap()
}

/// (upload, download) bytes the ledger holds, via `sluice usage --json` over all time;
/// `by` is `--interface` or `--instance`.
pub fn ledger_totals(config: &Path, by: &str, name: &str) -> (u64, u64) {
    let mut args: Vec<&std::ffi::OsStr> = [
        "usage",
        "--by",
        "hour",
        "--from",
        "2000-01-01",
        by,
        name,
        "--json",
        "--config",
    ]
    .map(std::ffi::OsStr::new)
    .to_vec();
    args.push(config.as_os_str());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&sluice_stdout(&args)).unwrap();
    rows.iter().fold((0, 0), |(u, d), r| {
        (
            u + r["upload_bytes"].as_u64().unwrap(),
            d + r["download_bytes"].as_u64().unwrap(),
        )
    })
}

/// The event log of the last hour, as `sluice events --json` prints it.
pub fn events(config: &Path) -> Vec<serde_json::Value> {
    let mut args: Vec<&std::ffi::OsStr> = ["events", "--since", "1h", "--json", "--config"]
        .map(std::ffi::OsStr::new)
        .to_vec();
    args.push(config.as_os_str());
    String::from_utf8_lossy(&sluice_stdout(&args))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A `sluice agent` running inside a namespace, stopped by pid on drop.
pub struct AgentProc {
    pub child: Child,
    pub stderr: PathBuf,
}

impl AgentProc {
    pub fn start(ns: &Netns, config: &Path, stderr: PathBuf) -> AgentProc {
        AgentProc::start_with_env(ns, config, stderr, &[])
    }

    /// As `start`, with extra environment variables (a crash point, say).
    pub fn start_with_env(
        ns: &Netns,
        config: &Path,
        stderr: PathBuf,
        env: &[(&str, &str)],
    ) -> AgentProc {
        let err = File::create(&stderr).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(sluice_bin())
            .args(["agent", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        AgentProc { child, stderr }
    }

    /// In the host's own network namespace: for hypervisor tests, whose daemons make
    /// their taps there. Give it `listen = ""` (port 9477 may be in use on the host).
    pub fn start_on_host(config: &Path, stderr: PathBuf) -> AgentProc {
        let err = File::create(&stderr).unwrap();
        let child = Command::new(sluice_bin())
            .args(["agent", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        AgentProc { child, stderr }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Wait (bounded) for the agent to end by itself; returns how it ended.
    pub fn wait_exit(&mut self, max: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        eventually(max, "the agent to exit", || child.try_wait().unwrap())
    }

    /// SIGTERM and wait (bounded); returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "agent did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An `iperf3 -s` inside a namespace, bound to one address; stopped by pid on drop.
pub struct Iperf3Server {
    child: Child,
    pub addr: Ipv4Addr,
    pub port: u16,
}

impl Iperf3Server {
    pub fn start(ns: &Netns, addr: Ipv4Addr, port: u16) -> Iperf3Server {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "iperf3", "-s", "-B"])
            .arg(addr.to_string())
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 (apt install iperf3)");
        let port_s = format!(":{port}");
        eventually(Duration::from_secs(10), "iperf3 server listening", || {
            let out = ns.exec("ss", &["-Hltn"]);
            out.lines().any(|l| l.contains(&port_s)).then_some(())
        });
        Iperf3Server { child, addr, port }
    }

    /// A bounded TCP run from `client` to this server, in the background: `secs` measured
    /// seconds after `omit` unmeasured ones (slow start). Returns the client process,
    /// whose stdout is iperf3's JSON report.
    pub fn client(&self, client: &Netns, secs: u32, omit: u32) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &client.name, "iperf3", "-J", "-c"])
            .arg(self.addr.to_string())
            .args(["-p", &self.port.to_string()])
            .args(["-t", &secs.to_string(), "-O", &omit.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait (bounded) for an iperf3 client and return the receiver's goodput in bit/s.
pub fn iperf3_goodput(mut child: Child, max: Duration) -> f64 {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > max {
            let _ = child.kill();
            panic!("iperf3 ran longer than {max:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 JSON: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no sum_received in {report}"))
}

/// TCP payload per full-size segment on a 1500-byte MTU with timestamps, and the frame
/// that carries it (+ TCP 32, IPv4 20, Ethernet 14): goodput × FRAME/MSS is the layer-2
/// rate of the segments on the wire, whatever GSO did to the skbs.
pub const TCP_MSS: f64 = 1448.0;
pub const TCP_FRAME: f64 = 1514.0;

/// The average rate of a byte counter of `dev` in `ns` over `window`, in bit/s.
pub fn counter_rate(ns: &Netns, dev: &str, counter: &str, window: Duration) -> f64 {
    let t0 = Instant::now();
    let c0 = ns.sysfs_counter(dev, counter);
    let t0 = t0 + (Instant::now() - t0) / 2;
    std::thread::sleep(window);
    let t1 = Instant::now();
    let c1 = ns.sysfs_counter(dev, counter);
    let t1 = t1 + (Instant::now() - t1) / 2;
    (c1 - c0) as f64 * 8.0 / (t1 - t0).as_secs_f64()
}

/// The rate of a byte counter once the traffic through it has settled: half-second
/// readings are taken until two in a row agree within 5 % (a flow that just started or
/// was just re-limited is still moving), then the rate over `window` is returned. What
/// it waits for is steadiness, not the value the test expects, so the test can still fail.
pub fn settled_rate(ns: &Netns, dev: &str, counter: &str, window: Duration) -> f64 {
    let step = Duration::from_millis(500);
    let mut previous = counter_rate(ns, dev, counter, step);
    eventually(Duration::from_secs(10), "a steady rate", || {
        let now = counter_rate(ns, dev, counter, step);
        let steady = now > 0.0 && (now - previous).abs() <= 0.05 * now;
        previous = now;
        steady.then_some(())
    });
    counter_rate(ns, dev, counter, window)
}

/// Can this kernel police an interface's ingress the way ovs-vswitchd asks it to (a
/// `police` action under a `matchall` or `basic` classifier)? Probed on a scratch link in
/// a scratch namespace. A refusal must be one of the two the kernel gives for a missing
/// module; any other failure panics, so the probe cannot quietly pick a branch.
pub fn kernel_can_police() -> bool {
    const MISSING: [&str; 2] = ["Failed to load TC action module", "TC classifier not found"];
    let ns = Netns::new("pp");
    ns.ip(&["link", "add", "slpol0", "type", "ifb"]);
    ns.exec("tc", &["qdisc", "add", "dev", "slpol0", "ingress"]);
    for classifier in ["matchall", "basic"] {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, "tc", "filter", "add", "dev", "slpol0",
            ])
            .args([
                "parent", "ffff:", "protocol", "all", "prio", "49", classifier,
            ])
            .args(["action", "police", "rate", "1mbit", "burst", "10k", "drop"])
            .output()
            .unwrap();
        if out.status.success() {
            return true;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            MISSING.iter().any(|m| err.contains(m)),
            "the police probe failed for another reason than a missing module: {}: {err}",
            out.status
        );
    }
    false
}

/// Count UDP payload bytes arriving at `bind` inside `ns` for `window` after the first
/// datagram (or after `window` of silence): returns (bytes, seconds from the first to
/// the last datagram).
pub fn receive_udp(
    ns: &str,
    bind: SocketAddrV4,
    window: Duration,
) -> std::thread::JoinHandle<(u64, f64)> {
    let ns = ns.to_owned();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        run_in(&ns, move || {
            let sock = UdpSocket::bind(bind).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = vec![0u8; 65536];
            let (mut bytes, mut first, mut last) = (0u64, None::<Instant>, None::<Instant>);
            let start = Instant::now();
            loop {
                let deadline = first.map_or(start, |f| f) + window;
                if Instant::now() >= deadline {
                    break;
                }
                if let Ok(n) = sock.recv(&mut buf) {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = Some(now);
                    bytes += n as u64;
                }
            }
            let span = match (first, last) {
                (Some(f), Some(l)) => (l - f).as_secs_f64(),
                _ => 0.0,
            };
            (bytes, span)
        })
    });
    ready_rx.recv().unwrap();
    handle
}

/// What pve-common's `PVE::Network::tap_rate_limit` runs for `rate=<mb>` on a NIC, word
/// for word (rate in bytes/s, burst 1 MiB). This kernel has neither the `basic`
/// classifier nor the `police` action, so where the probe says so its last command is
/// replaced by a u32 filter at the same priority: what sluice must replace is the same
/// (a filter on the ingress that is not its own).
pub fn pve_tap_rate_limit(ns: &Netns, dev: &str, mb: u64, police: bool) {
    let rate = format!("{}bps", mb * 1024 * 1024);
    let burst = format!("{}b", 1024 * 1024);
    for del in [
        vec!["class", "del", "dev", dev, "parent", "1:", "classid", "1:1"],
        vec![
            "filter", "del", "dev", dev, "parent", "ffff:", "protocol", "all", "pref", "50", "u32",
        ],
        vec!["qdisc", "del", "dev", dev, "ingress"],
        vec!["qdisc", "del", "dev", dev, "root"],
    ] {
        // PVE ignores these failing (nothing to delete).
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "tc"])
            .args(&del)
            .output();
    }
    ns.exec(
        "tc",
        &[
            "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1",
        ],
    );
    ns.exec(
        "tc",
        &[
            "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", &rate,
            "burst", &burst,
        ],
    );
    ns.exec(
        "tc",
        &["qdisc", "add", "dev", dev, "handle", "ffff:", "ingress"],
    );
    if police {
        ns.exec(
            "tc",
            &[
                "filter", "add", "dev", dev, "parent", "ffff:", "prio", "50", "basic", "police",
                "rate", &rate, "burst", &burst, "mtu", "64kb", "drop",
            ],
        );
    } else {
        ns.exec(
            "tc",
            &[
                "filter", "add", "dev", dev, "parent", "ffff:", "prio", "50", "protocol", "all",
                "u32", "match", "u32", "0", "0", "flowid", "1:1",
            ],
        );
    }
}
