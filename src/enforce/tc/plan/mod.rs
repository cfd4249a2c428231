//! The pure part of the tc backend: from what each interface should hold and what the
//! kernel was seen to hold, the list of changes — and the refusals.
//!
//! What sluice installs, and how it knows it is its own:
//! - download: root qdisc `htb` with handle major [`MAJOR`] (0x51ce) on the tap, default
//!   class `51ce:1` at the limit, whose queue is a `pfifo` with handle `51cf:`;
//! - upload: an `ingress` qdisc on the tap holding one `u32` match-all filter at priority
//!   [`FILTER_PRIO`] with handle [`FILTER_HANDLE`] that redirects (mirred egress redirect)
//!   to an ifb named `slifb<tap ifindex>` whose alias starts with [`IFB_ALIAS`], shaped
//!   like the download side.
//!
//! Anything else is somebody else's and is never modified: a root qdisc with another
//! non-zero handle, an ingress holding other filters, an ifb with our name but not our
//! alias. The kernel's own default root qdiscs (handle 0) are replaced, and come back by
//! themselves when sluice deletes its root.
//!
//! One exception: on a tap a hypervisor source claimed, the hypervisor's own shaping —
//! Proxmox's `tap_rate_limit` and libvirt's `<bandwidth>` both install an `htb 1:` root
//! and filters on an `ingress ffff:` — is replaced where sluice shapes that direction
//! (its rate is the instance's base rate, so sluice holds the same limit). When the
//! hypervisor puts it back (a VM start, a NIC hotplug), the next tick replaces it again.

use std::collections::{HashMap, HashSet};

use super::encode::HtbClass;
use crate::model::ids::IfName;

/// Handle major of every qdisc sluice creates ("51ce" ~ "slice").
pub const MAJOR: u16 = 0x51ce;
/// Minor of the default class.
pub const CLASS_MINOR: u16 = 1;
/// Handle major of the class's leaf queue.
pub const LEAF_MAJOR: u16 = 0x51cf;
/// Priority of the redirect filter on the tap's ingress.
pub const FILTER_PRIO: u16 = 0x51ce;
/// u32 handle `800::800`: the first node of the root hash table.
pub const FILTER_HANDLE: u32 = 0x8000_0800;
/// Prefix of the alias that marks an ifb as sluice's.
pub const IFB_ALIAS: &str = "sluice: upload shaper of ";
const IFB_PREFIX: &str = "slifb";

/// The ifb that shapes the upload of the tap with `ifindex`: deterministic, so a restarted
/// agent finds it again, and ≤ 15 bytes ("slifb" + at most 10 digits).
pub fn ifb_name(tap_ifindex: u32) -> String {
    format!("{IFB_PREFIX}{tap_ifindex}")
}

/// The tap ifindex an ifb name was made for.
pub fn ifb_tap(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(IFB_PREFIX)?;
    if digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// What one interface should hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub name: IfName,
    pub ifindex: u32,
    pub upload: Option<HtbClass>,
    pub download: Option<HtbClass>,
    /// Claimed by a hypervisor source: its own shaping on the tap may be replaced.
    pub hypervisor: bool,
}

/// A root qdisc as seen in the dump.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Root {
    pub kind: String,
    pub major: u16,
}

impl Root {
    pub fn ours(&self) -> bool {
        self.major == MAJOR && self.kind == "htb"
    }
    /// Put there by someone on purpose (the kernel's defaults have handle 0).
    pub fn foreign(&self) -> bool {
        !self.ours() && self.major != 0
    }
    /// The root Proxmox and libvirt give a tap they shape.
    pub fn hypervisors(&self) -> bool {
        self.kind == "htb" && self.major == HYPERVISOR_MAJOR
    }
}

/// Handle major of the hypervisors' own root qdisc (`htb 1:`).
pub const HYPERVISOR_MAJOR: u16 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct Ifb {
    pub ifindex: u32,
    pub up: bool,
    /// Carries sluice's alias.
    pub ours: bool,
}

/// The filters on a tap's ingress.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngressFilters {
    /// Where sluice's filter redirects to (an ifindex), when it is there.
    pub ours: Option<u32>,
    /// Filters that are not sluice's. Only looked for (so only meaningful) where sluice's
    /// filter is missing or is about to be removed; the plan asks nothing else of it.
    pub foreign: bool,
}

/// What the kernel was seen to hold.
#[derive(Debug, Default)]
pub struct Kernel {
    pub roots: HashMap<u32, Root>,
    /// Devices with an ingress-side qdisc, and its kind ("ingress" or "clsact").
    pub ingress: HashMap<u32, String>,
    /// Our-named ifbs, by the tap ifindex in their name.
    pub ifbs: HashMap<u32, Ifb>,
    /// Class `51ce:1` of devices whose root is ours.
    pub classes: HashMap<u32, HtbClass>,
    /// Limit (packets) of the `pfifo 51cf:` under class `51ce:1`, by device.
    pub leaves: HashMap<u32, u32>,
    /// Ingress filters of the taps that were looked at.
    pub filters: HashMap<u32, IngressFilters>,
}

/// One change. `dev` is an ifindex.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    AddRoot {
        dev: u32,
    },
    DelRoot {
        dev: u32,
    },
    /// Remove the hypervisor's `htb 1:` root (see the module header).
    DelHypervisorRoot {
        dev: u32,
    },
    /// Remove the hypervisor's ingress qdisc, and with it its policing filter.
    DelHypervisorIngress {
        dev: u32,
    },
    SetClass {
        dev: u32,
        class: HtbClass,
    },
    /// Add or replace the class's pfifo leaf.
    SetLeaf {
        dev: u32,
        limit: u32,
    },
    AddIngress {
        dev: u32,
    },
    DelIngress {
        dev: u32,
    },
    SetFilter {
        dev: u32,
        ifb: u32,
    },
    DelFilter {
        dev: u32,
    },
    /// Create `slifb<tap>`, up, with sluice's alias naming `name`.
    CreateIfb {
        tap: u32,
        name: IfName,
    },
    IfbUp {
        ifb: u32,
    },
    DelIfb {
        ifb: u32,
    },
}

/// A change made on behalf of the tap with ifindex `tap`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub tap: u32,
    pub op: Op,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Taps whose shape cannot be installed without touching what is not sluice's.
    pub refused: HashMap<u32, String>,
}

/// Which interfaces not in the wanted list may be cleaned up.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Everything sluice installed anywhere (the agent: nothing not wanted stays).
    All,
    /// Only these taps (`sluice release IF…`).
    Only(HashSet<u32>),
}

impl Scope {
    fn covers(&self, tap: u32) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(set) => set.contains(&tap),
        }
    }
}

/// The changes that make `kernel` hold `shapes`, and remove sluice's state from taps in
/// `scope` that are not in `shapes`. `skip` taps are left alone (they failed this tick).
pub fn plan(shapes: &[Shape], kernel: &Kernel, scope: &Scope, skip: &HashSet<u32>) -> Plan {
    let mut plan = Plan::default();
    let wanted: HashSet<u32> = shapes.iter().map(|s| s.ifindex).collect();
    for s in shapes.iter().filter(|s| !skip.contains(&s.ifindex)) {
        if let Err(why) = plan_download(s, kernel, &mut plan.steps)
            .and_then(|()| plan_upload(s, kernel, &mut plan.steps))
        {
            plan.steps.retain(|st| st.tap != s.ifindex);
            plan.refused.insert(s.ifindex, why);
        }
    }
    let ifb_devs: HashSet<u32> = kernel.ifbs.values().map(|i| i.ifindex).collect();
    let mut stray: Vec<u32> = kernel
        .roots
        .iter()
        .filter(|(dev, root)| root.ours() && !wanted.contains(dev) && !ifb_devs.contains(dev))
        .map(|(dev, _)| *dev)
        .filter(|dev| scope.covers(*dev) && !skip.contains(dev))
        .collect();
    stray.sort_unstable();
    for dev in stray {
        plan.steps.push(Step {
            tap: dev,
            op: Op::DelRoot { dev },
        });
    }
    let mut orphans: Vec<u32> = kernel
        .ifbs
        .iter()
        .filter(|(tap, ifb)| ifb.ours && !wanted.contains(tap))
        .map(|(tap, _)| *tap)
        .filter(|tap| scope.covers(*tap) && !skip.contains(tap))
        .collect();
    orphans.sort_unstable();
    for tap in orphans {
        release_upload(tap, kernel, &mut plan.steps);
    }
    plan
}

fn plan_download(s: &Shape, k: &Kernel, steps: &mut Vec<Step>) -> Result<(), String> {
    let dev = s.ifindex;
    let root = k.roots.get(&dev);
    let push = |steps: &mut Vec<Step>, op| steps.push(Step { tap: dev, op });
    match (&s.download, root) {
        (Some(class), Some(r)) if r.foreign() && s.hypervisor && r.hypervisors() => {
            push(steps, Op::DelHypervisorRoot { dev });
            plan_tree(dev, dev, class, k, steps);
        }
        (Some(_), Some(r)) if r.foreign() => {
            return Err(format!(
                "{} has a root qdisc {} {:x}: that sluice did not install; not touching it",
                s.name, r.kind, r.major
            ));
        }
        (Some(class), _) => plan_tree(dev, dev, class, k, steps),
        (None, Some(r)) if r.ours() => push(steps, Op::DelRoot { dev }),
        (None, _) => {}
    }
    Ok(())
}

fn plan_upload(s: &Shape, k: &Kernel, steps: &mut Vec<Step>) -> Result<(), String> {
    let tap = s.ifindex;
    let Some(class) = &s.upload else {
        release_upload(tap, k, steps);
        return Ok(());
    };
    let push = |steps: &mut Vec<Step>, op| steps.push(Step { tap, op });
    let Some(ifb) = k.ifbs.get(&tap) else {
        // Everything else needs the new ifb's ifindex: next round.
        push(
            steps,
            Op::CreateIfb {
                tap,
                name: s.name.clone(),
            },
        );
        return Ok(());
    };
    if !ifb.ours {
        return Err(format!(
            "{} exists without sluice's alias; not touching it",
            ifb_name(tap)
        ));
    }
    let filters = k.filters.get(&tap).cloned().unwrap_or_default();
    let replace = filters.foreign
        && filters.ours.is_none()
        && s.hypervisor
        && k.ingress.get(&tap).is_some_and(|kind| kind == "ingress");
    if filters.foreign && filters.ours.is_none() && !replace {
        return Err(format!(
            "the ingress of {} holds filters that sluice did not install; not touching it",
            s.name
        ));
    }
    if !ifb.up {
        push(steps, Op::IfbUp { ifb: ifb.ifindex });
    }
    let dev = ifb.ifindex;
    plan_tree(tap, dev, class, k, steps);
    if replace {
        push(steps, Op::DelHypervisorIngress { dev: tap });
        push(steps, Op::AddIngress { dev: tap });
        push(steps, Op::SetFilter { dev: tap, ifb: dev });
    } else if !k.ingress.contains_key(&tap) {
        push(steps, Op::AddIngress { dev: tap });
        push(steps, Op::SetFilter { dev: tap, ifb: dev });
    } else if filters.ours != Some(dev) {
        push(steps, Op::SetFilter { dev: tap, ifb: dev });
    }
    Ok(())
}

/// The HTB tree on `dev` (a tap, or the ifb of `tap`): root, class, leaf queue.
fn plan_tree(tap: u32, dev: u32, class: &HtbClass, k: &Kernel, steps: &mut Vec<Step>) {
    let mut push = |op| steps.push(Step { tap, op });
    let fresh = !k.roots.get(&dev).is_some_and(Root::ours);
    if fresh {
        push(Op::AddRoot { dev });
    }
    if fresh || !k.classes.get(&dev).is_some_and(|c| c.holds(class)) {
        push(Op::SetClass { dev, class: *class });
    }
    if fresh || k.leaves.get(&dev) != Some(&class.queue) {
        push(Op::SetLeaf {
            dev,
            limit: class.queue,
        });
    }
}

/// Remove the redirect (and the ingress qdisc when nothing else uses it) and the ifb.
fn release_upload(tap: u32, k: &Kernel, steps: &mut Vec<Step>) {
    if let Some(f) = k.filters.get(&tap)
        && f.ours.is_some()
    {
        let only_ours = !f.foreign && k.ingress.get(&tap).is_some_and(|kind| kind == "ingress");
        let op = if only_ours {
            Op::DelIngress { dev: tap }
        } else {
            Op::DelFilter { dev: tap }
        };
        steps.push(Step { tap, op });
    }
    if let Some(ifb) = k.ifbs.get(&tap)
        && ifb.ours
    {
        steps.push(Step {
            tap,
            op: Op::DelIfb { ifb: ifb.ifindex },
        });
    }
}

#[cfg(test)]
mod tests;
