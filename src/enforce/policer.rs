//! Does the kernel really police an interface's ingress? OVS writes
//! `ingress_policing_rate` to OVSDB happily even when the kernel cannot enforce it (no tc
//! `police` action, no `basic`/`matchall` classifier): ovs-vswitchd then only logs
//! "adding cls_basic policing action failed". So after OVS has had its chance, sluice
//! asks the kernel itself: is there an ingress qdisc with a policing filter on it?
//!
//! OVS installs its policer as a `matchall` filter (newer OVS, when the kernel has it) or a
//! `basic` filter, each carrying a `police` action, under the `ingress` qdisc (ffff:).

use futures::TryStreamExt;
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcAttribute, TcFilterMatchAllOption, TcOption,
};
use rtnetlink::Handle;

pub struct PolicerProbe {
    handle: Handle,
}

impl PolicerProbe {
    /// Open an rtnetlink connection; its task is spawned on the current tokio runtime.
    pub fn open() -> std::io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(PolicerProbe { handle })
    }

    /// `Ok(true)` when `ifindex`'s ingress holds a policing filter.
    pub async fn has_ingress_policer(&self, ifindex: u32) -> Result<bool, String> {
        let Ok(index) = i32::try_from(ifindex) else {
            return Err(format!("ifindex {ifindex} out of range"));
        };
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
}

fn is_police(action: &TcAction) -> bool {
    action
        .attributes
        .iter()
        .any(|a| matches!(a, TcActionAttribute::Kind(k) if k == "police"))
}
