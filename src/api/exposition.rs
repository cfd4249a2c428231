//! `/metrics` in the format the scraper asked for.
//!
//! `prometheus_client` writes only OpenMetrics, where a counter's family is named
//! without `_total` and the body ends in `# EOF`. Prometheus' own text format (0.0.4),
//! which `promtool check metrics`, older scrapers and a curl by hand read, names the
//! family after its samples and knows no `# UNIT` or `# EOF`. Read one as the other and
//! every counter is a family without samples beside an untyped one without help. So the
//! scraper's `Accept` header picks: OpenMetrics when it asks for it (Prometheus does),
//! the text format otherwise, as the Go client libraries answer.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two expositions a scraper can be answered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    /// The format `accept` prefers: OpenMetrics when it is named with a weight above
    /// zero and at least that of `text/plain`; the text format otherwise (no header, or
    /// `*/*`, included).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// The answer to a scrape: `openmetrics` (as `prometheus_client` wrote it) in the format
/// `headers` ask for, with its content type.
pub fn respond(headers: &HeaderMap, openmetrics: String) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    match Format::negotiate(accept) {
        Format::OpenMetrics => (
            [(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS))],
            openmetrics,
        )
            .into_response(),
        Format::Text => (
            [(header::CONTENT_TYPE, HeaderValue::from_static(TEXT))],
            to_text_format(&openmetrics),
        )
            .into_response(),
    }
}

/// OpenMetrics text, as `prometheus_client` writes it, in Prometheus' text format 0.0.4:
/// a counter's `# HELP`/`# TYPE` take its samples' `_total` name and its `_created`
/// samples go; `info` and `stateset` families become gauges; `# UNIT`, `# EOF` and
/// exemplars go; a backslash in help text is escaped, as the text format wants.
pub fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // The counter family whose samples follow, to drop its `_created` ones.
    let mut counter: Option<String> = None;
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // `prometheus_client` writes help as it is; the text format escapes `\`.
            let help = help.replace('\\', "\\\\");
            // `prometheus_client` writes a family's TYPE right after its HELP.
            let kind = lines.peek().and_then(|l| {
                l.strip_prefix("# TYPE ")?
                    .strip_prefix(name)?
                    .strip_prefix(' ')
            });
            out.push_str(&format!("# HELP {} {help}\n", text_name(name, kind)));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let text_kind = match kind {
                "info" | "stateset" => "gauge",
                "gaugehistogram" => "histogram",
                "unknown" => "untyped",
                other => other,
            };
            counter = (kind == "counter").then(|| name.to_owned());
            out.push_str(&format!(
                "# TYPE {} {text_kind}\n",
                text_name(name, Some(kind))
            ));
            continue;
        }
        if let Some(family) = &counter
            && line
                .strip_prefix(family.as_str())
                .is_some_and(|r| r.starts_with("_created"))
        {
            continue;
        }
        out.push_str(without_exemplar(line));
        out.push('\n');
    }
    out
}

/// A sample line without its exemplar, which follows ` # ` after the value (a label
/// value may hold ` # ` too, so the search starts after the label set).
fn without_exemplar(line: &str) -> &str {
    let mut labels_end = 0;
    if let Some(open) = line.find('{')
        && !line[..open].contains(' ')
    {
        let (mut quoted, mut escaped) = (false, false);
        for (i, c) in line[open..].char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '}' if !quoted => {
                    labels_end = open + i;
                    break;
                }
                _ => {}
            }
        }
    }
    match line[labels_end..].find(" # ") {
        Some(at) => &line[..labels_end + at],
        None => line,
    }
}
/// A family's name in the text format: a counter's is its samples' (`_total`), an info
/// family's likewise (`_info`); others keep theirs.
fn text_name(name: &str, kind: Option<&str>) -> String {
    match kind {
        Some("counter") if !name.ends_with("_total") => format!("{name}_total"),
        Some("info") if !name.ends_with("_info") => format!("{name}_info"),
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrapers_accept_header_picks_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            (Some(prometheus), Format::OpenMetrics),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("APPLICATION/OpenMetrics-Text; q=0.3"),
                Format::OpenMetrics,
            ),
            (None, Format::Text),
            (Some("*/*"), Format::Text),
            (Some("text/plain"), Format::Text),
            (Some("application/openmetrics-text;q=0"), Format::Text),
            (
                Some("text/plain;q=1, application/openmetrics-text;q=0.5"),
                Format::Text,
            ),
            (
                Some("text/plain;q=0.5, application/openmetrics-text;q=0.5"),
                Format::OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;q=bad"),
                Format::OpenMetrics,
            ),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn openmetrics_reads_as_the_text_format() {
        let openmetrics = "\
# HELP sluice_enforce_failures Times limits could not be applied.
# TYPE sluice_enforce_failures counter
sluice_enforce_failures_total 3
sluice_enforce_failures_created 1700000000.0
# HELP sluice_tick_duration_seconds Time one tick took.
# TYPE sluice_tick_duration_seconds histogram
# UNIT sluice_tick_duration_seconds seconds
sluice_tick_duration_seconds_sum 0.5
sluice_tick_duration_seconds_count 2
sluice_tick_duration_seconds_bucket{le=\"+Inf\"} 2
# HELP sluice_requests Requests by \\\"route\\\".
# TYPE sluice_requests counter
sluice_requests_total{route=\"/v1/a # b\"} 7 # {trace=\"x\"} 1.0
# HELP sluice_build A \"build\".
# TYPE sluice_build info
sluice_build_info{version=\"1\"} 1
# HELP sluice_stage Stage.
# TYPE sluice_stage gauge
sluice_stage{instance=\"1\"} 1
# EOF
";
        let want = "\
# HELP sluice_enforce_failures_total Times limits could not be applied.
# TYPE sluice_enforce_failures_total counter
sluice_enforce_failures_total 3
# HELP sluice_tick_duration_seconds Time one tick took.
# TYPE sluice_tick_duration_seconds histogram
sluice_tick_duration_seconds_sum 0.5
sluice_tick_duration_seconds_count 2
sluice_tick_duration_seconds_bucket{le=\"+Inf\"} 2
# HELP sluice_requests_total Requests by \\\\\"route\\\\\".
# TYPE sluice_requests_total counter
sluice_requests_total{route=\"/v1/a # b\"} 7
# HELP sluice_build_info A \"build\".
# TYPE sluice_build_info gauge
sluice_build_info{version=\"1\"} 1
# HELP sluice_stage Stage.
# TYPE sluice_stage gauge
sluice_stage{instance=\"1\"} 1
";
        assert_eq!(to_text_format(openmetrics), want);
    }
}
