//! The operating system's edges that every layer above may need, kept free of sluice's
//! policy: the route netlink socket, external commands (argv and a timeout, never a
//! shell), HTTP over a unix socket (a hypervisor's local API), an OVSDB session, atomic file writes, the agent's lock, and the crash points fault tests arm.

pub mod atomic;
pub mod command;
pub mod crash;
pub mod files;
pub mod lock;
pub mod netlink;
pub mod ovsdb;
pub mod unix_http;

pub use atomic::write_atomic;
pub use command::{CommandError, HOOK_OUTPUT_CAP, run as run_command, run_capped};
pub use lock::{AgentLock, Holder, LockError, holder};
