//! The dashboard's server-side cost at 1,000 instances, against serde_json of the same
//! snapshot (what `/v1/interfaces` costs) measured in the same run; and its weight on the
//! wire, raw and gzip-compressed (what browsers ask for).
//!
//!   cargo bench --bench dashboard            # 1,000 instances (targets: <= 100 ms, <= 200 KB)
//!   cargo bench --bench dashboard -- quick   # the same, fewer rounds

#[path = "common.rs"]
mod common;

use std::io::Write;
use std::time::Duration;

use common::median;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use sluice::account::ledger::EventRow;
use sluice::enforce::Enforcement;
use sluice::model::ids::{IfName, InstanceId, RuleName};
use sluice::policy::Reason;
use sluice::render::dashboard::Part;
use sluice::render::dashboard::page::{View, overview};
use sluice::state::{InterfaceRecord, QuotaRecord, STATE_VERSION, Snapshot};

fn snapshot(n: usize, now: Timestamp) -> Snapshot {
    let mut interfaces = Vec::with_capacity(n);
    let mut quotas = Vec::with_capacity(n);
    for i in 0..n {
        let id = InstanceId::new(&(1000 + i).to_string()).unwrap();
        let stage = usize::from(i % 10 == 0);
        interfaces.push(InterfaceRecord {
            interface: IfName::new(&format!("tap{}i0", 1000 + i)).unwrap(),
            instance: id.clone(),
            instance_name: None,
            present: true,
            stage,
            since: (stage > 0).then_some(now),
            until: (stage > 0).then(|| now + jiff::SignedDuration::from_mins(25)),
            reason: if stage > 0 {
                Reason::Penalty { stage }
            } else {
                Reason::Base
            },
            upload_limit_kbps: Some(if stage > 0 { 900_000 } else { 1_000_000 }),
            burst_kb: Some(100_000),
            download_limit_kbps: Some(1_000_000),
            packet_limit_pps: None,
            userspace: false,
            upload_bps: Some(123_456_789),
            download_bps: Some(98_765_432),
            upload_pps: None,
            download_pps: None,
            enforcement: Some(Enforcement::Applied),
            shaper: None,
            rule: None,
            disconnected: false,
        });
        quotas.push(QuotaRecord {
            rule: RuleName::new("monthly").unwrap(),
            instance: id,
            period_start: now,
            period_end: now + jiff::SignedDuration::from_hours(24 * 20),
            used_bytes: 812_345_678_901,
            elsewhere_bytes: 0,
            limit_bytes: 1_000_000_000_000,
            action: sluice::config::ActionKind::RateLimit,
            exceeded: false,
            judged: false,
        });
    }
    Snapshot {
        version: STATE_VERSION,
        written_at: now,
        pid: 1,
        backend: "tc".into(),
        interval_secs: 60,
        interfaces,
        quotas,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let runs = if quick { 5 } else { 21 };
    let n = 1_000;
    let now = Timestamp::now();
    let snap = snapshot(n, now);
    let events: Vec<EventRow> = (0..200)
        .map(|i| {
            sluice::account::ledger::EventRow::new(
                now,
                sluice::model::event::LogKind::Stage,
                Some(&InstanceId::new(&(1000 + i).to_string()).unwrap()),
                serde_json::json!({"interface": format!("tap{}i0", 1000 + i), "from": 0, "to": 1}),
            )
        })
        .collect();
    let tz = TimeZone::UTC;
    let view = View {
        snapshot: &snap,
        events: &events,
        host: "hv1",
        refresh_secs: 60,
        now,
        tz: &tz,
        percentiles: None,
    };
    let mut page = String::new();
    let render = median(runs, || page = overview(&view, Part::Page));
    let json = median(runs, || {
        let s = serde_json::to_string(&snap).unwrap();
        assert!(s.len() > n * 100);
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(page.as_bytes()).unwrap();
    let compressed = gz.finish().unwrap().len();
    println!(
        "## dashboard, {n} instances (+{} events), median of {runs}",
        events.len()
    );
    println!(
        "render {:.2} ms (target <= 100 ms: {})  serde_json of the same snapshot {:.2} ms  ratio {:.2}x",
        render.as_secs_f64() * 1e3,
        if render <= Duration::from_millis(100) {
            "met"
        } else {
            "MISSED"
        },
        json.as_secs_f64() * 1e3,
        render.as_secs_f64() / json.as_secs_f64()
    );
    println!(
        "first load: {} KB raw, {} KB gzip on the wire (target <= 200 KB: {})",
        page.len() / 1000,
        compressed / 1000,
        if compressed <= 200_000 {
            "met"
        } else {
            "MISSED"
        }
    );
}
