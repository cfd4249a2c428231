//! Recorded traces for `sluice simulate`: CSV with the header
//! `time,interface,rx_bytes,tx_bytes`, `time` in Unix seconds (integer or decimal), rows
//! sharing a `time` forming one tick, counters cumulative as sampled.
//!
//! Read as a stream (a month of one-minute samples of a busy host is tens of millions of
//! rows), one tick at a time. Every error names its line.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use super::Sample;
use crate::model::ids::IfName;

/// The last time a trace may name: 9999-12-31T23:59:59Z, the calendar's end (a time
/// past it once made `simulate` panic).
pub const MAX_TRACE_TIME: f64 = 253_402_300_799.0;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: String },
    #[error("trace: {0}")]
    Read(String),
}

/// One tick of a trace: every row that shares one `time`.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceTick {
    pub time: f64,
    pub samples: Vec<Sample>,
}

/// Reads a trace tick by tick.
pub struct TraceReader<R: Read> {
    rows: csv::StringRecordsIntoIter<R>,
    pending: Option<(f64, Sample, u64)>,
    /// Traces carry no ifindex; each interface gets a stable synthetic one, so resets show
    /// only as counters going backwards, as in the kernel when an ifindex is reused.
    ifindex: HashMap<IfName, u32>,
    last_time: Option<f64>,
    done: bool,
}

const HEADER: [&str; 4] = ["time", "interface", "rx_bytes", "tx_bytes"];

impl<R: Read> TraceReader<R> {
    pub fn new(input: R) -> Result<Self, TraceError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(input);
        let header = reader
            .headers()
            .map_err(|e| TraceError::Read(e.to_string()))?;
        if header.iter().collect::<Vec<_>>() != HEADER {
            return Err(TraceError::Line {
                line: 1,
                reason: format!(
                    "header must be {:?}, got {:?}",
                    HEADER.join(","),
                    header.iter().collect::<Vec<_>>().join(",")
                ),
            });
        }
        Ok(TraceReader {
            rows: reader.into_records(),
            pending: None,
            ifindex: HashMap::new(),
            last_time: None,
            done: false,
        })
    }

    fn next_row(&mut self) -> Option<Result<(f64, Sample, u64), TraceError>> {
        let record = match self.rows.next()? {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                return Some(Err(TraceError::Line {
                    line,
                    reason: e.to_string(),
                }));
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let bad = |reason: String| Some(Err(TraceError::Line { line, reason }));
        if record.len() != 4 {
            return bad(format!(
                "expected 4 fields (time,interface,rx_bytes,tx_bytes), got {}",
                record.len()
            ));
        }
        let time: f64 = match record[0].parse() {
            Ok(t) if f64::is_finite(t) && (0.0..=MAX_TRACE_TIME).contains(&t) => t,
            Ok(t) if f64::is_finite(t) && t > MAX_TRACE_TIME => {
                return bad(format!(
                    "time: {t} is past the year 9999 (at most {MAX_TRACE_TIME} Unix seconds)"
                ));
            }
            _ => return bad(format!("time: {:?} is not Unix seconds", &record[0])),
        };
        let name = match IfName::new(&record[1]) {
            Ok(n) => n,
            Err(e) => return bad(format!("interface: {e}")),
        };
        let counter = |i: usize, field: &str| {
            record[i].parse::<u64>().map_err(|_| {
                format!(
                    "{field}: {:?} is not a byte counter (an integer ≥ 0)",
                    &record[i]
                )
            })
        };
        let (rx_bytes, tx_bytes) = match (counter(2, "rx_bytes"), counter(3, "tx_bytes")) {
            (Ok(rx), Ok(tx)) => (rx, tx),
            (Err(e), _) | (_, Err(e)) => return bad(e),
        };
        let next = self.ifindex.len() as u32 + 1;
        let ifindex = *self.ifindex.entry(name.clone()).or_insert(next);
        Some(Ok((
            time,
            Sample {
                ifindex,
                name,
                rx_bytes,
                tx_bytes,
                rx_packets: 0,
                tx_packets: 0,
            },
            line,
        )))
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Result<TraceTick, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let first = match self.pending.take().map(Ok).or_else(|| self.next_row()) {
            None => return None,
            Some(Err(e)) => {
                self.done = true;
                return Some(Err(e));
            }
            Some(Ok(row)) => row,
        };
        let (time, sample, line) = first;
        if let Some(last) = self.last_time
            && time < last
        {
            self.done = true;
            return Some(Err(TraceError::Line {
                line,
                reason: format!(
                    "time {time} is earlier than the previous tick's {last}: rows must be in time order"
                ),
            }));
        }
        self.last_time = Some(time);
        let mut seen = HashSet::from([sample.name.clone()]);
        let mut samples = vec![sample];
        loop {
            match self.next_row() {
                None => break,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok((t, s, line))) if t == time => {
                    if !seen.insert(s.name.clone()) {
                        self.done = true;
                        return Some(Err(TraceError::Line {
                            line,
                            reason: format!("interface {} appears twice at time {time}", s.name),
                        }));
                    }
                    samples.push(s);
                }
                Some(Ok(row)) => {
                    self.pending = Some(row);
                    break;
                }
            }
        }
        Some(Ok(TraceTick { time, samples }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<TraceTick>, TraceError> {
        TraceReader::new(text.as_bytes())?.collect()
    }

    #[test]
    fn rows_sharing_a_time_form_one_tick() {
        let ticks = read(
            "time,interface,rx_bytes,tx_bytes\n0,kvm1.0,0,0\n0,kvm2.0,5,6\n60.5,kvm1.0,100,200\n",
        )
        .unwrap();
        assert_eq!(ticks.len(), 2);
        assert_eq!(ticks[0].time, 0.0);
        assert_eq!(ticks[0].samples.len(), 2);
        assert_eq!(ticks[1].time, 60.5);
        assert_eq!(ticks[1].samples[0].rx_bytes, 100);
        assert_eq!(ticks[1].samples[0].ifindex, ticks[0].samples[0].ifindex);
        assert_ne!(ticks[0].samples[0].ifindex, ticks[0].samples[1].ifindex);
    }

    #[test]
    fn malformed_traces_name_the_line() {
        let h = "time,interface,rx_bytes,tx_bytes\n";
        let table = [
            (
                "time,iface,rx,tx\n0,a,1,1\n".to_string(),
                "line 1: header must be",
            ),
            (
                format!("{h}0,kvm1.0,1,1\nsoon,kvm1.0,2,2\n"),
                "line 3: time: \"soon\"",
            ),
            (format!("{h}0,kvm1.0,-1,1\n"), "line 2: rx_bytes: \"-1\""),
            (
                format!("{h}0,kvm1.0,1,1\n1e20,kvm1.0,2,2\n"),
                "line 3: time: 100000000000000000000 is past the year 9999",
            ),
            (format!("{h}0,kvm1.0,1,1.5\n"), "line 2: tx_bytes: \"1.5\""),
            (
                format!("{h}0,bad name,1,1\n"),
                "line 2: interface: interface name \"bad name\"",
            ),
            (format!("{h}0,kvm1.0,1\n"), "line 2: expected 4 fields"),
            (
                format!("{h}60,kvm1.0,1,1\n0,kvm1.0,1,1\n"),
                "line 3: time 0 is earlier",
            ),
            (
                format!("{h}0,kvm1.0,1,1\n0,kvm1.0,2,2\n"),
                "line 3: interface kvm1.0 appears twice",
            ),
            (format!("{h}-5,kvm1.0,1,1\n"), "line 2: time: \"-5\""),
        ];
        for (text, want) in table {
            let err = read(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: wanted {want:?}, got {err:?}");
        }
    }
}
