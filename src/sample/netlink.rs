//! Link counters over rtnetlink, one dump per tick whatever the number of interfaces.
//!
//! Counters come from an `RTM_GETSTATS` dump asking only for `IFLA_STATS_LINK_64`: the
//! kernel then sends 64-bit counters and nothing else, far cheaper than a full
//! `RTM_GETLINK` dump (which carries every attribute of every link). Stats messages name
//! interfaces by ifindex only, so a name cache is kept from one `RTM_GETLINK` dump and
//! then kept current by the kernel's link notifications (the socket joins
//! `RTNLGRP_LINK`): a rename, which keeps the ifindex, is seen at once. A full refresh
//! also happens whenever the stats dump shows an ifindex the cache does not know, or a
//! cached one is missing (a notification may have been lost to a full socket buffer).

use std::collections::{HashMap, HashSet};

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::stats::{StatsAttribute, StatsFilterMask, StatsHeader, StatsMessage};
use netlink_sys::{AsyncSocket, SocketAddr};
use rtnetlink::Handle;

use super::Sample;
use crate::names::IfName;

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("netlink link dump failed: {0}")]
    LinkDump(rtnetlink::Error),
    #[error("netlink stats dump failed: {0}")]
    StatsDump(String),
}

/// Samples every interface's counters with one netlink stats dump.
pub struct LinkSampler {
    handle: Handle,
    /// ifindex → name; `None` for names that are not valid [`IfName`]s (never sampled).
    names: HashMap<u32, Option<IfName>>,
    /// Link notifications (RTM_NEWLINK / RTM_DELLINK) since the last sample.
    events: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    /// The cache has never been filled.
    fresh: bool,
}

/// Multicast group of link notifications (RTNLGRP_LINK = 1).
const RTNLGRP_LINK_MASK: u32 = 1;

impl LinkSampler {
    /// Open a netlink socket in the calling thread's network namespace. The connection task
    /// is spawned on the current tokio runtime.
    pub fn open() -> Result<Self, SampleError> {
        let (mut conn, handle, events) = rtnetlink::new_connection()?;
        conn.socket_mut()
            .socket_mut()
            .bind(&SocketAddr::new(0, RTNLGRP_LINK_MASK))?;
        tokio::spawn(conn);
        Ok(LinkSampler {
            handle,
            names: HashMap::new(),
            events,
            fresh: true,
        })
    }

    /// One sample of every interface, in ifindex order.
    pub async fn sample(&mut self) -> Result<Vec<Sample>, SampleError> {
        let stats = self.dump_stats().await?;
        // Notifications queued before the dump's answers have been read by now.
        self.apply_link_events();
        let stale = self.fresh
            || stats.iter().any(|(idx, ..)| !self.names.contains_key(idx))
            || self.names.len() != stats.len();
        if stale {
            self.refresh_names().await?;
        }
        let mut out = Vec::with_capacity(stats.len());
        for (ifindex, rx_bytes, tx_bytes, rx_packets, tx_packets) in stats {
            // An interface created between the two dumps is simply sampled next tick.
            let Some(Some(name)) = self.names.get(&ifindex) else {
                continue;
            };
            out.push(Sample {
                ifindex,
                name: name.clone(),
                rx_bytes,
                tx_bytes,
                rx_packets,
                tx_packets,
            });
        }
        Ok(out)
    }

    /// The ifindex of each interface name, from the last link dump.
    pub fn ifindex_of(&self, name: &IfName) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| n.as_ref() == Some(name))
            .map(|(i, _)| *i)
    }

    fn apply_link_events(&mut self) {
        while let Ok((msg, _)) = self.events.try_recv() {
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    self.names.insert(link.header.index, name_of(&link));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    self.names.remove(&link.header.index);
                }
                _ => {}
            }
        }
    }

    async fn refresh_names(&mut self) -> Result<(), SampleError> {
        let mut links = self.handle.link().get().execute();
        let mut names = HashMap::with_capacity(self.names.len().max(16));
        while let Some(msg) = links.try_next().await.map_err(SampleError::LinkDump)? {
            names.insert(msg.header.index, name_of(&msg));
        }
        self.names = names;
        self.fresh = false;
        Ok(())
    }

    /// (ifindex, rx_bytes, tx_bytes, rx_packets, tx_packets) of every link.
    async fn dump_stats(&mut self) -> Result<Vec<(u32, u64, u64, u64, u64)>, SampleError> {
        let mut header = StatsHeader::default();
        header.filter_mask = StatsFilterMask::Link64;
        let mut req = StatsMessage::default();
        req.header = header;
        let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetStats(req));
        msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut responses = self
            .handle
            .request(msg)
            .map_err(|e| SampleError::StatsDump(e.to_string()))?;
        let mut out = Vec::with_capacity(self.names.len().max(16));
        let mut seen = HashSet::with_capacity(self.names.len().max(16));
        while let Some(msg) = responses.next().await {
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewStats(m)) => {
                    for attr in &m.attributes {
                        if let StatsAttribute::Link64(s) = attr
                            && seen.insert(m.header.ifindex)
                        {
                            out.push((
                                m.header.ifindex,
                                s.rx_bytes,
                                s.tx_bytes,
                                s.rx_packets,
                                s.tx_packets,
                            ));
                        }
                    }
                }
                NetlinkPayload::Error(e) => return Err(SampleError::StatsDump(e.to_string())),
                _ => {}
            }
        }
        out.sort_unstable_by_key(|s| s.0);
        Ok(out)
    }
}

fn name_of(link: &LinkMessage) -> Option<IfName> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => IfName::new(n.as_str()).ok(),
        _ => None,
    })
}
