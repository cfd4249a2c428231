//! The tc backend's edge: reading what the kernel holds into a [`Kernel`] view, and
//! turning [`Op`]s into netlink requests.
//!
//! One observation costs one qdisc dump (every device), one link dump filtered by the
//! kernel to `ifb` devices, one pipelined batch of class gets, and one small filter dump
//! per shaped tap that has an ingress qdisc (dumps cannot be pipelined on one socket).

use std::collections::{BTreeSet, HashMap};

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, Nla, NlasIterator};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkHeader, LinkInfo, LinkMessage,
};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};

use super::encode::{HtbClass, fifo_limit, fifo_opt, htb_init};
use super::plan::{
    CLASS_MINOR, FILTER_HANDLE, FILTER_PRIO, IFB_ALIAS, Ifb, IngressFilters, Kernel, LEAF_MAJOR,
    MAJOR, Op, Root, Shape, ifb_name, ifb_tap,
};
use crate::sys::netlink::{Answer, KernelError, Request, RouteSocket};

/// `ETH_P_ALL` in network byte order, as the filter's protocol.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();
/// sluice's HTB root (`51ce:`), its class (`51ce:1`), the class's leaf queue (`51cf:`)
/// and the ingress qdisc's fixed handle (`ffff:`).
const ROOT_HANDLE: TcHandle = TcHandle {
    major: MAJOR,
    minor: 0,
};
const CLASS_HANDLE: TcHandle = TcHandle {
    major: MAJOR,
    minor: CLASS_MINOR,
};
const LEAF_HANDLE: TcHandle = TcHandle {
    major: LEAF_MAJOR,
    minor: 0,
};
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// Filters hang on the ingress qdisc's ingress block (`ffff:fff2`, also right for clsact).
const FILTER_PARENT: TcHandle = TcHandle {
    major: 0xffff,
    minor: TcHandle::MIN_INGRESS,
};
/// txqueuelen of the ifbs sluice creates: the HTB leaf queue is that many packets, and the
/// ifb default of 32 drops TCP windows at high rates.
const IFB_TXQLEN: u32 = 1000;
use libc::{
    IFLA_EXT_MASK, IFLA_IFALIAS, IFLA_IFNAME, IFLA_INFO_KIND, IFLA_LINKINFO, RTM_NEWLINK,
    TCA_OPTIONS,
};
const RTEXT_FILTER_SKIP_STATS: u32 = libc::RTEXT_FILTER_SKIP_STATS as u32;
const LINK_HEADER_LEN: usize = 16;

/// Byte and drop counters of one shaping qdisc, cumulative since it was installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QdiscCounters {
    pub sent_bytes: u64,
    pub sent_packets: u64,
    pub dropped_packets: u64,
    pub overlimits: u64,
    pub backlog_bytes: u64,
}

/// Read what the kernel holds for `shapes` and for everything sluice installed anywhere;
/// also every root qdisc's counters, by device.
pub fn observe(
    sock: &mut RouteSocket,
    shapes: &[Shape],
) -> Result<(Kernel, HashMap<u32, QdiscCounters>), KernelError> {
    let mut k = Kernel::default();
    let mut counters = HashMap::new();
    for msg in sock.dump(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()))? {
        let RouteNetlinkMessage::NewQueueDiscipline(q) = msg else {
            continue;
        };
        let dev = q.header.index as u32;
        let kind = kind_of(&q.attributes).unwrap_or_default();
        if q.header.parent == TcHandle::ROOT {
            counters.insert(dev, counters_of(&q.attributes));
            k.roots.insert(
                dev,
                Root {
                    kind,
                    major: q.header.handle.major,
                },
            );
        } else if q.header.parent == TcHandle::INGRESS {
            k.ingress.insert(dev, kind);
        } else if q.header.parent == (CLASS_HANDLE)
            && q.header.handle.major == LEAF_MAJOR
            && kind == "pfifo"
            && let Some(limit) = raw_options(&q.attributes).as_deref().and_then(fifo_limit)
        {
            k.leaves.insert(dev, limit);
        }
    }

    let mut ifb_request = LinkMessage::default();
    ifb_request
        .attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
    // RTEXT_FILTER_SKIP_STATS: the kernel's cost of a link answer is mostly its counters.
    ifb_request
        .attributes
        .push(LinkAttribute::Other(DefaultNla::new(
            IFLA_EXT_MASK,
            RTEXT_FILTER_SKIP_STATS.to_ne_bytes().to_vec(),
        )));
    // Read in place: a parsed LinkMessage costs ~20 µs, ten times the rest of the answer.
    sock.dump_raw(
        RouteNetlinkMessage::GetLink(ifb_request),
        |_, kind, payload| {
            if kind == RTM_NEWLINK
                && let Some((ifindex, up, name, ours)) = link_fields(payload)
                && let Some(tap) = ifb_tap(&name)
            {
                k.ifbs.insert(tap, Ifb { ifindex, up, ours });
            }
            Ok(())
        },
    )?;

    let ours: Vec<u32> = {
        let mut v: Vec<u32> = k
            .roots
            .iter()
            .filter(|(_, r)| r.ours())
            .map(|(d, _)| *d)
            .collect();
        v.sort_unstable();
        v
    };
    let answers = sock.get_all(ours.iter().map(|dev| {
        let mut m = TcMessage::with_index(*dev as i32);
        m.header.handle = CLASS_HANDLE;
        RouteNetlinkMessage::GetTrafficClass(m)
    }))?;
    for (dev, answer) in ours.iter().zip(answers) {
        if let Answer::Reply(msg) = answer
            && let RouteNetlinkMessage::NewTrafficClass(c) = *msg
            && let Some(class) = htb_class_of(&c.attributes)
        {
            k.classes.insert(*dev, class);
        }
    }

    // Taps whose ingress filters matter: wanted ones, and those sluice left an ifb for.
    let taps: BTreeSet<u32> = shapes
        .iter()
        .map(|s| s.ifindex)
        .chain(k.ifbs.keys().copied())
        .filter(|t| k.ingress.contains_key(t))
        .collect();
    // Steady state costs one pipelined get of sluice's own filter per tap. Only where it
    // is missing (to install: are there foreign filters?) or about to go (release: does
    // the ingress qdisc hold anything else?) is the whole ingress dumped — dumps cannot
    // be pipelined on one socket.
    let answers = sock.get_all(taps.iter().map(|tap| {
        let mut m = filter_message(*tap);
        m.header.handle = FILTER_HANDLE.into();
        RouteNetlinkMessage::GetTrafficFilter(m)
    }))?;
    let keeps_upload: BTreeSet<u32> = shapes
        .iter()
        .filter(|s| s.upload.is_some())
        .map(|s| s.ifindex)
        .collect();
    for (tap, answer) in taps.into_iter().zip(answers) {
        let ours = match answer {
            Answer::Reply(msg) => match *msg {
                RouteNetlinkMessage::NewTrafficFilter(f) => redirect_target(&f.attributes),
                _ => None,
            },
            _ => None,
        };
        if ours.is_some() && keeps_upload.contains(&tap) {
            k.filters.insert(
                tap,
                IngressFilters {
                    ours,
                    foreign: false,
                },
            );
            continue;
        }
        let mut req = TcMessage::with_index(tap as i32);
        req.header.parent = FILTER_PARENT;
        let msgs = match sock.dump(RouteNetlinkMessage::GetTrafficFilter(req)) {
            Ok(m) => m,
            // The tap went away between the dumps.
            Err(e) if e.is(libc::ENODEV) || e.is(libc::EINVAL) => continue,
            Err(e) => return Err(e),
        };
        let mut seen = IngressFilters::default();
        for msg in msgs {
            let RouteNetlinkMessage::NewTrafficFilter(f) = msg else {
                continue;
            };
            if (f.header.info >> 16) as u16 != FILTER_PRIO {
                seen.foreign = true;
            } else if u32::from(f.header.handle) == FILTER_HANDLE {
                seen.ours = redirect_target(&f.attributes);
            }
        }
        k.filters.insert(tap, seen);
    }
    Ok((k, counters))
}

/// The requests that carry out `op` (creating an ifb takes two: the link, then its alias,
/// which the kernel does not take at creation).
pub fn requests(op: &Op) -> Vec<Request> {
    let change = |message, flags| Request {
        message,
        flags,
        get: false,
    };
    match op {
        Op::AddRoot { dev } => {
            let mut m = tc_message(*dev, TcHandle::ROOT, ROOT_HANDLE);
            m.attributes.push(TcAttribute::Kind("htb".into()));
            m.attributes.push(TcAttribute::Options(vec![TcOption::Other(
                DefaultNla::new(super::encode::TCA_HTB_INIT, htb_init(CLASS_MINOR)),
            )]));
            vec![change(
                RouteNetlinkMessage::NewQueueDiscipline(m),
                NLM_F_CREATE | NLM_F_EXCL,
            )]
        }
        Op::DelRoot { dev } => {
            let m = tc_message(*dev, TcHandle::ROOT, ROOT_HANDLE);
            vec![change(RouteNetlinkMessage::DelQueueDiscipline(m), 0)]
        }
        Op::DelHypervisorRoot { dev } => {
            let handle = TcHandle {
                major: super::plan::HYPERVISOR_MAJOR,
                minor: 0,
            };
            let m = tc_message(*dev, TcHandle::ROOT, handle);
            vec![change(RouteNetlinkMessage::DelQueueDiscipline(m), 0)]
        }
        Op::DelHypervisorIngress { dev } => {
            let m = tc_message(*dev, TcHandle::INGRESS, INGRESS_HANDLE);
            vec![change(RouteNetlinkMessage::DelQueueDiscipline(m), 0)]
        }
        Op::SetClass { dev, class } => {
            let mut m = tc_message(*dev, ROOT_HANDLE, CLASS_HANDLE);
            m.attributes.push(TcAttribute::Kind("htb".into()));
            m.attributes.push(TcAttribute::Options(
                class
                    .options()
                    .into_iter()
                    .map(|(k, v)| TcOption::Other(DefaultNla::new(k, v)))
                    .collect(),
            ));
            vec![change(
                RouteNetlinkMessage::NewTrafficClass(m),
                NLM_F_CREATE,
            )]
        }
        Op::SetLeaf { dev, limit } => {
            let mut m = tc_message(*dev, CLASS_HANDLE, LEAF_HANDLE);
            m.attributes.push(TcAttribute::Kind("pfifo".into()));
            // pfifo's options are a bare struct, not nested attributes.
            m.attributes.push(TcAttribute::Other(DefaultNla::new(
                TCA_OPTIONS,
                fifo_opt(*limit),
            )));
            vec![change(
                RouteNetlinkMessage::NewQueueDiscipline(m),
                NLM_F_CREATE | NLM_F_REPLACE,
            )]
        }
        Op::AddIngress { dev } => {
            let mut m = tc_message(*dev, TcHandle::INGRESS, INGRESS_HANDLE);
            m.attributes.push(TcAttribute::Kind("ingress".into()));
            vec![change(
                RouteNetlinkMessage::NewQueueDiscipline(m),
                NLM_F_CREATE | NLM_F_EXCL,
            )]
        }
        Op::DelIngress { dev } => {
            let m = tc_message(*dev, TcHandle::INGRESS, INGRESS_HANDLE);
            vec![change(RouteNetlinkMessage::DelQueueDiscipline(m), 0)]
        }
        Op::SetFilter { dev, ifb } => {
            let mut m = filter_message(*dev);
            m.header.handle = FILTER_HANDLE.into();
            m.attributes.push(TcAttribute::Kind("u32".into()));
            m.attributes.push(TcAttribute::Options(vec![
                TcOption::U32(TcFilterU32Option::Selector(match_all())),
                TcOption::U32(TcFilterU32Option::Action(vec![redirect_to(*ifb)])),
            ]));
            vec![change(
                RouteNetlinkMessage::NewTrafficFilter(m),
                NLM_F_CREATE,
            )]
        }
        Op::DelFilter { dev } => {
            // Handle 0 at our priority: the whole u32 instance sluice added goes.
            let m = filter_message(*dev);
            vec![change(RouteNetlinkMessage::DelTrafficFilter(m), 0)]
        }
        Op::CreateIfb { tap, name } => {
            let ifb = ifb_name(*tap);
            let mut create = LinkMessage::default();
            create.header.flags = LinkFlags::Up;
            create.header.change_mask = LinkFlags::Up;
            create.attributes = vec![
                LinkAttribute::IfName(ifb.clone()),
                LinkAttribute::TxQueueLen(IFB_TXQLEN),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]),
            ];
            let mut alias = LinkMessage::default();
            alias.attributes = vec![
                LinkAttribute::IfName(ifb),
                LinkAttribute::IfAlias(format!("{IFB_ALIAS}{name}")),
            ];
            vec![
                change(
                    RouteNetlinkMessage::NewLink(create),
                    NLM_F_CREATE | NLM_F_EXCL,
                ),
                change(RouteNetlinkMessage::SetLink(alias), 0),
            ]
        }
        Op::IfbUp { ifb } => {
            let mut m = LinkMessage::default();
            m.header.index = *ifb;
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
            vec![change(RouteNetlinkMessage::SetLink(m), 0)]
        }
        Op::DelIfb { ifb } => {
            let mut m = LinkMessage::default();
            m.header.index = *ifb;
            vec![change(RouteNetlinkMessage::DelLink(m), 0)]
        }
    }
}

/// Whether a failed request still leaves the kernel as the op wanted it (deleting what is
/// already gone).
pub fn harmless(op: &Op, e: &KernelError) -> bool {
    let deleting = matches!(
        op,
        Op::DelRoot { .. }
            | Op::DelHypervisorRoot { .. }
            | Op::DelHypervisorIngress { .. }
            | Op::DelIngress { .. }
            | Op::DelFilter { .. }
            | Op::DelIfb { .. }
    );
    deleting && (e.is(libc::ENOENT) || e.is(libc::ENODEV) || e.is(libc::EINVAL))
}

/// What an op is, for a log line or an `enforce_failed` reason.
pub fn describe(op: &Op) -> String {
    match op {
        Op::AddRoot { dev } => format!("add htb root qdisc on ifindex {dev}"),
        Op::DelRoot { dev } => format!("delete htb root qdisc on ifindex {dev}"),
        Op::DelHypervisorRoot { dev } => {
            format!("replace the hypervisor's htb 1: root qdisc on ifindex {dev}")
        }
        Op::DelHypervisorIngress { dev } => {
            format!("replace the hypervisor's ingress qdisc and its policing on ifindex {dev}")
        }
        Op::SetClass { dev, class } => format!(
            "set htb class {MAJOR:x}:{CLASS_MINOR} on ifindex {dev} to {} bit/s",
            class.rate_bits()
        ),
        Op::SetLeaf { dev, limit } => {
            format!("set the {limit}-packet pfifo under {MAJOR:x}:{CLASS_MINOR} on ifindex {dev}")
        }
        Op::AddIngress { dev } => format!("add ingress qdisc on ifindex {dev}"),
        Op::DelIngress { dev } => format!("delete ingress qdisc on ifindex {dev}"),
        Op::SetFilter { dev, ifb } => {
            format!("redirect ingress of ifindex {dev} to ifindex {ifb}")
        }
        Op::DelFilter { dev } => format!("delete redirect filter on ifindex {dev}"),
        Op::CreateIfb { tap, .. } => format!("create ifb {}", ifb_name(*tap)),
        Op::IfbUp { ifb } => format!("set ifb ifindex {ifb} up"),
        Op::DelIfb { ifb } => format!("delete ifb ifindex {ifb}"),
    }
}

/// (ifindex, up, name, carries sluice's alias) of an ifb's RTM_NEWLINK payload; `None`
/// unless it says it is an ifb (the kernel filtered the dump by kind, but a kernel that
/// ignores the filter must not make other devices look like sluice's).
fn link_fields(payload: &[u8]) -> Option<(u32, bool, String, bool)> {
    let header = LinkHeader::parse(payload.get(..LINK_HEADER_LEN)?).ok()?;
    let (mut name, mut ours, mut is_ifb) = (None, false, false);
    for nla in NlasIterator::new(payload.get(LINK_HEADER_LEN..)?).filter_map(Result::ok) {
        let value = nla.value();
        match nla.kind() & 0x3fff {
            IFLA_IFNAME => name = std::str::from_utf8(until_nul(value)).ok().map(String::from),
            IFLA_IFALIAS => ours = until_nul(value).starts_with(IFB_ALIAS.as_bytes()),
            IFLA_LINKINFO => {
                is_ifb = NlasIterator::new(value)
                    .filter_map(Result::ok)
                    .any(|i| i.kind() & 0x3fff == IFLA_INFO_KIND && until_nul(i.value()) == b"ifb");
            }
            _ => {}
        }
    }
    is_ifb.then_some((
        header.index,
        header.flags.contains(LinkFlags::Up),
        name?,
        ours,
    ))
}

fn until_nul(b: &[u8]) -> &[u8] {
    b.split(|c| *c == 0).next().unwrap_or_default()
}

/// A tc message about the object `handle` under `parent` on device `dev`.
fn tc_message(dev: u32, parent: TcHandle, handle: TcHandle) -> TcMessage {
    let mut m = TcMessage::with_index(dev as i32);
    m.header.parent = parent;
    m.header.handle = handle;
    m
}

fn filter_message(dev: u32) -> TcMessage {
    let mut m = TcMessage::with_index(dev as i32);
    m.header.parent = FILTER_PARENT;
    // Priority in the high half, protocol (network order) in the low half.
    m.header.info = (u32::from(FILTER_PRIO) << 16) | u32::from(ETH_P_ALL_BE);
    m
}

/// A u32 selector with one all-zero key: every packet matches.
fn match_all() -> TcU32Selector {
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![TcU32Key::default()];
    sel
}

/// mirred egress redirect to `ifindex`; the packet is stolen from the tap's ingress.
fn redirect_to(ifindex: u32) -> TcAction {
    let mut mirror = TcMirror::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = ifindex;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.to_string()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    action
}

fn redirect_target(attrs: &[TcAttribute]) -> Option<u32> {
    attrs.iter().find_map(|a| match a {
        TcAttribute::Options(opts) => opts.iter().find_map(|o| match o {
            TcOption::U32(TcFilterU32Option::Action(actions)) => actions.iter().find_map(|act| {
                act.attributes.iter().find_map(|aa| match aa {
                    TcActionAttribute::Options(ao) => ao.iter().find_map(|x| match x {
                        TcActionOption::Mirror(TcActionMirrorOption::Parms(m))
                            if m.eaction == TcMirrorActionType::EgressRedir =>
                        {
                            Some(m.ifindex)
                        }
                        _ => None,
                    }),
                    _ => None,
                })
            }),
            _ => None,
        }),
        _ => None,
    })
}

fn kind_of(attrs: &[TcAttribute]) -> Option<String> {
    attrs.iter().find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k.clone()),
        _ => None,
    })
}

fn counters_of(attrs: &[TcAttribute]) -> QdiscCounters {
    attrs
        .iter()
        .find_map(|a| match a {
            TcAttribute::Stats(s) => Some(QdiscCounters {
                sent_bytes: s.bytes,
                sent_packets: u64::from(s.packets),
                dropped_packets: u64::from(s.drops),
                overlimits: u64::from(s.overlimits),
                backlog_bytes: u64::from(s.backlog),
            }),
            _ => None,
        })
        .unwrap_or_default()
}

/// The raw value of `TCA_OPTIONS` of a kind netlink-packet-route does not model (it
/// keeps the whole attribute as one opaque NLA).
fn raw_options(attrs: &[TcAttribute]) -> Option<Vec<u8>> {
    attrs.iter().find_map(|a| match a {
        TcAttribute::Options(opts) => opts.iter().find_map(|o| match o {
            TcOption::Other(nla) if nla.kind() & 0x3fff == TCA_OPTIONS => {
                let mut v = vec![0u8; nla.value_len()];
                nla.emit_value(&mut v);
                Some(v)
            }
            _ => None,
        }),
        _ => None,
    })
}

/// An HTB class from a class message: its `TCA_OPTIONS` comes through as one raw NLA
/// (netlink-packet-route does not know htb), whose value holds the nested attributes.
pub fn htb_class_of(attrs: &[TcAttribute]) -> Option<HtbClass> {
    let raw = raw_options(attrs)?;
    let nested: Vec<(u16, Vec<u8>)> = NlasIterator::new(raw.as_slice())
        .filter_map(Result::ok)
        .map(|n| (n.kind() & 0x3fff, n.value().to_vec()))
        .collect();
    HtbClass::parse(nested.iter().map(|(k, v)| (*k, v.as_slice())))
}
