//! Keeping the inventory current: each source is asked every poll whether its records
//! changed (its stamp), and read when they did or when `inventory.refresh` has passed.
//! A source that fails keeps its last good reading — a hypervisor daemon restarting
//! must not make every instance on the host look gone for a tick.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::{error, info, warn};

use super::{Inventory, Problem, Reading, Source};
use crate::config::SourceKind;

/// How one source is doing, for `sluice status` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStatus {
    pub source: SourceKind,
    /// The latest read succeeded (false before the first one).
    pub ok: bool,
    /// Why the latest read failed.
    pub error: Option<String>,
    /// When it was last read successfully.
    pub read_at: Option<Timestamp>,
    /// Instances in the reading in use (the last good one).
    pub instances: usize,
    /// Records in it that could not be read.
    pub problems: usize,
    /// Failed reads since the agent started.
    pub failures: u64,
}

struct Slot {
    source: Box<dyn Source>,
    /// The stamp the reading in use was taken at (`None`: read again next poll).
    stamp: Option<u64>,
    tried_at: Option<Instant>,
    last: Option<Reading>,
    status: SourceStatus,
}

/// The sources of `inventory.sources` (but `names`, which needs no reading), in order.
pub struct Refresher {
    slots: Vec<Slot>,
    every: Duration,
}

impl Refresher {
    pub fn new(sources: Vec<Box<dyn Source>>, every: Duration) -> Refresher {
        let slots = sources
            .into_iter()
            .map(|source| Slot {
                status: SourceStatus {
                    source: source.kind(),
                    ok: false,
                    error: None,
                    read_at: None,
                    instances: 0,
                    problems: 0,
                    failures: 0,
                },
                source,
                stamp: None,
                tried_at: None,
                last: None,
            })
            .collect();
        Refresher { slots, every }
    }

    /// Read the sources that changed or are due. `Some` when what they say changed:
    /// the merged inventory to use from now on.
    pub fn poll(&mut self, now: Instant, wall: Timestamp) -> Option<Inventory> {
        let mut changed = false;
        for slot in &mut self.slots {
            // Taken before the read, so a change made during it is seen next poll.
            let stamp = slot.source.stamp();
            let due = slot
                .tried_at
                .is_none_or(|t| now.saturating_duration_since(t) >= self.every);
            let moved = stamp.is_some() && stamp != slot.stamp;
            if !due && !moved {
                continue;
            }
            slot.tried_at = Some(now);
            changed |= read_into(slot, stamp, wall);
        }
        changed.then(|| Inventory::merge(self.slots.iter().filter_map(|s| s.last.as_ref())))
    }

    pub fn statuses(&self) -> Vec<SourceStatus> {
        self.slots.iter().map(|s| s.status.clone()).collect()
    }
}

/// Read one source into its slot; whether its reading changed.
fn read_into(slot: &mut Slot, stamp: Option<u64>, wall: Timestamp) -> bool {
    let kind = slot.source.kind();
    match slot.source.read() {
        Ok(reading) => {
            let before: &[Problem] = slot.last.as_ref().map_or(&[], |r| &r.problems);
            for p in reading.problems.iter().filter(|p| !before.contains(p)) {
                warn!(source = %kind, "inventory: left out: {p}");
            }
            if !slot.status.ok && slot.status.failures > 0 {
                info!(source = %kind, "inventory: source answers again");
            }
            slot.stamp = stamp;
            slot.status.ok = true;
            slot.status.error = None;
            slot.status.read_at = Some(wall);
            slot.status.instances = reading.instances.len();
            slot.status.problems = reading.problems.len();
            let changed = slot.last.as_ref() != Some(&reading);
            if changed {
                info!(
                    source = %kind,
                    instances = reading.instances.len(),
                    problems = reading.problems.len(),
                    "inventory read"
                );
            }
            slot.last = Some(reading);
            changed
        }
        Err(e) => {
            let message = e.to_string();
            if slot.status.error.as_ref() != Some(&message) {
                let kept = slot.last.as_ref().map_or(0, |r| r.instances.len());
                error!(
                    source = %kind,
                    kept_instances = kept,
                    "inventory: cannot read the source, keeping its last answer: {message}"
                );
            }
            // Retried when the stamp moves or at the next refresh.
            slot.stamp = stamp;
            slot.status.ok = false;
            slot.status.error = Some(message);
            slot.status.failures += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::inventory::{Instance, Nic, SourceError};
    use crate::model::ids::{IfName, InstanceId};

    /// A source whose answers the test scripts.
    struct Scripted {
        kind: SourceKind,
        answers: Arc<Mutex<Vec<Result<Reading, String>>>>,
        stamp: Arc<Mutex<Option<u64>>>,
        reads: Arc<Mutex<usize>>,
    }

    impl Source for Scripted {
        fn kind(&self) -> SourceKind {
            self.kind
        }
        fn stamp(&mut self) -> Option<u64> {
            *self.stamp.lock().unwrap()
        }
        fn read(&mut self) -> Result<Reading, SourceError> {
            *self.reads.lock().unwrap() += 1;
            let mut a = self.answers.lock().unwrap();
            let next = if a.len() > 1 {
                a.remove(0)
            } else {
                a[0].clone()
            };
            next.map_err(|message| SourceError::Answer {
                what: "test".into(),
                message,
            })
        }
    }

    fn reading(ids: &[&str]) -> Reading {
        Reading {
            instances: ids
                .iter()
                .map(|id| Instance {
                    id: InstanceId::new(id).unwrap(),
                    source: SourceKind::Libvirt,
                    name: None,
                    stop: None,
                    shaped: false,
                    tags: BTreeSet::new(),
                    interfaces: vec![Nic {
                        interface: IfName::new(&format!("vnet{id}")).unwrap(),
                        upload: None,
                        download: None,
                        port: Default::default(),
                    }],
                })
                .collect(),
            ..Reading::default()
        }
    }

    type Handles = (
        Arc<Mutex<Vec<Result<Reading, String>>>>,
        Arc<Mutex<Option<u64>>>,
        Arc<Mutex<usize>>,
    );

    fn scripted(answers: Vec<Result<Reading, String>>, stamp: Option<u64>) -> (Refresher, Handles) {
        let h: Handles = (
            Arc::new(Mutex::new(answers)),
            Arc::new(Mutex::new(stamp)),
            Arc::new(Mutex::new(0)),
        );
        let src = Scripted {
            kind: SourceKind::Libvirt,
            answers: h.0.clone(),
            stamp: h.1.clone(),
            reads: h.2.clone(),
        };
        (
            Refresher::new(vec![Box::new(src)], Duration::from_secs(60)),
            h,
        )
    }

    fn ids(inv: &Inventory) -> Vec<&str> {
        inv.instances.iter().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn a_source_is_read_again_only_when_its_stamp_moves_or_the_refresh_is_due() {
        let (mut r, (answers, stamp, reads)) = scripted(vec![Ok(reading(&["1"]))], Some(7));
        let t0 = Instant::now();
        let wall = Timestamp::UNIX_EPOCH;
        assert_eq!(ids(&r.poll(t0, wall).unwrap()), ["1"]);
        assert!(r.poll(t0 + Duration::from_secs(1), wall).is_none());
        assert_eq!(*reads.lock().unwrap(), 1, "same stamp, not due: not read");
        *answers.lock().unwrap() = vec![Ok(reading(&["1", "2"]))];
        *stamp.lock().unwrap() = Some(8);
        assert_eq!(
            ids(&r.poll(t0 + Duration::from_secs(2), wall).unwrap()),
            ["1", "2"]
        );
        assert_eq!(*reads.lock().unwrap(), 2);
        // Due by time: read, but the same answer is no change.
        assert!(r.poll(t0 + Duration::from_secs(70), wall).is_none());
        assert_eq!(*reads.lock().unwrap(), 3);
    }

    #[test]
    fn a_failing_source_keeps_its_last_answer_and_says_why() {
        let (mut r, (answers, stamp, _)) = scripted(vec![Ok(reading(&["1", "2"]))], Some(1));
        let t0 = Instant::now();
        let wall = Timestamp::UNIX_EPOCH;
        assert_eq!(ids(&r.poll(t0, wall).unwrap()), ["1", "2"]);
        *answers.lock().unwrap() = vec![Err("connection refused".into())];
        *stamp.lock().unwrap() = Some(2);
        assert!(
            r.poll(t0 + Duration::from_secs(1), wall).is_none(),
            "no change published"
        );
        let st = &r.statuses()[0];
        assert!(!st.ok);
        assert_eq!(st.error.as_deref(), Some("test: connection refused"));
        assert_eq!((st.instances, st.failures), (2, 1));
        assert_eq!(st.read_at, Some(wall), "the last good read's time stays");
        // It answers again with one instance fewer: that is a change.
        *answers.lock().unwrap() = vec![Ok(reading(&["1"]))];
        *stamp.lock().unwrap() = Some(3);
        assert_eq!(
            ids(&r.poll(t0 + Duration::from_secs(2), wall).unwrap()),
            ["1"]
        );
        assert!(r.statuses()[0].ok);
    }

    #[test]
    fn a_source_without_a_stamp_is_read_every_refresh() {
        let (mut r, (_, _, reads)) = scripted(vec![Ok(reading(&["1"]))], None);
        let t0 = Instant::now();
        let wall = Timestamp::UNIX_EPOCH;
        assert!(r.poll(t0, wall).is_some());
        assert!(r.poll(t0 + Duration::from_secs(59), wall).is_none());
        assert_eq!(*reads.lock().unwrap(), 1);
        assert!(r.poll(t0 + Duration::from_secs(60), wall).is_none());
        assert_eq!(*reads.lock().unwrap(), 2);
    }
}
