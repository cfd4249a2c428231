//! The fleet view `sluice store` serves at `/`: every agent and when it last reported
//! (late ones marked), the period's biggest talkers across the fleet with each quota's
//! use as a bar, and those nearest their limits. Same shell, script and dictionary as
//! the agent's dashboard; with an admin token, Reset clears an instance's period traffic.

use std::fmt::Write;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::Part;
use super::page::{NEAR, bar, head, label, tail, tools};
use crate::model::human::{human_bytes, human_rate, human_secs};
use crate::render::export::html::escape;
use crate::store::view::{Fleet, TrafficUsage};

/// An agent that has not reported for this long is marked late.
const LATE_SECS: i64 = 600;

fn bars(u: &TrafficUsage) -> (String, f64) {
    let mut html = String::new();
    let mut top = 0f64;
    for q in &u.quotas {
        let note = format!(" · {}", escape(&q.on_exceed));
        // A committed rate's limit and use are bit/s (its 95th so far), not bytes.
        let (key, unit): (String, fn(u64) -> String) = match &q.direction {
            Some(d) => (format!("{} ({d})", q.resource), human_rate),
            None => (q.resource.clone(), human_bytes),
        };
        let share = bar(
            &mut html,
            "resource",
            &key,
            (q.used, q.limit),
            unit,
            q.exceeded,
            &note,
        );
        top = top.max(share);
    }
    (html, top)
}

fn instance_row(u: &TrafficUsage, period: &str) -> String {
    let (quotas, share) = bars(u);
    // The 95th percentile (larger direction) when the page was asked to rank by it.
    let p95 = u.percentiles.as_ref().and_then(|p| p.max_bps);
    format!(
        "<tr data-instance=\"{i}\"><td>{i}</td><td class=\"n\" data-sort=\"{}\">{}</td><td class=\"n\" data-sort=\"{}\">{}</td><td class=\"n\" data-sort=\"{}\">{}</td><td class=\"n\" data-sort=\"{}\">{}</td><td data-sort=\"{share:.4}\">{quotas}</td><td><button type=\"button\" data-reset=\"{i}\" data-period=\"{p}\" data-i18n=\"reset\">Reset</button></td></tr>\n",
        u.upload,
        human_bytes(u.upload),
        u.download,
        human_bytes(u.download),
        u.total,
        human_bytes(u.total),
        p95.unwrap_or(0),
        p95.map_or_else(|| "·".to_owned(), human_rate),
        i = escape(&u.instance),
        p = escape(period),
    )
}

fn agent_rows(fleet: &Fleet, now: Timestamp) -> String {
    if fleet.agents.is_empty() {
        return format!(
            "<tr><td colspan=\"3\" class=\"muted\">{}</td></tr>",
            label("no_agents", "No agent has reported yet.")
        );
    }
    let mut out = String::new();
    for a in &fleet.agents {
        let age = a
            .last_report
            .parse::<Timestamp>()
            .map(|t| now.duration_since(t).as_secs())
            .unwrap_or(i64::MAX);
        let late = if age > LATE_SECS {
            format!(" <span class=\"bad\">{}</span>", label("stale", "late"))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "<tr data-agent=\"{}\"><td>{}</td><td data-sort=\"{age}\">{} ({}){late}</td><td class=\"n\">{}</td></tr>",
            escape(&a.agent),
            escape(&a.agent),
            escape(&a.last_report),
            human_secs(u64::try_from(age).unwrap_or(u64::MAX)),
            a.last_seq
        );
    }
    out
}

fn tables(fleet: &Fleet, now: Timestamp) -> (String, String, String) {
    let agents = agent_rows(fleet, now);
    let top: String = fleet
        .instances
        .iter()
        .map(|u| instance_row(u, &fleet.period))
        .collect();
    let mut near: Vec<(&TrafficUsage, f64)> = fleet
        .instances
        .iter()
        .map(|u| (u, bars(u).1))
        .filter(|(_, share)| *share >= NEAR)
        .collect();
    near.sort_by(|a, b| b.1.total_cmp(&a.1));
    let near: String = near
        .iter()
        .map(|(u, _)| instance_row(u, &fleet.period))
        .collect();
    (agents, top, near)
}

const INSTANCE_HEAD: &str = "<thead><tr><th data-i18n=\"instance\">Instance</th><th data-i18n=\"upload\">Upload</th><th data-i18n=\"download\">Download</th><th data-i18n=\"total\">Total</th><th><a href=\"?rank=p95\" data-i18n=\"p95_max\">95th (max)</a></th><th data-i18n=\"quotas\">Quotas</th><th></th></tr></thead>";

/// The fleet page (or, as `Fragments`, the parts the script refreshes).
pub fn render(fleet: &Fleet, now: Timestamp, tz: &TimeZone, part: Part) -> String {
    let (agents, top, near) = tables(fleet, now);
    if part == Part::Fragments {
        return format!(
            "<table><tbody data-fragment=\"agents\">{agents}</tbody></table><table><tbody data-fragment=\"top\">{top}</tbody></table><table><tbody data-fragment=\"near\">{near}</tbody></table>"
        );
    }
    let when = |s: &str| {
        s.parse::<Timestamp>().map_or_else(
            |_| s.to_owned(),
            |t| {
                t.to_zoned_datetime(tz.clone())
                    .strftime("%Y-%m-%d %H:%M")
                    .to_string()
            },
        )
    };
    let mut out = String::with_capacity(32 << 10);
    head(&mut out, "fleet", 30);
    let _ = write!(
        out,
        "<header><h1>sluice · <span data-i18n=\"fleet\">Fleet</span></h1><span class=\"sum\">{} <span data-i18n=\"agents\">Agents</span> · {} {} → {}</span>",
        fleet.agents.len(),
        escape(&fleet.period),
        escape(&when(&fleet.start)),
        escape(&when(&fleet.end)),
    );
    tools(&mut out);
    out.push_str("</header>\n<main>\n");
    let _ = write!(
        out,
        "<p class=\"muted\" data-i18n=\"read_only\">Read-only: enter an admin token to act.</p>\n<section><h2 data-i18n=\"near\">Near their limit</h2><table id=\"near\">{INSTANCE_HEAD}<tbody data-fragment=\"near\">{near}</tbody></table></section>\n<section><h2 data-i18n=\"top\">Top instances</h2><input id=\"filter\" type=\"search\" data-i18n-placeholder=\"filter\" placeholder=\"Filter…\"><table id=\"instances\">{INSTANCE_HEAD}<tbody data-fragment=\"top\">{top}</tbody></table></section>\n<section><h2 data-i18n=\"agents\">Agents</h2><table id=\"agents\"><thead><tr><th data-i18n=\"agent\">Agent</th><th data-i18n=\"last_report\">Last report</th><th>seq</th></tr></thead><tbody data-fragment=\"agents\">{agents}</tbody></table></section>\n"
    );
    tail(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::view::{AgentView, QuotaUse};

    fn usage(instance: &str, total: u64, limit: Option<u64>) -> TrafficUsage {
        TrafficUsage {
            instance: instance.into(),
            period: "month".into(),
            start: "2026-11-01T00:00:00Z".into(),
            end: "2026-12-01T00:00:00Z".into(),
            upload: total / 2,
            download: total - total / 2,
            total,
            quotas: limit
                .map(|l| QuotaUse {
                    resource: "traffic_total".into(),
                    limit: l,
                    used: total,
                    overage: total.saturating_sub(l),
                    direction: None,
                    on_exceed: "limit".into(),
                    exceeded: total > l,
                    start: "2026-11-01T00:00:00Z".into(),
                    end: "2026-12-01T00:00:00Z".into(),
                    reset_day: None,
                    topups: 0,
                })
                .into_iter()
                .collect(),
            percentiles: None,
        }
    }

    #[test]
    fn late_agents_are_marked_and_only_full_quotas_are_near_their_limit() {
        let now: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let fleet = Fleet {
            period: "month".into(),
            start: "2026-11-01T00:00:00Z".into(),
            end: "2026-12-01T00:00:00Z".into(),
            agents: vec![
                AgentView {
                    agent: "hv1".into(),
                    last_report: "2026-11-24T11:59:00Z".into(),
                    last_seq: 7,
                },
                AgentView {
                    agent: "hv2".into(),
                    last_report: "2026-11-24T10:00:00Z".into(),
                    last_seq: 3,
                },
            ],
            instances: vec![
                usage("101", 950, Some(1000)),
                usage("102", 500, Some(1000)),
                usage("103", 300, None),
            ],
        };
        let (agents, top, near) = tables(&fleet, now);
        let hv1 = agents.lines().find(|l| l.contains("hv1")).unwrap();
        let hv2 = agents.lines().find(|l| l.contains("hv2")).unwrap();
        assert!(!hv1.contains("late") && hv1.contains("(1m 00s)"), "{hv1}");
        assert!(hv2.contains("late") && hv2.contains("(2h 00m)"), "{hv2}");
        assert_eq!(top.matches("<tr data-instance=").count(), 3);
        assert_eq!(near.matches("<tr data-instance=").count(), 1);
        assert!(near.contains("data-instance=\"101\"") && near.contains("class=\"hot\""));
        assert!(top.contains("data-reset=\"102\" data-period=\"month\""));
        let page = render(&fleet, now, &TimeZone::UTC, Part::Page);
        assert!(page.contains("2026-11-01 00:00 → 2026-12-01 00:00"));
        assert!(!render(&fleet, now, &TimeZone::UTC, Part::Fragments).contains("<html"));
    }
}
