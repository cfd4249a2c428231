//! The route netlink socket the sampler and the tc backend share: dumps whose answers
//! are read in place or parsed, and batches that pipeline — a whole tick's requests go out
//! in a few `send`s and their answers are matched back by sequence number.
//!
//! The kernel processes every message of one datagram in order and answers each
//! (`netlink_rcv_skb` goes on after a failed one), so N changes cost a few system calls
//! rather than N round trips. Requests are sent in chunks small enough that their answers
//! always fit the enlarged receive buffer (the kernel drops what does not fit). Errors
//! carry the kernel's extended-ack message ("Exceeded qdisc handle limit", …), which is
//! what an operator needs in `enforce_failed`.

use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_ECHO, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer,
    NetlinkMessage, NetlinkPayload, NlasIterator,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_ROUTE;

use libc::{NETLINK_CAP_ACK, NETLINK_EXT_ACK, SOL_NETLINK};

/// `NLM_F_ACK_TLVS` on an error message: extended-ack attributes follow.
const NLM_F_ACK_TLVS: u16 = libc::NLM_F_ACK_TLVS as u16;
/// `NLMSGERR_ATTR_MSG` (linux/netlink.h; libc does not define it).
const NLMSGERR_ATTR_MSG: u16 = 1;
const RECV_BUFFER: usize = 64 * 1024;
/// Requests per datagram: their answers (≤ ~1.5 KiB of kernel memory each) must fit the
/// receive buffer below.
const CHUNK: usize = 256;
const RCVBUF: libc::c_int = 4 * 1024 * 1024;

/// One request of a batch.
pub struct Request {
    pub message: RouteNetlinkMessage,
    /// `NLM_F_CREATE`, `NLM_F_EXCL`, `NLM_F_REPLACE`, …; `NLM_F_REQUEST` is added.
    pub flags: u16,
    /// A get (answered by a message) rather than a change (answered by an ack).
    pub get: bool,
}

/// The kernel's answer to one request.
#[derive(Debug)]
pub enum Answer {
    /// A change was acknowledged.
    Done,
    /// A get was answered.
    Reply(Box<RouteNetlinkMessage>),
    /// Refused: the errno and the kernel's message when it gave one.
    Failed(KernelError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}", io::Error::from_raw_os_error(*.errno), .message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
pub struct KernelError {
    pub errno: i32,
    pub message: Option<String>,
}

impl KernelError {
    pub fn is(&self, errno: i32) -> bool {
        self.errno == errno
    }
}

pub struct RouteSocket {
    sock: Socket,
    buf: Vec<u8>,
    seq: u32,
}

impl RouteSocket {
    /// Open a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        let fd = sock.as_raw_fd();
        setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1)?;
        setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1)?;
        // Root may exceed rmem_max; anyone else gets what the sysctl allows.
        if setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
            setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF)?;
        }
        Ok(RouteSocket {
            sock,
            buf: Vec::with_capacity(RECV_BUFFER),
            seq: 0,
        })
    }

    /// Send every request, pipelined, and return one answer per request, in order.
    pub fn batch(&mut self, requests: Vec<Request>) -> io::Result<Vec<Answer>> {
        let mut answers = Vec::with_capacity(requests.len());
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let first = self.seq.wrapping_add(1);
            let mut out = Vec::new();
            let mut n = 0usize;
            for req in requests.by_ref().take(CHUNK) {
                self.seq = self.seq.wrapping_add(1);
                let mut msg = NetlinkMessage::from(req.message);
                // tc answers a get by a notification that reaches the asker only with
                // NLM_F_ECHO (tclass_get_notify → rtnetlink_send).
                msg.header.flags =
                    NLM_F_REQUEST | req.flags | if req.get { NLM_F_ECHO } else { NLM_F_ACK };
                msg.header.sequence_number = self.seq;
                msg.finalize();
                let at = out.len();
                out.resize(at + msg.buffer_len(), 0);
                msg.serialize(&mut out[at..]);
                n += 1;
            }
            self.sock.send(&out, 0)?;
            let mut chunk: Vec<Option<Answer>> = (0..n).map(|_| None).collect();
            let mut pending = n;
            while pending > 0 {
                self.recv()?;
                let mut off = 0;
                while off < self.buf.len() {
                    let Ok(m) = NetlinkBuffer::new_checked(&self.buf[off..]) else {
                        break;
                    };
                    let len = m.length() as usize;
                    let idx = m.sequence_number().wrapping_sub(first) as usize;
                    if idx < n && chunk[idx].is_none() {
                        let answer = match m.message_type() {
                            NLMSG_ERROR => match error_of(m.flags(), m.payload()) {
                                None => Some(Answer::Done),
                                Some(e) => Some(Answer::Failed(e)),
                            },
                            NLMSG_DONE => None,
                            _ => Some(match parse(&self.buf[off..off + len]) {
                                Ok(msg) => Answer::Reply(Box::new(msg)),
                                Err(e) => Answer::Failed(e),
                            }),
                        };
                        if let Some(a) = answer {
                            chunk[idx] = Some(a);
                            pending -= 1;
                        }
                    }
                    off += align4(len.max(16));
                }
            }
            answers.extend(chunk.into_iter().flatten());
        }
        Ok(answers)
    }

    /// Pipelined gets: one answer per message, in order.
    pub fn get_all(
        &mut self,
        messages: impl IntoIterator<Item = RouteNetlinkMessage>,
    ) -> Result<Vec<Answer>, KernelError> {
        let requests = messages
            .into_iter()
            .map(|message| Request {
                message,
                flags: 0,
                get: true,
            })
            .collect();
        Ok(self.batch(requests)?)
    }

    /// One dump; every answer message, parsed.
    pub fn dump(
        &mut self,
        request: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, KernelError> {
        let mut result = Vec::new();
        self.dump_raw(request, |bytes, _, _| {
            result.push(parse(bytes)?);
            Ok(())
        })?;
        Ok(result)
    }

    /// One dump, each answer handed over unparsed: (whole message, type, payload). For
    /// dumps whose answers are large and only a few attributes matter (links, stats).
    /// Answers to other sequence numbers (a previous dump cut short) are skipped.
    pub fn dump_raw(
        &mut self,
        request: RouteNetlinkMessage,
        mut each: impl FnMut(&[u8], u16, &[u8]) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = NetlinkMessage::from(request);
        msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        msg.header.sequence_number = seq;
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        self.sock.send(&out, 0).map_err(io_error)?;
        loop {
            self.recv().map_err(io_error)?;
            let mut off = 0;
            while off < self.buf.len() {
                let Ok(m) = NetlinkBuffer::new_checked(&self.buf[off..]) else {
                    break;
                };
                let len = m.length() as usize;
                if m.sequence_number() == seq {
                    match m.message_type() {
                        NLMSG_DONE => return Ok(()),
                        NLMSG_ERROR => {
                            if let Some(e) = error_of(m.flags(), m.payload()) {
                                return Err(e);
                            }
                        }
                        kind => each(&self.buf[off..off + len], kind, m.payload())?,
                    }
                }
                off += align4(len.max(16));
            }
        }
    }

    fn recv(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.buf.reserve(RECV_BUFFER);
        self.sock.recv(&mut self.buf, 0)?;
        Ok(())
    }
}

impl KernelError {
    /// A malformed answer, described.
    pub fn unparsable(why: impl std::fmt::Display) -> Self {
        KernelError {
            errno: libc::EPROTO,
            message: Some(format!("unparsable answer: {why}")),
        }
    }
}

impl From<io::Error> for KernelError {
    fn from(e: io::Error) -> Self {
        io_error(e)
    }
}

fn io_error(e: io::Error) -> KernelError {
    KernelError {
        errno: e.raw_os_error().unwrap_or(libc::EIO),
        message: None,
    }
}

/// One answer message (a whole netlink message in `bytes`) parsed.
fn parse(bytes: &[u8]) -> Result<RouteNetlinkMessage, KernelError> {
    let unparsable = KernelError::unparsable;
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
        Ok(NetlinkMessage {
            payload: NetlinkPayload::InnerMessage(inner),
            ..
        }) => Ok(inner),
        Ok(other) => Err(unparsable(format!("{:?}", other.header))),
        Err(e) => Err(unparsable(e.to_string())),
    }
}

/// `None` for an ack (error 0); otherwise the errno and the extended-ack message.
fn error_of(flags: u16, payload: &[u8]) -> Option<KernelError> {
    let code = i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?);
    if code == 0 {
        return None;
    }
    // With NETLINK_CAP_ACK the echoed request is only its 16-byte header.
    let message = if flags & NLM_F_ACK_TLVS != 0 {
        payload.get(20..).and_then(|tlvs| {
            NlasIterator::new(tlvs)
                .filter_map(Result::ok)
                .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
                .and_then(|nla| {
                    let raw = nla.value().split(|b| *b == 0).next()?;
                    Some(String::from_utf8_lossy(raw).into_owned())
                })
        })
    } else {
        None
    };
    Some(KernelError {
        errno: -code,
        message,
    })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn setsockopt(
    fd: i32,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_and_errors_are_told_apart() {
        assert_eq!(error_of(0, &0i32.to_ne_bytes()), None);
        let mut p = (-libc::ENOENT).to_ne_bytes().to_vec();
        p.extend_from_slice(&[0u8; 16]); // echoed header
        let e = error_of(0, &p).unwrap();
        assert!(e.is(libc::ENOENT));
        assert_eq!(e.message, None);
        // Extended ack: NLMSGERR_ATTR_MSG "bad handle\0", padded.
        let text = b"bad handle\0";
        let len = 4 + text.len();
        p.extend_from_slice(&(len as u16).to_ne_bytes());
        p.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        p.extend_from_slice(text);
        p.resize(p.len() + (align4(len) - len), 0);
        let e = error_of(NLM_F_ACK_TLVS, &p).unwrap();
        assert_eq!(e.message.as_deref(), Some("bad handle"));
        assert!(e.to_string().contains("bad handle"), "{e}");
    }
}
