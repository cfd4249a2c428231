//! `sluice export`: an instance's (or every instance's) traffic over a range as JSON,
//! CSV, SVG, PNG or a self-contained HTML page — for customers, tickets and invoices.
//! The numbers come from the ledger ([`series`]); the charts are drawn by plotters
//! ([`chart`]); the page inlines them ([`html`]).

pub mod chart;
pub mod html;
pub mod series;

pub use series::{Directions, Report, Series, Spec, build};

/// The CSV of a report: one row per instance (and interface) and period.
pub fn csv(report: &Report) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "instance",
        "interface",
        "period_start",
        "upload_bytes",
        "download_bytes",
        "estimated",
        "instance_name",
    ])?;
    for s in &report.series {
        for p in &s.points {
            w.write_record([
                s.instance.as_str(),
                s.interface.as_deref().unwrap_or(""),
                &p.start.to_string(),
                &p.upload_bytes.to_string(),
                &p.download_bytes.to_string(),
                if p.estimated { "true" } else { "false" },
                s.name.as_deref().unwrap_or(""),
            ])?;
        }
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}
