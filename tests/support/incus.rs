//! A real Incus daemon for the inventory tests, private to the test: its own
//! `INCUS_DIR` in a temp dir (the host's `/var/lib/incus` is never touched), a `dir`
//! storage pool, a bridge without addresses (no dnsmasq, no firewall rules), and a
//! busybox image built here from Debian's busybox-static (no image server is reachable).
//! Everything it made is deleted on drop, in the order Incus needs, and the daemon is
//! stopped by pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, require_root};

pub const IMAGE: &str = "sluice-busybox";

pub struct Incusd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub bridge: String,
    child: Child,
    instances: std::cell::RefCell<Vec<String>>,
}

impl Incusd {
    pub fn start() -> Incusd {
        require_root();
        let incusd = Path::new("/usr/libexec/incus/incusd");
        assert!(
            incusd.exists(),
            "{} is missing (scripts/test installs incus from bookworm-backports)",
            incusd.display()
        );
        // Short: the socket's path must fit a sockaddr_un.
        let dir = tempfile::Builder::new()
            .prefix("incus.")
            .tempdir_in("/tmp")
            .unwrap();
        let templates = dir.path().join("lxc-config");
        std::fs::create_dir(&templates).unwrap();
        let child = Command::new(incusd)
            .arg(format!(
                "--logfile={}",
                dir.path().join("incusd.log").display()
            ))
            .env("INCUS_DIR", dir.path())
            // No image server to ask for instance types; no lxcfs hooks (each adds a
            // 0.5 s sleep to every stop, and lxcfs is not running).
            .env("INCUS_SKIP_INSTANCE_TYPES", "1")
            .env("INCUS_LXC_TEMPLATE_CONFIG", &templates)
            .env("PATH", "/usr/libexec/incus:/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let socket = dir.path().join("unix.socket");
        let bridge = format!("sli{}", std::process::id());
        let d = Incusd {
            dir,
            socket,
            bridge,
            child,
            instances: Default::default(),
        };
        d.incus(&["admin", "waitready", "--timeout=30"]);
        d.incus_with_input(
            &["admin", "init", "--preseed"],
            "config: {}\nstorage_pools:\n- name: default\n  driver: dir\nprofiles:\n- name: default\n  devices:\n    root: {path: /, pool: default, type: disk}\n",
        );
        d.incus(&[
            "network",
            "create",
            &d.bridge,
            "ipv4.address=none",
            "ipv6.address=none",
        ]);
        let image = d.dir.path().join("image.tar");
        build_image(&d.dir.path().join("image"), &image);
        d.incus(&[
            "image",
            "import",
            "-q",
            image.to_str().unwrap(),
            "--alias",
            IMAGE,
        ]);
        d
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("incus");
        cmd.args(args)
            .env("INCUS_DIR", self.dir.path())
            .env("INCUS_CONF", self.dir.path().join("client"));
        cmd
    }

    pub fn incus(&self, args: &[&str]) -> String {
        self.incus_with_input(args, "")
    }

    fn incus_with_input(&self, args: &[&str], input: &str) -> String {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "incus {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A container on the test's bridge, created stopped with `config` keys and `nic`
    /// settings on its eth0, then started.
    pub fn launch(&self, name: &str, config: &[&str], nic: &[&str]) {
        let mut args = vec!["init", "-q", IMAGE, name, "-n", &self.bridge];
        for c in config {
            args.extend(["-c", c]);
        }
        self.incus(&args);
        self.instances.borrow_mut().push(name.to_owned());
        if !nic.is_empty() {
            let mut args = vec!["config", "device", "set", name, "eth0"];
            args.extend(nic);
            self.incus(&args);
        }
        self.incus(&["start", name]);
    }

    /// `GET /1.0/instances/<name>` as the CLI reads it.
    pub fn query(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.incus(&["query", &format!("/1.0/instances/{name}")])).unwrap()
    }

    pub fn status(&self, name: &str) -> String {
        self.query(name)["status"].as_str().unwrap().to_owned()
    }

    /// The container's host-side veth, once it runs.
    pub fn host_veth(&self, name: &str) -> String {
        eventually(Duration::from_secs(10), "the container's host veth", || {
            self.query(name)["config"]["volatile.eth0.host_name"]
                .as_str()
                .map(str::to_owned)
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("incusd.log")).unwrap_or_default()
    }
}

impl Drop for Incusd {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = self
                .command(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        // Containers first: a daemon killed under running ones leaves them running.
        for name in self.instances.borrow().iter() {
            quiet(&["delete", "-f", name]);
        }
        quiet(&["image", "delete", IMAGE]);
        quiet(&["network", "delete", &self.bridge]);
        quiet(&["profile", "device", "remove", "default", "root"]);
        quiet(&["storage", "delete", "default"]);
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// A unified image tarball: busybox-static with an applet link each, and an init that
/// exits cleanly on SIGPWR (Incus's clean-stop signal), as `metadata.yaml` + `rootfs/`.
fn build_image(work: &Path, out: &Path) {
    let root = work.join("rootfs");
    for d in [
        "bin", "sbin", "etc", "dev", "proc", "sys", "tmp", "run", "root", "var/log",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox (scripts/test installs busybox-static)");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" && applet != "init" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    let init = root.join("sbin/init");
    std::fs::write(
        &init,
        "#!/bin/sh\ntrap 'exit 0' PWR TERM INT\nwhile :; do sleep 100000 & wait $!; done\n",
    )
    .unwrap();
    super::sh("chmod", &["755", init.to_str().unwrap()]);
    std::fs::write(
        work.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: busybox\n  description: sluice test image\n",
    )
    .unwrap();
    super::sh(
        "tar",
        &[
            "-C",
            work.to_str().unwrap(),
            "-cf",
            out.to_str().unwrap(),
            "metadata.yaml",
            "rootfs",
        ],
    );
}
