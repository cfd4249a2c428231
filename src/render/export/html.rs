//! One self-contained HTML file: the charts as inline SVG, a totals table and the events
//! of the range — no script, no stylesheet or font fetched from anywhere, so it can be
//! attached to a ticket or mailed to a customer as it is.

use std::fmt::Write;

use jiff::tz::TimeZone;

use super::chart::{self, ChartError, Figure, Theme};
use super::series::Report;
use crate::model::human::human_bytes;

/// Escape text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
:root { --bg:#ffffff; --fg:#1f2328; --muted:#59636e; --line:#d0d7de; --up:#d96c00; --down:#0969da; --bad:#cf222e; }
.dark { --bg:#161b22; --fg:#e6edf3; --muted:#9198a1; --line:#30363d; --up:#ff9e3d; --down:#4cb8ff; --bad:#f85149; }
body { background:var(--bg); color:var(--fg); font:14px/1.45 system-ui, sans-serif; margin:24px auto; max-width:1040px; padding:0 16px; }
h1 { font-size:22px; margin:0 0 4px; } h2 { font-size:18px; margin:28px 0 8px; }
.meta { color:var(--muted); margin:0 0 16px; }
table { border-collapse:collapse; width:100%; margin:8px 0 16px; }
th, td { border-bottom:1px solid var(--line); padding:4px 8px; text-align:left; vertical-align:top; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
.up { color:var(--up); } .down { color:var(--down); } .bad { color:var(--bad); font-weight:600; }
figure { margin:0; } svg { max-width:100%; height:auto; }
code { font-size:12px; }
";

/// The report as one HTML document.
pub fn render(report: &Report, theme_dark: bool, tz: &TimeZone) -> Result<String, ChartError> {
    let theme = Theme::new(theme_dark);
    let when = |t: jiff::Timestamp| {
        t.to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string()
    };
    let title = if report.series.len() == 1 {
        format!("Traffic of instance {}", report.series[0].label())
    } else {
        format!("Traffic of {} instances", report.series.len())
    };
    let mut h = String::with_capacity(64 << 10);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\" class=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{} · sluice</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n<p class=\"meta\">{} → {} · per {} · {} · generated {}</p>\n",
        if theme_dark { "dark" } else { "light" },
        escape(&title),
        escape(&title),
        escape(&when(report.from)),
        escape(&when(report.to)),
        escape(&report.by),
        escape(&report.timezone),
        escape(&when(report.generated_at)),
    );
    // Totals.
    h.push_str("<table id=\"totals\">\n<thead><tr><th>instance</th><th class=\"num\">upload</th><th class=\"num\">download</th><th class=\"num\">total</th><th>quota</th><th class=\"num\">penalties</th></tr></thead>\n<tbody>\n");
    for s in &report.series {
        let quota = s.quota.as_ref().map_or_else(String::new, |q| {
            let used = q.used_bytes.iter().copied().max().unwrap_or(0);
            let pct = used as f64 * 100.0 / q.limit_bytes.max(1) as f64;
            let cls = if used > q.limit_bytes {
                " class=\"bad\""
            } else {
                ""
            };
            format!(
                "<span{cls}>{} {} of {} ({pct:.0}%)</span>",
                escape(&q.rule),
                human_bytes(used),
                human_bytes(q.limit_bytes)
            )
        });
        let _ = writeln!(
            h,
            "<tr data-instance=\"{i}\"><td><a href=\"#i-{i}\">{label}</a></td><td class=\"num up\" data-bytes=\"{}\">{}</td><td class=\"num down\" data-bytes=\"{}\">{}</td><td class=\"num\" data-bytes=\"{}\">{}</td><td>{quota}</td><td class=\"num\">{}</td></tr>",
            s.upload_bytes,
            human_bytes(s.upload_bytes),
            s.download_bytes,
            human_bytes(s.download_bytes),
            s.total(),
            human_bytes(s.total()),
            s.penalties.len(),
            i = escape(&s.instance),
            label = escape(&s.label()),
        );
    }
    let _ = writeln!(
        h,
        "</tbody>\n<tfoot><tr><th>all</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th></th><th></th></tr></tfoot>\n</table>",
        human_bytes(report.upload_bytes),
        human_bytes(report.download_bytes),
        human_bytes(report.upload_bytes + report.download_bytes)
    );
    if report.series.len() > 1 {
        h.push_str("<figure class=\"summary\">");
        h.push_str(strip_xml_prolog(&chart::svg(
            report,
            &Figure::Summary,
            &theme,
            tz,
        )?));
        h.push_str("</figure>\n");
    }
    for s in &report.series {
        let _ = writeln!(
            h,
            "<section id=\"i-{0}\">\n<h2>Instance {1}</h2>",
            escape(&s.instance),
            escape(&s.label())
        );
        h.push_str("<figure>");
        h.push_str(strip_xml_prolog(&chart::svg(
            report,
            &Figure::Instance(s),
            &theme,
            tz,
        )?));
        h.push_str("</figure>\n");
        if s.events.is_empty() {
            h.push_str("<p class=\"meta\">No events in this range.</p>\n");
        } else {
            h.push_str("<table class=\"events\">\n<thead><tr><th>time</th><th>event</th><th>details</th></tr></thead>\n<tbody>\n");
            for e in &s.events {
                let at = e["time"]
                    .as_f64()
                    .and_then(|t| jiff::Timestamp::from_millisecond((t * 1000.0) as i64).ok())
                    .map_or_else(String::new, when);
                let kind = e["event"].as_str().unwrap_or("");
                let mut rest = e.clone();
                if let Some(m) = rest.as_object_mut() {
                    for k in ["time", "event", "instance"] {
                        m.remove(k);
                    }
                }
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    escape(&at),
                    escape(kind),
                    escape(&rest.to_string())
                );
            }
            h.push_str("</tbody>\n</table>\n");
        }
        h.push_str("</section>\n");
    }
    h.push_str("</body>\n</html>\n");
    Ok(h)
}

/// An SVG document's text without its `<?xml …?>` line, for inlining.
fn strip_xml_prolog(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape(r#"<b>"101" & 'x'</b>"#),
            "&lt;b&gt;&quot;101&quot; &amp; &#39;x&#39;&lt;/b&gt;"
        );
    }
}
