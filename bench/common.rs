//! What the benchmarks share: the median timer, the release binary they run, and a child
//! process stopped by pid even when a benchmark panics.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Median of `runs` timings of `f` (after one warm-up call).
pub fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[runs / 2]
}

/// `cargo bench` builds the library in release mode; build the binary the same way.
pub fn release_binary() -> PathBuf {
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--bin", "sluice"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --release failed");
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/sluice")
}

/// Stops a child process by pid even when the benchmark panics.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A `kB` field of `/proc/PID/status` (`VmHWM:`, `RssAnon:`, ...).
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
