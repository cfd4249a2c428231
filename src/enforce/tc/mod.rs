//! tc backend: limits as HTB shapers over netlink, for hosts without Open vSwitch.
//!
//! Download (host → instance) is shaped by an HTB root qdisc on the tap's egress. Upload
//! (instance → host) arrives on the tap's ingress, where nothing can queue, so a `u32`
//! match-all filter redirects it to an `ifb` device of its own, whose egress carries the
//! same HTB shaping ([`plan`] says what is installed and how sluice recognises its own).
//!
//! Each tick converges in passes: observe the kernel, plan the difference, send every
//! change of the pass in one pipelined batch, observe again. A pass that creates ifbs is
//! followed by one that wires them (their ifindexes exist only then); a tick whose kernel
//! already holds the verdicts costs one observation and no change. An interface is
//! `applied` only when an observation found nothing left to change.

pub(crate) mod encode;
mod kernel;
mod plan;

use std::collections::{HashMap, HashSet};
use std::io;

use tracing::{debug, info, warn};

pub use encode::HtbClass;
pub use kernel::{QdiscCounters, htb_class_of};
pub use plan::{Scope, ifb_name, ifb_tap};

use super::{Enforcement, Wanted};
use crate::model::ids::IfName;
use crate::sys::netlink::{Answer, KernelError, Request, RouteSocket};
use kernel::{describe, harmless, observe, requests};
use plan::{Kernel, Op, Shape, plan};

/// Passes per tick: create ifbs, wire them, then one that must find nothing to do.
const PASSES: usize = 4;

/// The shaping qdiscs' counters of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShaperCounters {
    /// The ifb's HTB (instance → host).
    pub upload: Option<QdiscCounters>,
    /// The tap's HTB (host → instance).
    pub download: Option<QdiscCounters>,
}

/// What one convergence achieved.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Taps (by ifindex) that do not hold their shape, and why.
    pub failed: HashMap<u32, String>,
    /// Changes made.
    pub changes: usize,
    /// Taps whose hypervisor's own shaping was replaced by sluice's.
    pub replaced: HashSet<u32>,
}

pub struct TcBackend {
    sock: RouteSocket,
    counters: HashMap<IfName, ShaperCounters>,
    /// Times a hypervisor's shaping was found and replaced, since the agent started.
    replaced_total: u64,
}

impl TcBackend {
    /// Open a netlink socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        Ok(TcBackend {
            sock: RouteSocket::open()?,
            counters: HashMap::new(),
            replaced_total: 0,
        })
    }

    /// Make the kernel hold `wanted` and remove sluice's shaping from every other
    /// interface; one status per interface, in order.
    pub fn reconcile(&mut self, wanted: &[Wanted<'_>]) -> Vec<Enforcement> {
        let shapes: Vec<Shape> = wanted
            .iter()
            .map(|w| Shape {
                name: w.interface.clone(),
                ifindex: w.verdict.ifindex,
                upload: w.verdict.upload.map(|l| HtbClass::for_rate(l.rate)),
                download: w.verdict.download.map(|l| HtbClass::for_rate(l.rate)),
                hypervisor: w.hypervisor,
            })
            .collect();
        match self.converge(&shapes, &Scope::All) {
            Ok((outcome, kernel, counters)) => {
                self.counters = shaper_counters(&shapes, &kernel, &counters);
                self.replaced_total += outcome.replaced.len() as u64;
                shapes
                    .iter()
                    .zip(wanted)
                    .map(|(s, w)| match outcome.failed.get(&s.ifindex) {
                        Some(why) => Enforcement::failed(why.clone()),
                        // Shaped as asked, but a packet-rate limit is not among what this
                        // backend installs: say so rather than report it held.
                        None if w.verdict.packets.is_some() => Enforcement::failed(
                            "packet-rate limits are enforced by the ovs backend only \
                             (the tc backend shapes bytes; its packet policer is not built)",
                        ),
                        None => Enforcement::Applied,
                    })
                    .collect()
            }
            Err(e) => {
                warn!(error = %e, "cannot read tc state; no interface can be verified this tick");
                self.counters.clear();
                vec![Enforcement::failed(format!("cannot read tc state: {e}")); shapes.len()]
            }
        }
    }

    /// Remove what sluice installed from the taps in `scope` (`sluice release`).
    pub fn release(&mut self, scope: &Scope) -> Result<Outcome, KernelError> {
        self.converge(&[], scope).map(|(o, _, _)| o)
    }

    /// Times a hypervisor's own shaping was replaced (it put it back, or sluice started).
    pub fn hypervisor_replacements(&self) -> u64 {
        self.replaced_total
    }

    /// Counters of the shaping qdiscs, as of the last reconcile.
    pub fn counters(&self) -> &HashMap<IfName, ShaperCounters> {
        &self.counters
    }

    fn converge(
        &mut self,
        shapes: &[Shape],
        scope: &Scope,
    ) -> Result<(Outcome, Kernel, HashMap<u32, QdiscCounters>), KernelError> {
        let mut outcome = Outcome::default();
        let names: HashMap<u32, &IfName> = shapes.iter().map(|s| (s.ifindex, &s.name)).collect();
        let mut pass = 0;
        loop {
            pass += 1;
            let (kernel, counters) = observe(&mut self.sock, shapes)?;
            let skip: HashSet<u32> = outcome.failed.keys().copied().collect();
            let p = plan(shapes, &kernel, scope, &skip);
            for (tap, why) in p.refused {
                warn!(interface = %label(&names, tap), reason = %why, "not shaping");
                outcome.failed.insert(tap, why);
            }
            if p.steps.is_empty() {
                return Ok((outcome, kernel, counters));
            }
            if pass == PASSES {
                for step in p.steps {
                    outcome.failed.entry(step.tap).or_insert_with(|| {
                        format!("the kernel does not keep it: {}", describe(&step.op))
                    });
                }
                return Ok((outcome, kernel, counters));
            }
            let mut owners = Vec::new();
            let mut batch: Vec<Request> = Vec::new();
            for (i, step) in p.steps.iter().enumerate() {
                debug!(interface = %label(&names, step.tap), change = %describe(&step.op), "tc");
                for r in requests(&step.op) {
                    owners.push(i);
                    batch.push(r);
                }
            }
            let answers = self.sock.batch(batch)?;
            let mut changed: HashSet<u32> = HashSet::new();
            for (owner, answer) in owners.into_iter().zip(answers) {
                let step = &p.steps[owner];
                outcome.changes += 1;
                changed.insert(step.tap);
                let hypervisors = matches!(
                    step.op,
                    Op::DelHypervisorRoot { .. } | Op::DelHypervisorIngress { .. }
                );
                if hypervisors
                    && matches!(answer, Answer::Done)
                    && outcome.replaced.insert(step.tap)
                {
                    info!(interface = %label(&names, step.tap), "the hypervisor's own shaping replaced by sluice's at the instance's rate");
                }
                if let Answer::Failed(e) = answer
                    && !harmless(&step.op, &e)
                {
                    warn!(interface = %label(&names, step.tap), change = %describe(&step.op), error = %e, "tc change refused");
                    outcome
                        .failed
                        .entry(step.tap)
                        .or_insert_with(|| format!("{}: {e}", describe(&step.op)));
                }
            }
            info!(
                changes = outcome.changes,
                interfaces = changed.len(),
                pass,
                "tc changes applied"
            );
        }
    }
}

fn label(names: &HashMap<u32, &IfName>, tap: u32) -> String {
    names
        .get(&tap)
        .map(|n| n.to_string())
        .unwrap_or_else(|| format!("ifindex {tap}"))
}

fn shaper_counters(
    shapes: &[Shape],
    kernel: &Kernel,
    counters: &HashMap<u32, QdiscCounters>,
) -> HashMap<IfName, ShaperCounters> {
    shapes
        .iter()
        .filter_map(|s| {
            let ours = |dev: u32| {
                kernel
                    .roots
                    .get(&dev)
                    .filter(|r| r.ours())
                    .and_then(|_| counters.get(&dev).copied())
            };
            let download = ours(s.ifindex);
            let upload = kernel
                .ifbs
                .get(&s.ifindex)
                .filter(|i| i.ours)
                .and_then(|i| ours(i.ifindex));
            (download.is_some() || upload.is_some())
                .then(|| (s.name.clone(), ShaperCounters { upload, download }))
        })
        .collect()
}
