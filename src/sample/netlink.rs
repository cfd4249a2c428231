//! Link counters over netlink, one dump per tick whatever the number of interfaces.
//!
//! Counters come from an `RTM_GETSTATS` dump asking only for `IFLA_STATS_LINK_64`: the
//! kernel then sends 64-bit counters and nothing else, far cheaper than a full
//! `RTM_GETLINK` dump (which carries every attribute of every link). Stats messages name
//! interfaces by ifindex only, so a name cache is kept from one `RTM_GETLINK` dump and
//! then kept current by the kernel's link notifications on a second socket that joins
//! `RTNLGRP_LINK`: a rename, which keeps the ifindex, is seen at once. A full refresh
//! also happens when the stats dump shows an ifindex the cache does not know, a cached
//! one is missing, or notifications were lost (the socket overflowed).
//!
//! Why a plain socket ([`RouteSocket`]) rather than rtnetlink's connection: rtnetlink
//! parses every `RTM_GETLINK` answer into a full `LinkMessage` (~17 KB each, all queued
//! before the caller reads one), which made a 1,000-interface refresh peak at 17 MB of
//! heap. Here each answer is read in place from one reused 64 KiB buffer with
//! netlink-packet-route's header parsers and only the name is kept.

use std::io;

use netlink_packet_core::{NLM_F_DUMP_INTR, NetlinkBuffer, NlasIterator};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkHeader, LinkMessage, Stats64};
use netlink_packet_route::stats::{StatsFilterMask, StatsHeader, StatsMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use super::Sample;
use crate::model::ids::{FastMap, IfName};
use crate::sys::netlink::{KernelError, RouteSocket};

use libc::{IFLA_IFNAME, RTM_DELLINK, RTM_NEWLINK, RTM_NEWSTATS};

/// `IFLA_STATS_LINK_64` (linux/if_link.h; libc does not define it).
const IFLA_STATS_LINK_64: u16 = 1;
/// Multicast group of link notifications, as a bind mask (group n is bit n - 1).
const RTNLGRP_LINK_MASK: u32 = 1 << (libc::RTNLGRP_LINK - 1);
/// The kernel sizes dump datagrams at ≤ 32 KiB; twice that never truncates.
const RECV_BUFFER: usize = 64 * 1024;
const LINK_HEADER_LEN: usize = 16;
const STATS_HEADER_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[from] io::Error),
    #[error("netlink {what} dump failed: {source}")]
    Dump {
        what: &'static str,
        #[source]
        source: KernelError,
    },
}

/// Samples every interface's counters with one netlink stats dump.
pub struct LinkSampler {
    dump: RouteSocket,
    notify: Socket,
    /// Receive buffer of the notification socket.
    buf: Vec<u8>,
    /// ifindex → name; `None` for names that are not valid [`IfName`]s (never sampled).
    names: FastMap<u32, Option<IfName>>,
    /// The cache must be refilled before it is trusted.
    stale: bool,
}

impl LinkSampler {
    /// Open netlink sockets in the calling thread's network namespace.
    pub fn open() -> Result<Self, SampleError> {
        let dump = RouteSocket::open()?;
        let mut notify = Socket::new(NETLINK_ROUTE)?;
        notify.bind(&SocketAddr::new(0, RTNLGRP_LINK_MASK))?;
        notify.set_non_blocking(true)?;
        Ok(LinkSampler {
            dump,
            notify,
            buf: Vec::with_capacity(RECV_BUFFER),
            names: FastMap::default(),
            stale: true,
        })
    }

    /// One sample of every interface, in ifindex order.
    pub fn sample(&mut self) -> Result<Vec<Sample>, SampleError> {
        // Only the four counters are kept (a full Stats64 is 200 bytes; at 10,000 interfaces
        // that alone was 2 MB of peak heap).
        let mut stats: Vec<(u32, [u64; 4])> = Vec::with_capacity(self.names.len().max(16));
        let mut interrupted = false;
        let mut req = StatsMessage::default();
        req.header.filter_mask = StatsFilterMask::Link64;
        self.dump
            .dump_raw(
                RouteNetlinkMessage::GetStats(req),
                |bytes, kind, payload| {
                    interrupted |= dump_interrupted(bytes);
                    if kind == RTM_NEWSTATS {
                        let header =
                            StatsHeader::parse(payload).map_err(KernelError::unparsable)?;
                        let link64 =
                            NlasIterator::new(payload.get(STATS_HEADER_LEN..).unwrap_or_default())
                                .filter_map(Result::ok)
                                .find(|nla| nla.kind() == IFLA_STATS_LINK_64);
                        if let Some(nla) = link64 {
                            let s = Stats64::parse(nla.value()).map_err(KernelError::unparsable)?;
                            stats.push((
                                header.ifindex,
                                [s.rx_bytes, s.tx_bytes, s.rx_packets, s.tx_packets],
                            ));
                        }
                    }
                    Ok(())
                },
            )
            .map_err(|e| SampleError::Dump {
                what: "stats",
                source: e,
            })?;
        stats.sort_unstable_by_key(|s| s.0);
        stats.dedup_by_key(|s| s.0);

        self.apply_link_notifications();
        // One lookup per link: the cache is trusted unless a link is missing from it.
        let mut out = Vec::with_capacity(stats.len());
        let known = self.named(&stats, &mut out);
        if self.stale || !known || interrupted || self.names.len() != stats.len() {
            self.refresh_names()?;
            out.clear();
            // A link created between the two dumps is simply sampled next tick.
            self.named(&stats, &mut out);
        }
        Ok(out)
    }

    /// The samples of `stats` whose names are cached (valid ones only), pushed to `out`;
    /// false as soon as an ifindex is not in the cache at all.
    fn named(&self, stats: &[(u32, [u64; 4])], out: &mut Vec<Sample>) -> bool {
        for &(ifindex, [rx_bytes, tx_bytes, rx_packets, tx_packets]) in stats {
            match self.names.get(&ifindex) {
                None => return false,
                Some(None) => {}
                Some(Some(name)) => out.push(Sample {
                    ifindex,
                    name: name.clone(),
                    rx_bytes,
                    tx_bytes,
                    rx_packets,
                    tx_packets,
                }),
            }
        }
        true
    }

    /// Apply queued RTM_NEWLINK / RTM_DELLINK notifications; a lost one marks the cache stale.
    fn apply_link_notifications(&mut self) {
        loop {
            self.buf.clear();
            match self.notify.recv(&mut self.buf, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // ENOBUFS: the kernel dropped notifications; trust nothing cached.
                    self.stale = true;
                    continue;
                }
            }
            let mut off = 0;
            while let Ok(msg) = NetlinkBuffer::new_checked(&self.buf[off..]) {
                let payload = msg.payload();
                let link = LinkHeader::parse(payload).ok();
                match (msg.message_type(), link) {
                    (RTM_NEWLINK, Some(h)) => {
                        self.names.insert(h.index, link_name(payload));
                    }
                    (RTM_DELLINK, Some(h)) => {
                        self.names.remove(&h.index);
                    }
                    _ => {}
                }
                off += align4(msg.length() as usize);
                if off >= self.buf.len() {
                    break;
                }
            }
        }
    }

    fn refresh_names(&mut self) -> Result<(), SampleError> {
        // Notifications that raced with this dump are covered by it.
        self.apply_link_notifications();
        let mut names =
            FastMap::with_capacity_and_hasher(self.names.len().max(16), Default::default());
        let mut interrupted = false;
        self.dump
            .dump_raw(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                |bytes, kind, payload| {
                    interrupted |= dump_interrupted(bytes);
                    if kind == RTM_NEWLINK {
                        let h = LinkHeader::parse(payload).map_err(KernelError::unparsable)?;
                        names.insert(h.index, link_name(payload));
                    }
                    Ok(())
                },
            )
            .map_err(|e| SampleError::Dump {
                what: "link",
                source: e,
            })?;
        self.names = names;
        // An interrupted dump may have missed a link: look again next tick.
        self.stale = interrupted;
        Ok(())
    }
}

/// IFLA_IFNAME of an RTM_NEWLINK payload, if it is a valid [`IfName`].
pub(crate) fn link_name(payload: &[u8]) -> Option<IfName> {
    let nla = NlasIterator::new(payload.get(LINK_HEADER_LEN..)?)
        .filter_map(Result::ok)
        .find(|nla| nla.kind() == IFLA_IFNAME)?;
    let raw = nla.value();
    let raw = raw.split(|b| *b == 0).next()?;
    IfName::new(std::str::from_utf8(raw).ok()?).ok()
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The kernel says the dump may be inconsistent (the table changed while it ran).
fn dump_interrupted(message: &[u8]) -> bool {
    NetlinkBuffer::new_checked(message).is_ok_and(|m| m.flags() & NLM_F_DUMP_INTR != 0)
}
