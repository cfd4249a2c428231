//! The one tick both `sluice agent` and `sluice simulate` run: the policy judges this
//! tick's samples, the ledger counts them and charges the quotas (committing the events
//! with the bytes), and the verdicts say what every present interface should be held to.
//!
//! It reads no clock and touches nothing but the ledger it is given: the agent passes
//! its file-backed ledger and the wall clock, `simulate` an in-memory ledger and the
//! trace's clock, so a replay decides exactly what the agent would have.

use crate::account::Ledger;
use crate::account::ledger::EventRow;
use crate::config::Config;
use crate::model::ids::IfName;
use crate::policy::{Event, Policy, Tick, Verdict};
use crate::report::event::policy_row;
use crate::sample::Sample;

use super::charge::{Charged, SpoolPlan, charge};

/// What one [`tick`] did.
#[derive(Debug)]
pub struct Ticked {
    /// The policy's events (stage changes, counter resets, …), already in `pending`.
    pub events: Vec<Event>,
    /// The ledger's commit: `None` without a ledger, an error when the commit failed
    /// (then `pending` still holds every event, for the next commit).
    pub charged: Option<Result<Charged, crate::account::LedgerError>>,
}

/// One tick's input: one dump of every interface's counters, taken at `now`.
#[derive(Debug, Clone, Copy)]
pub struct TickInput<'a> {
    pub samples: &'a [Sample],
    pub now: Tick,
    /// Spool the committed deltas for the quota store (`None`: no store).
    pub spool: Option<SpoolPlan>,
}

/// Advance `policy` and `ledger` by one tick.
///
/// `pending` are events to commit with this tick's bytes (hook results, link changes,
/// enforcement failures); the policy's events are added to it, and it is emptied only
/// when the commit succeeds — a failed commit loses no event. `verdicts` is refilled in
/// place (the agent hands back last tick's vector to spare an allocation).
pub fn tick(
    policy: &mut Policy,
    ledger: Option<&mut Ledger>,
    cfg: &Config,
    input: TickInput<'_>,
    pending: &mut Vec<EventRow>,
    verdicts: &mut Vec<(IfName, Verdict)>,
) -> Ticked {
    let TickInput {
        samples,
        now,
        spool,
    } = input;
    let events = policy.tick(cfg, samples, now);
    pending.extend(events.iter().map(|e| policy_row(now.wall, e)));
    name_events(cfg, pending);
    let charged = ledger.map(|ledger| {
        let charged = charge(
            ledger,
            policy,
            cfg,
            samples,
            now.wall,
            pending.clone(),
            spool,
        );
        if charged.is_ok() {
            pending.clear();
        }
        charged
    });
    policy.verdicts_into(cfg, verdicts);
    Ticked { events, charged }
}

/// The hypervisor's name beside the id in each event about an instance, as it was
/// called when the event happened: the event log, exports and webhooks read it from
/// there, and a later rename does not rewrite what was.
fn name_events(cfg: &Config, rows: &mut [EventRow]) {
    for row in rows {
        let (Some(id), serde_json::Value::Object(body)) = (&row.instance, &mut row.body) else {
            continue;
        };
        if body.contains_key("instance_name") {
            continue;
        }
        if let Some(name) = cfg.name_of(id) {
            body.insert("instance_name".into(), serde_json::json!(name));
        }
    }
}
