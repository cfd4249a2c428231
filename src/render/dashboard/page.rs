//! The dashboard's HTML, rendered on the server from the agent's snapshot and event log:
//! the first paint is complete without JavaScript, and the script refreshes by asking
//! for the same fragments again (`?fragment=1`), so rows are rendered in one place only.
//! Text carries `data-i18n` keys; the English text is in the page, the script swaps in
//! the chosen language from the one dictionary both sides share (`assets/i18n.json`).

use std::collections::BTreeMap;
use std::fmt::Write;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::Part;
use crate::account::ledger::EventRow;
use crate::enforce::Enforcement;
use crate::model::human::human_bytes;
use crate::model::human::{human_pps, human_rate, human_secs};
use crate::model::percentile::Percentiles;
use crate::model::units::PacketRate;
use crate::render::export::html::escape;
use crate::state::{InterfaceRecord, QuotaRecord, Snapshot};

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");
pub const I18N: &str = include_str!("assets/i18n.json");

/// What a page is drawn from.
pub struct View<'a> {
    pub snapshot: &'a Snapshot,
    pub events: &'a [EventRow],
    pub host: &'a str,
    /// Seconds between refreshes (the agent's interval, at least 5).
    pub refresh_secs: u64,
    pub now: Timestamp,
    pub tz: &'a TimeZone,
    /// On an instance page: its month's 95th percentiles so far.
    pub percentiles: Option<Percentiles>,
}

pub(crate) fn label(key: &str, english: &str) -> String {
    format!("<span data-i18n=\"{key}\">{}</span>", escape(english))
}

pub(crate) fn head(out: &mut String, title: &str, refresh: u64) {
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\" data-refresh=\"{refresh}\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{} · sluice</title>\n<style>{CSS}</style>\n<script type=\"application/json\" id=\"i18n\">{I18N}</script>\n</head>\n<body>\n",
        escape(title)
    );
}

pub(crate) fn tools(out: &mut String) {
    out.push_str("<div class=\"tools\"><input id=\"token\" type=\"password\" size=\"14\" data-i18n-placeholder=\"token\" placeholder=\"Admin token\" autocomplete=\"off\"><label><input id=\"theme\" type=\"checkbox\"> <span data-i18n=\"theme\">Dark</span></label><button id=\"lang\" type=\"button\" data-i18n=\"language\">中文</button></div>");
}

pub(crate) fn tail(out: &mut String) {
    let _ = write!(
        out,
        "<p id=\"note\"></p>\n</main>\n<script>{JS}</script>\n</body>\n</html>\n"
    );
}

/// The worst enforcement of a set of interfaces, for one cell.
fn status_cell(records: &[&InterfaceRecord]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let failed: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.enforcement {
            Some(Enforcement::EnforceFailed { reason }) => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    if let Some(why) = failed.first() {
        parts.push(format!(
            "<span class=\"bad\" title=\"{}\">enforce_failed</span>",
            escape(why)
        ));
    } else if let Some(e) = records.iter().find_map(|r| r.enforcement.as_ref()) {
        let cls = if matches!(e, Enforcement::Applied) {
            "ok"
        } else {
            "muted"
        };
        parts.push(format!(
            "<span class=\"{cls}\">{}</span>",
            escape(e.label())
        ));
    }
    for r in records {
        if let Some(rule) = &r.rule {
            parts.push(format!("<span class=\"bad\">{}</span>", escape(rule)));
            break;
        }
    }
    if records.iter().any(|r| r.disconnected) {
        parts.push("<span class=\"bad\">link down</span>".into());
    }
    if records.iter().any(|r| !r.present) {
        parts.push("<span class=\"muted\">absent</span>".into());
    }
    parts.join(" ")
}

fn release_buttons(records: &[&InterfaceRecord]) -> String {
    records
        .iter()
        .filter(|r| r.stage > 0)
        .map(|r| {
            format!(
                "<button type=\"button\" data-release=\"{0}\" title=\"{0}\" data-i18n=\"release\">Release</button>",
                escape(r.interface.as_str())
            )
        })
        .collect()
}

/// A count this full of its limit is shown hot (and, in the fleet view, "near").
pub(crate) const NEAR: f64 = 0.8;

/// One count against its limit, as a bar: `key` names it in `data-{kind}` and the label,
/// `note` follows the numbers. Returns the share of the limit used.
pub(crate) fn bar(
    out: &mut String,
    kind: &str,
    key: &str,
    (used, limit): (u64, u64),
    unit: fn(u64) -> String,
    exceeded: bool,
    note: &str,
) -> f64 {
    let share = used as f64 / limit.max(1) as f64;
    let cls = if exceeded || share >= 1.0 {
        "over"
    } else if share >= NEAR {
        "hot"
    } else {
        ""
    };
    let _ = write!(
        out,
        "<span class=\"q\" data-{kind}=\"{k}\" data-used=\"{used}\" data-limit=\"{limit}\"><span class=\"bar\"><i class=\"{cls}\" style=\"width:{:.0}%\"></i></span>{k} {}/{}{note}</span>",
        (share * 100.0).min(100.0),
        unit(used),
        unit(limit),
        k = escape(key),
    );
    share
}

fn usage_cell(quotas: &[&QuotaRecord]) -> (String, f64) {
    let mut html = String::new();
    let mut top = 0f64;
    for q in quotas {
        let share = bar(
            &mut html,
            "rule",
            q.rule.as_str(),
            (q.used_bytes, q.limit_bytes),
            human_bytes,
            q.exceeded,
            // A committed rate's bytes are shown against no limit: its verdict is
            // the store's.
            if q.judged { " · 95th (store)" } else { "" },
        );
        top = top.max(share);
    }
    (html, top)
}

fn stage_cell(records: &[&InterfaceRecord], now: Timestamp) -> (String, usize) {
    let stage = records.iter().map(|r| r.stage).max().unwrap_or(0);
    if stage == 0 {
        return ("0".into(), 0);
    }
    let until = records
        .iter()
        .filter(|r| r.stage > 0)
        .filter_map(|r| r.until)
        .max();
    let left = until.map_or_else(String::new, |u| {
        format!(
            " · {} <span data-i18n=\"remaining\">remaining</span>",
            human_secs(u64::try_from(u.duration_since(now).as_secs()).unwrap_or(0))
        )
    });
    (
        format!("<span class=\"s{}\">{stage}</span>{left}", stage.min(5)),
        stage,
    )
}

fn limits(r: &[&InterfaceRecord]) -> String {
    let up = r.iter().filter_map(|r| r.upload_limit_kbps).min();
    let down = r.iter().filter_map(|r| r.download_limit_kbps).min();
    let show = |k: Option<u64>| {
        k.map_or_else(
            || label("unlimited", "none"),
            |k| human_rate(k.saturating_mul(1000)),
        )
    };
    let mut cell = format!("{} / {}", show(up), show(down));
    if let Some(pps) = r.iter().filter_map(|r| r.packet_limit_pps).min() {
        cell.push_str(&format!(" · {}", PacketRate::from_per_sec(pps)));
    }
    cell
}

/// Upload / download rates, and the upload packet rate where it is known (what a flood
/// shows as, long before its bytes do).
fn rates(r: &[&InterfaceRecord]) -> (String, u64) {
    let up: u64 = r.iter().filter_map(|r| r.upload_bps).sum();
    let down: u64 = r.iter().filter_map(|r| r.download_bps).sum();
    let mut cell = format!("{} / {}", human_rate(up), human_rate(down));
    let pps: Vec<u64> = r.iter().filter_map(|r| r.upload_pps).collect();
    if !pps.is_empty() {
        cell.push_str(&format!(" · {} up", human_pps(pps.iter().sum())));
    }
    (cell, up)
}

/// The instances table's body.
fn instance_rows(view: &View<'_>) -> String {
    let mut by_instance: BTreeMap<&str, Vec<&InterfaceRecord>> = BTreeMap::new();
    for r in &view.snapshot.interfaces {
        by_instance.entry(r.instance.as_str()).or_default().push(r);
    }
    let mut quotas: BTreeMap<&str, Vec<&QuotaRecord>> = BTreeMap::new();
    for q in &view.snapshot.quotas {
        quotas.entry(q.instance.as_str()).or_default().push(q);
    }
    let mut out = String::with_capacity(by_instance.len() * 320);
    for (id, records) in &by_instance {
        let (stage, stage_n) = stage_cell(records, view.now);
        let (usage, share) = usage_cell(quotas.get(id).map_or(&[][..], Vec::as_slice));
        let (rate, up) = rates(records);
        let names: Vec<&str> = records.iter().map(|r| r.interface.as_str()).collect();
        // The hypervisor's name beside the id, when an inventory source told it.
        let called = records
            .iter()
            .find_map(|r| r.instance_name.as_deref())
            .map_or_else(String::new, |n| {
                format!(" <span class=\"name\">{}</span>", escape(n))
            });
        let _ = writeln!(
            out,
            "<tr data-instance=\"{i}\"><td><a href=\"instances/{i}\">{i}</a>{called}</td><td title=\"{n}\">{}</td><td data-sort=\"{stage_n}\">{stage}</td><td>{}</td><td data-sort=\"{share:.4}\">{usage}</td><td class=\"n\" data-sort=\"{up}\">{rate}</td><td>{}{}</td></tr>",
            records.len(),
            limits(records),
            status_cell(records),
            release_buttons(records),
            i = escape(id),
            n = escape(&names.join(" ")),
        );
    }
    out
}

fn event_rows(view: &View<'_>, instance: Option<&str>) -> String {
    let mut out = String::new();
    let rows: Vec<&EventRow> = view
        .events
        .iter()
        .rev()
        .filter(|e| instance.is_none_or(|i| e.instance.as_ref().is_some_and(|x| x.as_str() == i)))
        .take(200)
        .collect();
    if rows.is_empty() {
        return format!(
            "<tr><td colspan=\"4\" class=\"muted\">{}</td></tr>",
            label("no_events", "No events.")
        );
    }
    for e in rows {
        let mut rest = e.body.clone();
        if let Some(m) = rest.as_object_mut() {
            for k in ["time", "event", "instance"] {
                m.remove(k);
            }
        }
        let who = e.instance.as_ref().map_or_else(String::new, |i| {
            format!(
                "<a href=\"{0}instances/{1}\">{1}</a>",
                if instance.is_some() { "../" } else { "" },
                escape(i.as_str())
            )
        });
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{who}</td><td><code>{}</code></td></tr>",
            e.at.to_zoned_datetime(view.tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S"),
            e.kind.as_str(),
            escape(&rest.to_string())
        );
    }
    out
}

fn summary(view: &View<'_>) -> String {
    let s = view.snapshot;
    let penalised = s.interfaces.iter().filter(|r| r.stage > 0).count();
    let exceeded = s.quotas.iter().filter(|q| q.exceeded).count();
    format!(
        "{} · {} <span data-i18n=\"interfaces\">Interfaces</span> · {penalised} <span data-i18n=\"penalised\">penalised</span> · {exceeded} <span data-i18n=\"exceeded\">quotas exceeded</span> · {} {}",
        escape(&s.backend),
        s.interfaces.len(),
        label("last_tick", "last tick"),
        escape(
            &s.written_at
                .to_zoned_datetime(view.tz.clone())
                .strftime("%H:%M:%S")
                .to_string()
        ),
    )
}

const EVENTS_HEAD: &str = "<thead><tr><th data-i18n=\"time\">Time</th><th data-i18n=\"event\">Event</th><th data-i18n=\"instance\">Instance</th><th data-i18n=\"details\">Details</th></tr></thead>";

/// The overview: every instance, then the events timeline. As `Fragments`, only the
/// parts the script swaps in.
pub fn overview(view: &View<'_>, part: Part) -> String {
    let rows = instance_rows(view);
    let events = event_rows(view, None);
    if part == Part::Fragments {
        return format!(
            "<div data-fragment=\"summary\">{}</div><table><tbody data-fragment=\"instances\">{rows}</tbody></table><table><tbody data-fragment=\"events\">{events}</tbody></table>",
            summary(view)
        );
    }
    let mut out = String::with_capacity(rows.len() + events.len() + 16_384);
    head(&mut out, view.host, view.refresh_secs);
    let _ = write!(
        out,
        "<header><h1>sluice · {}</h1><span class=\"sum\" data-fragment=\"summary\">{}</span>",
        escape(view.host),
        summary(view)
    );
    tools(&mut out);
    out.push_str("</header>\n<main>\n");
    let _ = write!(
        out,
        "<p class=\"muted\" data-i18n=\"read_only\">Read-only: enter an admin token to act.</p><input id=\"filter\" type=\"search\" data-i18n-placeholder=\"filter\" placeholder=\"Filter…\">\n<table id=\"instances\"><thead><tr><th data-i18n=\"instance\">Instance</th><th data-i18n=\"interfaces\">Interfaces</th><th data-i18n=\"stage\">Stage</th><th data-i18n=\"limits\">Limits up / down</th><th data-i18n=\"usage\">Period usage</th><th data-i18n=\"rates\">Last up / down</th><th data-i18n=\"status\">Enforcement</th></tr></thead>\n<tbody data-fragment=\"instances\">\n{rows}</tbody></table>\n"
    );
    if view.snapshot.interfaces.is_empty() {
        let _ = write!(
            out,
            "<p class=\"muted\">{}</p>",
            label("no_instances", "No interface matches agent.interfaces.")
        );
    }
    let _ = write!(
        out,
        "<section><h2 data-i18n=\"events\">Events (24 h)</h2><table class=\"ev\">{EVENTS_HEAD}<tbody data-fragment=\"events\">\n{events}</tbody></table></section>\n"
    );
    tail(&mut out);
    out
}

/// One instance: its interfaces, quota counts, chart (5m/hour/day/month) and events.
/// `None` when the agent has no interface of it.
pub fn instance(view: &View<'_>, id: &str, part: Part) -> Option<String> {
    let records: Vec<&InterfaceRecord> = view
        .snapshot
        .interfaces
        .iter()
        .filter(|r| r.instance.as_str() == id)
        .collect();
    if records.is_empty() {
        return None;
    }
    let quotas: Vec<&QuotaRecord> = view
        .snapshot
        .quotas
        .iter()
        .filter(|q| q.instance.as_str() == id)
        .collect();
    let mut rows = String::new();
    for r in &records {
        let one = [*r];
        let (stage, n) = stage_cell(&one, view.now);
        let (rate, up) = rates(&one);
        let _ = writeln!(
            rows,
            "<tr data-interface=\"{}\"><td>{}</td><td data-sort=\"{n}\">{stage}</td><td>{}</td><td class=\"n\" data-sort=\"{up}\">{rate}</td><td>{}{}</td></tr>",
            escape(r.interface.as_str()),
            escape(r.interface.as_str()),
            limits(&one),
            status_cell(&one),
            release_buttons(&one)
        );
    }
    let (mut usage, _) = usage_cell(&quotas);
    for q in &quotas {
        let _ = write!(
            usage,
            "<button type=\"button\" data-reset-rule=\"{}\" data-instance=\"{}\"><span data-i18n=\"reset\">Reset</span> {}</button>",
            escape(q.rule.as_str()),
            escape(id),
            escape(q.rule.as_str())
        );
    }
    if let Some(p) = &view.percentiles {
        let rate = |r: Option<crate::model::units::Rate>| {
            r.map_or_else(|| "-".to_owned(), |r| human_rate(r.bits_per_sec()))
        };
        let _ = write!(
            usage,
            "<p class=\"p95\"><span data-i18n=\"p95\">95th percentile this month</span>: up {} · down {} · max {} · aggregate {} <span class=\"dim\">({} intervals, {} left out)</span></p>",
            rate(p.upload),
            rate(p.download),
            rate(p.max),
            rate(p.aggregate),
            p.samples,
            p.estimated
        );
    }
    let events = event_rows(view, Some(id));
    if part == Part::Fragments {
        return Some(format!(
            "<table><tbody data-fragment=\"interfaces\">{rows}</tbody></table><div data-fragment=\"usage\">{usage}</div><table><tbody data-fragment=\"events\">{events}</tbody></table>"
        ));
    }
    let mut out = String::with_capacity(16_384);
    head(
        &mut out,
        &format!("{id} · {}", view.host),
        view.refresh_secs,
    );
    let _ = write!(
        out,
        "<header><h1><a href=\"../\" data-i18n=\"back\">All instances</a> · <span data-i18n=\"instance\">Instance</span> {}</h1>",
        escape(id)
    );
    tools(&mut out);
    out.push_str("</header>\n<main>\n");
    let chart = format!("../v1/instances/{}/chart.svg", escape(id));
    let _ = write!(
        out,
        "<table id=\"instances\"><thead><tr><th data-i18n=\"interface\">Interface</th><th data-i18n=\"stage\">Stage</th><th data-i18n=\"limits\">Limits up / down</th><th data-i18n=\"rates\">Last up / down</th><th data-i18n=\"status\">Enforcement</th></tr></thead><tbody data-fragment=\"interfaces\">\n{rows}</tbody></table>\n<section><h2 data-i18n=\"usage\">Period usage</h2><div data-fragment=\"usage\">{usage}</div></section>\n<section><h2 data-i18n=\"chart\">Traffic</h2><div class=\"switch\"><button type=\"button\" data-by=\"5m\" aria-pressed=\"false\">5m</button> <button type=\"button\" data-by=\"hour\" aria-pressed=\"true\">hour</button> <button type=\"button\" data-by=\"day\" aria-pressed=\"false\">day</button> <button type=\"button\" data-by=\"month\" aria-pressed=\"false\">month</button></div><figure><img id=\"chart\" alt=\"traffic chart\" width=\"1000\" data-base=\"{chart}\" src=\"{chart}?by=hour\" data-light-src=\"{chart}?by=hour\" data-dark-src=\"{chart}?by=hour&amp;dark=1\"></figure></section>\n<section><h2 data-i18n=\"events\">Events (24 h)</h2><table class=\"ev\">{EVENTS_HEAD}<tbody data-fragment=\"events\">\n{events}</tbody></table></section>\n"
    );
    tail(&mut out);
    Some(out)
}

/// The sign-in page a browser gets instead of a page whose reads need a token: a form
/// that posts the token to `/login`, which keeps it in an HTTP-only cookie and sends the
/// browser back to `next`. `rejected`: the last try was refused.
pub fn login(host: &str, next: &str, rejected: bool) -> String {
    let mut out = String::with_capacity(CSS.len() + JS.len() + 2048);
    head(&mut out, host, 0);
    let _ = write!(out, "<header><h1>sluice · {}</h1>", escape(host));
    tools(&mut out);
    out.push_str("</header>\n<main>\n");
    let _ = write!(
        out,
        "<p data-i18n=\"needs_token\">This page is served beyond loopback: enter a viewer or admin token to read it.</p>\n{}<form id=\"login\" method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"next\" value=\"{}\"><input name=\"token\" type=\"password\" size=\"40\" data-i18n-placeholder=\"read_token\" placeholder=\"Token\" autocomplete=\"off\" autofocus required> <button type=\"submit\" data-i18n=\"sign_in\">Sign in</button></form>\n",
        if rejected {
            "<p class=\"bad\" data-i18n=\"bad_token\">That token is unknown or revoked.</p>\n"
        } else {
            ""
        },
        escape(next),
    );
    tail(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::{IfName, InstanceId, RuleName};
    use crate::policy::Reason;

    fn record(name: &str, instance: &str, stage: usize, now: Timestamp) -> InterfaceRecord {
        InterfaceRecord {
            interface: IfName::new(name).unwrap(),
            instance: InstanceId::new(instance).unwrap(),
            instance_name: None,
            present: true,
            stage,
            since: None,
            until: (stage > 0).then(|| now + jiff::SignedDuration::from_secs(1510)),
            reason: Reason::Base,
            upload_limit_kbps: Some(10_000),
            burst_kb: None,
            download_limit_kbps: None,
            packet_limit_pps: None,
            userspace: false,
            upload_bps: Some(2_000_000),
            download_bps: Some(1_000_000),
            upload_pps: None,
            download_pps: None,
            enforcement: Some(Enforcement::failed("no policer <here>")),
            shaper: None,
            rule: None,
            disconnected: false,
        }
    }

    #[test]
    fn rows_group_interfaces_by_instance_and_fragments_hold_only_the_refreshed_parts() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let snapshot = Snapshot {
            version: 1,
            written_at: now,
            pid: 1,
            backend: "tc".into(),
            interval_secs: 60,
            interfaces: vec![
                record("tap7i0", "7", 2, now),
                InterfaceRecord {
                    instance_name: Some("web<7>".into()),
                    ..record("tap7i1", "7", 0, now)
                },
                record("tap8i0", "8", 0, now),
            ],
            quotas: vec![QuotaRecord {
                rule: RuleName::new("monthly").unwrap(),
                instance: InstanceId::new("7").unwrap(),
                period_start: now,
                period_end: now,
                used_bytes: 900,
                elsewhere_bytes: 0,
                limit_bytes: 1000,
                action: crate::config::ActionKind::Warn,
                exceeded: false,
                judged: false,
            }],
        };
        let view = View {
            snapshot: &snapshot,
            events: &[],
            host: "hv<1>",
            refresh_secs: 60,
            now,
            tz: &TimeZone::UTC,
            percentiles: None,
        };
        let page = overview(&view, Part::Page);
        assert!(page.contains("<title>hv&lt;1&gt; · sluice</title>"));
        assert!(page.contains("data-refresh=\"60\""));
        assert_eq!(
            page.matches("<tr data-instance=").count(),
            2,
            "one row per instance"
        );
        let row7 = page
            .lines()
            .find(|l| l.starts_with("<tr data-instance=\"7\""))
            .unwrap();
        assert!(
            row7.contains("<td title=\"tap7i0 tap7i1\">2</td>"),
            "{row7}"
        );
        assert!(
            row7.contains(
                "<a href=\"instances/7\">7</a> <span class=\"name\">web&lt;7&gt;</span></td>"
            ),
            "the hypervisor's name beside the id: {row7}"
        );
        let row8 = page
            .lines()
            .find(|l| l.starts_with("<tr data-instance=\"8\""))
            .unwrap();
        assert!(
            row8.contains("<a href=\"instances/8\">8</a></td>"),
            "{row8}"
        );
        assert!(
            row7.contains("<span class=\"s2\">2</span> · 25m 10s"),
            "{row7}"
        );
        assert!(row7.contains("data-used=\"900\" data-limit=\"1000\""));
        assert!(row7.contains("class=\"hot\" style=\"width:90%\""), "{row7}");
        assert!(row7.contains("title=\"no policer &lt;here&gt;\""), "{row7}");
        assert!(row7.contains("data-release=\"tap7i0\""));
        assert!(
            !row7.contains("data-release=\"tap7i1\""),
            "stage 0: nothing to release"
        );
        assert!(row7.contains("data-sort=\"4000000\""), "rates summed");

        let part = overview(&view, Part::Fragments);
        assert!(!part.contains("<html") && !part.contains("<script"));
        assert!(
            part.contains("data-fragment=\"instances\"")
                && part.contains("data-fragment=\"events\"")
        );

        assert!(instance(&view, "9", Part::Page).is_none());
        let one = instance(&view, "8", Part::Page).unwrap();
        assert!(one.contains("data-interface=\"tap8i0\"") && !one.contains("tap7i0"));
        assert!(one.contains("../v1/instances/8/chart.svg?by=hour"));
        assert!(!one.contains("class=\"p95\""), "no percentile, no line");

        // The month's 95th percentile so far, when the ledger gave one.
        let rate = |bps| Some(crate::model::units::Rate::from_bits_per_sec(bps));
        let with = View {
            percentiles: Some(Percentiles {
                percentile: crate::model::percentile::Percentile::P95,
                samples: 288,
                estimated: 3,
                upload: rate(80_000),
                download: rate(1_333),
                max: rate(80_000),
                aggregate: None,
            }),
            ..view
        };
        let one = instance(&with, "8", Part::Page).unwrap();
        assert!(
            one.contains("95th percentile this month</span>: up 80.0 kbit/s · down 1.3 kbit/s · max 80.0 kbit/s · aggregate - <span class=\"dim\">(288 intervals, 3 left out)</span>"),
            "{one}"
        );
        let part = instance(&with, "8", Part::Fragments).unwrap();
        assert!(part.contains("class=\"p95\""), "refreshed with the usage");
    }
}
