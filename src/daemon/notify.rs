//! systemd's notify protocol (`Type=notify`): READY=1 after the first tick, a one-line
//! STATUS= after each, and WATCHDOG=1 from the tick loop itself, so a loop stuck in a
//! tick stops petting and systemd restarts the agent. Outside systemd (no
//! NOTIFY_SOCKET) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::warn;

pub struct Notifier {
    /// Run by systemd with a notify socket: otherwise nothing is built or sent.
    enabled: bool,
    ready: bool,
    /// Half the service's `WatchdogSec`: how often the loop must pet.
    pet_every: Option<Duration>,
    warned: bool,
}

impl Notifier {
    pub fn new() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            ready: false,
            pet_every: sd_notify::watchdog_enabled().map(|d| d / 2),
            warned: false,
        }
    }

    /// How often the tick loop must call [`Notifier::pet`] (`None`: no watchdog).
    pub fn pet_every(&self) -> Option<Duration> {
        self.pet_every
    }

    fn send(&mut self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states)
            && !self.warned
        {
            warn!("cannot notify systemd: {e}");
            self.warned = true;
        }
    }

    /// After a tick: READY the first time, then the status line (and a pet). The line
    /// is only built when there is someone to send it to.
    pub fn ticked(&mut self, status: impl FnOnce() -> String) {
        if !self.enabled {
            return;
        }
        let status = status();
        let mut states = vec![NotifyState::Status(&status)];
        if !self.ready {
            states.push(NotifyState::Ready);
            self.ready = true;
        }
        if self.pet_every.is_some() {
            states.push(NotifyState::Watchdog);
        }
        self.send(&states);
    }

    /// The loop is alive between ticks.
    pub fn pet(&mut self) {
        if self.pet_every.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }
}
