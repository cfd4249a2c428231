//! The `disconnect` action's edge: holding an interface's link down over netlink.
//!
//! Reconciled each tick like the shapers: the link of every interface under an exceeded
//! `disconnect` rule is read (one pipelined batch of gets) and set down where it is up,
//! so a tap that the hypervisor re-creates (or an operator brings up) is downed again
//! within a tick. Bringing links back up is explicit ([`LinkSwitch::set`] with [`LinkState::Up`]) and
//! only for links sluice downed: sluice never raises a link someone else took down.

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkFlags, LinkMessage};

use crate::sys::netlink::{Answer, KernelError, Request, RouteSocket};

pub struct LinkSwitch {
    sock: RouteSocket,
}

/// A link's administrative state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Up,
    Down,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
        }
    }
}

/// What [`LinkSwitch::set`] did to one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switched {
    /// It already was as wanted.
    Unchanged,
    /// It was flipped.
    Changed,
    Failed(KernelError),
}

impl LinkSwitch {
    pub fn open() -> std::io::Result<Self> {
        Ok(LinkSwitch {
            sock: RouteSocket::open()?,
        })
    }

    /// Put each link (by ifindex) in the wanted state.
    pub fn set(&mut self, want: &[(u32, LinkState)]) -> Vec<Switched> {
        let gets = want
            .iter()
            .map(|(ifindex, _)| {
                let mut m = LinkMessage::default();
                m.header.index = *ifindex;
                Request {
                    message: RouteNetlinkMessage::GetLink(m),
                    flags: 0,
                    get: true,
                }
            })
            .collect();
        let answers = match self.sock.batch(gets) {
            Ok(a) => a,
            Err(e) => {
                let e = KernelError::from(e);
                return want.iter().map(|_| Switched::Failed(e.clone())).collect();
            }
        };
        let mut out: Vec<Switched> = Vec::with_capacity(want.len());
        let mut flips = Vec::new();
        for ((ifindex, state), answer) in want.iter().zip(answers) {
            let up = *state == LinkState::Up;
            match answer {
                Answer::Reply(msg) => match *msg {
                    RouteNetlinkMessage::NewLink(l)
                        if l.header.flags.contains(LinkFlags::Up) == up =>
                    {
                        out.push(Switched::Unchanged)
                    }
                    _ => {
                        let mut m = LinkMessage::default();
                        m.header.index = *ifindex;
                        m.header.flags = if up {
                            LinkFlags::Up
                        } else {
                            LinkFlags::empty()
                        };
                        m.header.change_mask = LinkFlags::Up;
                        flips.push((out.len(), m));
                        out.push(Switched::Changed);
                    }
                },
                Answer::Failed(e) => out.push(Switched::Failed(e)),
                Answer::Done => out.push(Switched::Failed(KernelError::unparsable(
                    "an ack where a link was expected",
                ))),
            }
        }
        if flips.is_empty() {
            return out;
        }
        let (slots, messages): (Vec<usize>, Vec<LinkMessage>) = flips.into_iter().unzip();
        let requests = messages
            .into_iter()
            .map(|m| Request {
                message: RouteNetlinkMessage::SetLink(m),
                flags: 0,
                get: false,
            })
            .collect();
        match self.sock.batch(requests) {
            Ok(answers) => {
                for (slot, answer) in slots.into_iter().zip(answers) {
                    if let Answer::Failed(e) = answer {
                        out[slot] = Switched::Failed(e);
                    }
                }
            }
            Err(e) => {
                let e = KernelError::from(e);
                for slot in slots {
                    out[slot] = Switched::Failed(e.clone());
                }
            }
        }
        out
    }
}
