//! A real libvirtd for the inventory tests, and transient domains they define: no disk,
//! no OS (SeaBIOS finds nothing to boot and waits), one NIC on the test's bridge.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, sh};

/// libvirtd and virtlogd, started by the test if none answers; stopped by pid on drop
/// (only those it started).
pub struct Libvirtd {
    started: Vec<Child>,
}

fn answers() -> bool {
    Command::new("virsh")
        .args(["-c", "qemu:///system", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Libvirtd {
    /// A libvirtd of the test's own, with `env`: fails when one already answers, since
    /// that one's environment cannot be changed (stop it to run this test).
    pub fn start_with_env(env: &[(&str, &std::path::Path)]) -> Libvirtd {
        super::require_root();
        assert!(
            !answers(),
            "a libvirtd is already running: this test starts its own (with {env:?})"
        );
        Libvirtd {
            started: spawn(env),
        }
    }

    /// The host's libvirtd, or one started for the test if none answers.
    pub fn ensure() -> Libvirtd {
        super::require_root();
        let started = if answers() { Vec::new() } else { spawn(&[]) };
        Libvirtd { started }
    }
}

/// virtlogd and libvirtd, with `env`, once libvirtd answers.
fn spawn(env: &[(&str, &std::path::Path)]) -> Vec<Child> {
    let mut started = Vec::new();
    for daemon in ["virtlogd", "libvirtd"] {
        let child = Command::new(daemon)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{daemon}: {e} (scripts/test installs libvirt-daemon-system)")
            });
        started.push(child);
    }
    eventually(Duration::from_secs(20), "libvirtd to answer", || {
        answers().then_some(())
    });
    started
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        for child in self.started.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// qemu's TCG, always: the guests run no OS, so speed does not matter, and under
/// nested virtualisation (this CI's machines) `/dev/kvm` opens but a KVM guest faults
/// into `paused` within a second.
pub fn domain_type() -> &'static str {
    "qemu"
}

/// A transient domain (`virsh create`), destroyed by name on drop if still running.
pub struct Domain {
    pub name: String,
    pub uuid: String,
}

impl Domain {
    /// `interface` is the `<interface>` element; `metadata` goes inside `<metadata>`.
    pub fn create(name: &str, uuid: &str, metadata: &str, interface: &str) -> Domain {
        let xml = format!(
            "<domain type='{}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <metadata>{metadata}</metadata>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>{interface}</devices>
</domain>",
            domain_type()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("domain.xml");
        std::fs::write(&path, xml).unwrap();
        sh(
            "virsh",
            &["-c", "qemu:///system", "create", path.to_str().unwrap()],
        );
        Domain {
            name: name.to_owned(),
            uuid: uuid.to_owned(),
        }
    }

    /// The host-side device of its NIC (`vnetN`).
    pub fn tap(&self) -> String {
        let out = sh("virsh", &["-c", "qemu:///system", "domiflist", &self.name]);
        out.lines()
            .filter_map(|l| l.split_whitespace().next())
            .find(|dev| dev.starts_with("vnet"))
            .unwrap_or_else(|| panic!("no vnet in domiflist:\n{out}"))
            .to_owned()
    }

    /// `virsh domstate` (`None`: no such domain, as a stopped transient one).
    pub fn state(&self) -> Option<String> {
        let o = Command::new("virsh")
            .args(["-c", "qemu:///system", "domstate", &self.name])
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        if self.state().is_some_and(|s| s != "shut off") {
            let _ = Command::new("virsh")
                .args(["-c", "qemu:///system", "destroy", &self.name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
