//! Does the kernel really hold what OVS was told? OVS writes `ingress_policing_rate` to
//! OVSDB happily even when the kernel cannot enforce it (no tc `police` action, no
//! `basic`/`matchall` classifier): ovs-vswitchd then only logs "adding cls_basic policing
//! action failed". The same goes for a QoS row it cannot turn into an HTB qdisc. So after
//! OVS has had its chance, sluice asks the kernel itself.
//!
//! - Upload: OVS installs its policer as a `matchall` filter (newer OVS, when the kernel
//!   has it) or a `basic` filter, each carrying a `police` action, under the `ingress`
//!   qdisc (ffff:).
//! - Download: a `linux-htb` QoS becomes an HTB root `1:` whose class `1:fffe` carries
//!   the QoS's `max-rate` and whose class `1:1` (queue 0, HTB's default class) carries the
//!   queue's, both as `ceil` in bytes per second.

use futures::TryStreamExt;
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcAttribute, TcFilterMatchAllOption, TcHandle, TcOption,
};
use rtnetlink::Handle;

use crate::enforce::tc::htb_class_of;

/// The class of queue 0 of an OVS `linux-htb` QoS: where all of the port's traffic goes
/// when no flow picks a queue.
const QUEUE0_CLASS: TcHandle = TcHandle { major: 1, minor: 1 };

pub struct KernelProbe {
    handle: Handle,
}

impl KernelProbe {
    /// Open an rtnetlink connection; its task is spawned on the current tokio runtime.
    pub fn open() -> std::io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(KernelProbe { handle })
    }

    /// `Ok(true)` when `ifindex`'s ingress holds a policing filter.
    pub async fn has_ingress_policer(&self, ifindex: u32) -> Result<bool, String> {
        let index = index_of(ifindex)?;
        let filters: Vec<_> = match self
            .handle
            .clone()
            .traffic_filter(index)
            .get()
            .ingress()
            .execute()
            .try_collect()
            .await
        {
            Ok(f) => f,
            // No ingress qdisc at all: the dump is refused; that is "no policer".
            Err(rtnetlink::Error::NetlinkError(_)) => return Ok(false),
            Err(e) => return Err(e.to_string()),
        };
        Ok(filters.iter().any(|f| {
            let kind = f.attributes.iter().find_map(|a| match a {
                TcAttribute::Kind(k) => Some(k.as_str()),
                _ => None,
            });
            match kind {
                // matchall is modelled: require its police action.
                Some("matchall") => f.attributes.iter().any(|a| match a {
                    TcAttribute::Options(opts) => opts.iter().any(|o| match o {
                        TcOption::MatchAll(TcFilterMatchAllOption::Action(actions)) => {
                            actions.iter().any(is_police)
                        }
                        _ => false,
                    }),
                    _ => false,
                }),
                // basic's options are not modelled; OVS only installs it to police.
                Some("basic") => true,
                _ => false,
            }
        }))
    }

    /// The ceiling (bit/s) of the HTB class of queue 0 on `ifindex`'s egress; `None` when
    /// the device has no such class.
    pub async fn queue0_ceiling(&self, ifindex: u32) -> Result<Option<u64>, String> {
        let index = index_of(ifindex)?;
        let classes: Vec<_> = match self
            .handle
            .clone()
            .traffic_class(index)
            .get()
            .execute()
            .try_collect()
            .await
        {
            Ok(c) => c,
            Err(rtnetlink::Error::NetlinkError(_)) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        Ok(classes
            .iter()
            .filter(|c| c.header.handle == QUEUE0_CLASS)
            .filter(|c| {
                c.attributes
                    .iter()
                    .any(|a| matches!(a, TcAttribute::Kind(k) if k == "htb"))
            })
            .find_map(|c| htb_class_of(&c.attributes))
            .map(|class| class.ceil.saturating_mul(8)))
    }
}

fn index_of(ifindex: u32) -> Result<i32, String> {
    i32::try_from(ifindex).map_err(|_| format!("ifindex {ifindex} out of range"))
}

fn is_police(action: &TcAction) -> bool {
    action
        .attributes
        .iter()
        .any(|a| matches!(a, TcActionAttribute::Kind(k) if k == "police"))
}
