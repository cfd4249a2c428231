//! What the ledger must remember between ticks, packed into one row.
//!
//! Writing one SQLite row per interface per tick (its counters, its 5-minute bucket, its
//! hourly bucket) costs ~1.5 µs of CPU per row plus a dirty B-tree page per row: 52 ms a
//! tick at 10,000 interfaces. Everything that changes every tick — each interface's last
//! counters and its two *open* buckets — is instead one postcard-encoded value in the
//! `state` table, rewritten as a whole (~40 bytes per interface, sequential pages).
//! Buckets become rows of `usage_5m`/`usage_hour` only when they close, and those rows
//! are written a share per tick rather than all at the boundary (`pending`), so no tick
//! pays for 10,000 inserts. Readers ([`unwritten_rows`]) add the open and pending buckets
//! to the table rows: nothing counted is invisible, and a kill -9 keeps all or none.
//!
//! Times are stored relative to the state's own `at_ms`, so a current interface costs a
//! byte or two rather than eight (postcard writes integers as varints).

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{FIVE_MINUTES, HOUR, LedgerError, sql};

/// One packed row of the `state` table. Its first byte is its format, bumped when the
/// layout changes: an unknown format is refused, not guessed at.
pub(super) struct PackedRow {
    id: i64,
    format: u8,
    /// For errors: "reading the counters (state row 1)", "writing the counters".
    reading: &'static str,
    writing: &'static str,
}

impl PackedRow {
    pub(super) const fn new(
        id: i64,
        format: u8,
        reading: &'static str,
        writing: &'static str,
    ) -> PackedRow {
        PackedRow {
            id,
            format,
            reading,
            writing,
        }
    }

    /// The format byte this sluice writes (the first field of every layout).
    pub(super) fn format(&self) -> u8 {
        self.format
    }

    /// `value` (whose first field is the format byte), into a buffer of `room` bytes.
    pub(super) fn encode<T: Serialize>(
        &self,
        value: &T,
        room: usize,
    ) -> Result<Vec<u8>, LedgerError> {
        postcard::to_extend(value, Vec::with_capacity(room)).map_err(|e| self.bad_write(e))
    }

    pub(super) fn decode<'a, T: Deserialize<'a>>(&self, bytes: &'a [u8]) -> Result<T, LedgerError> {
        let format = bytes.first().copied().unwrap_or(0);
        if format != self.format {
            return Err(self.bad(format!(
                "format {format} is not one this sluice knows ({})",
                self.format
            )));
        }
        postcard::from_bytes(bytes).map_err(|e| self.bad(e.to_string()))
    }

    pub(super) fn bad(&self, reason: String) -> LedgerError {
        LedgerError::Sql {
            what: self.reading,
            source: reason.into(),
        }
    }

    fn bad_write(&self, e: impl std::fmt::Display) -> LedgerError {
        LedgerError::Sql {
            what: self.writing,
            source: e.to_string().into(),
        }
    }

    /// The row's bytes (`None` before it was first written).
    pub(super) fn read(&self, conn: &Connection) -> Result<Option<Vec<u8>>, LedgerError> {
        conn.query_row(
            "SELECT data FROM state WHERE id = ?1",
            params![self.id],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.bad(e.to_string()))
    }

    pub(super) fn write(&self, conn: &Connection, bytes: &[u8]) -> Result<(), LedgerError> {
        conn.prepare_cached(
            "INSERT INTO state (id, data) VALUES (?1, ?2)
             ON CONFLICT (id) DO UPDATE SET data = excluded.data",
        )
        .and_then(|mut s| s.execute(params![self.id, bytes]))
        .map_err(|e| self.bad_write(e))?;
        Ok(())
    }
}

const COUNTERS: PackedRow = PackedRow::new(
    1,
    1,
    "reading the counters (state row 1)",
    "writing the counters",
);

/// The two bucket tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Table {
    FiveMinutes,
    Hour,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::FiveMinutes, Table::Hour];

    pub fn name(self) -> &'static str {
        match self {
            Table::FiveMinutes => "usage_5m",
            Table::Hour => "usage_hour",
        }
    }

    /// Bucket length in seconds.
    pub fn len_s(self) -> i64 {
        match self {
            Table::FiveMinutes => FIVE_MINUTES,
            Table::Hour => HOUR,
        }
    }

    fn index(self) -> usize {
        match self {
            Table::FiveMinutes => 0,
            Table::Hour => 1,
        }
    }
}

/// The bucket an interface is still adding to. Empty (no bytes) means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Open {
    /// Bucket start, seconds since the epoch.
    pub start: i64,
    pub rx: u64,
    pub tx: u64,
    pub estimated: bool,
}

impl Open {
    pub fn is_empty(&self) -> bool {
        self.rx == 0 && self.tx == 0
    }
}

/// A bucket's bytes for one interface (by its `interfaces.id`), to be added to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub table: Table,
    pub id: i64,
    pub bucket: i64,
    pub rx: u64,
    pub tx: u64,
    pub estimated: bool,
}

impl Row {
    pub fn closing(table: Table, id: i64, open: &Open) -> Row {
        Row {
            table,
            id,
            bucket: open.start,
            rx: open.rx,
            tx: open.tx,
            estimated: open.estimated,
        }
    }
}

/// One interface's remembered counters and open buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `interfaces.id` of (interface, instance).
    pub id: i64,
    pub ifindex: u32,
    /// Counted in the boot named by the state's `boot_id`.
    pub this_boot: bool,
    pub rx: u64,
    pub tx: u64,
    /// When these counters were last read (ms since the epoch).
    pub at_ms: i64,
    /// Open buckets, indexed as [`Table::ALL`].
    pub open: [Open; 2],
}

impl Entry {
    pub fn open_mut(&mut self, table: Table) -> &mut Open {
        &mut self.open[table.index()]
    }
}

/// The whole between-ticks state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub boot_id: String,
    /// When it was written (the last tick that wrote), ms since the epoch.
    pub at_ms: i64,
    pub entries: Vec<Entry>,
    /// Closed buckets not yet in their tables, oldest first.
    pub pending: Vec<Row>,
}

/// The stored layout, as read.
#[derive(Deserialize)]
struct Wire {
    /// Checked on the first byte before decoding (another format may not decode).
    _format: u8,
    boot_id: String,
    at_ms: i64,
    entries: Vec<WireEntry>,
    pending: Vec<WireRow>,
}

/// The same layout, as written: borrowed, so encoding copies nothing into a second
/// vector of 10,000 entries first.
#[derive(Serialize)]
struct WireOut<'a> {
    format: u8,
    boot_id: &'a str,
    at_ms: i64,
    entries: Entries<'a>,
    pending: Pending<'a>,
}

struct Entries<'a>(&'a State);
struct Pending<'a>(&'a State);

impl Serialize for Entries<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let at_ms = self.0.at_ms;
        let at_s = at_ms.div_euclid(1000);
        let open = |o: &Open| WireOpen {
            age_s: at_s.wrapping_sub(o.start),
            rx: o.rx,
            tx: o.tx,
            estimated: o.estimated,
        };
        s.collect_seq(self.0.entries.iter().map(|e| WireEntry {
            id: e.id,
            ifindex: e.ifindex,
            this_boot: e.this_boot,
            rx: e.rx,
            tx: e.tx,
            age_ms: at_ms.wrapping_sub(e.at_ms),
            open: [open(&e.open[0]), open(&e.open[1])],
        }))
    }
}

impl Serialize for Pending<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let at_s = self.0.at_ms.div_euclid(1000);
        s.collect_seq(self.0.pending.iter().map(|r| WireRow {
            table: r.table,
            id: r.id,
            age_s: at_s.wrapping_sub(r.bucket),
            rx: r.rx,
            tx: r.tx,
            estimated: r.estimated,
        }))
    }
}

#[derive(Serialize, Deserialize)]
struct WireEntry {
    id: i64,
    ifindex: u32,
    this_boot: bool,
    rx: u64,
    tx: u64,
    /// `Wire::at_ms - at_ms`
    age_ms: i64,
    open: [WireOpen; 2],
}

#[derive(Serialize, Deserialize)]
struct WireOpen {
    /// `Wire::at_ms / 1000 - start`
    age_s: i64,
    rx: u64,
    tx: u64,
    estimated: bool,
}

#[derive(Serialize, Deserialize)]
struct WireRow {
    table: Table,
    id: i64,
    age_s: i64,
    rx: u64,
    tx: u64,
    estimated: bool,
}

impl State {
    pub fn encode(&self) -> Result<Vec<u8>, LedgerError> {
        let wire = WireOut {
            format: COUNTERS.format(),
            boot_id: &self.boot_id,
            at_ms: self.at_ms,
            entries: Entries(self),
            pending: Pending(self),
        };
        let room = 64 + 48 * self.entries.len() + 16 * self.pending.len();
        COUNTERS.encode(&wire, room)
    }

    pub fn decode(bytes: &[u8]) -> Result<State, LedgerError> {
        let wire: Wire = COUNTERS.decode(bytes)?;
        let at_s = wire.at_ms.div_euclid(1000);
        let open = |o: &WireOpen| Open {
            start: at_s.wrapping_sub(o.age_s),
            rx: o.rx,
            tx: o.tx,
            estimated: o.estimated,
        };
        Ok(State {
            boot_id: wire.boot_id,
            at_ms: wire.at_ms,
            entries: wire
                .entries
                .iter()
                .map(|e| Entry {
                    id: e.id,
                    ifindex: e.ifindex,
                    this_boot: e.this_boot,
                    rx: e.rx,
                    tx: e.tx,
                    at_ms: wire.at_ms.wrapping_sub(e.age_ms),
                    open: [open(&e.open[0]), open(&e.open[1])],
                })
                .collect(),
            pending: wire
                .pending
                .iter()
                .map(|r| Row {
                    table: r.table,
                    id: r.id,
                    bucket: at_s.wrapping_sub(r.age_s),
                    rx: r.rx,
                    tx: r.tx,
                    estimated: r.estimated,
                })
                .collect(),
        })
    }

    /// Every bucket not yet in its table: the open ones and the pending ones.
    pub fn unwritten(&self) -> impl Iterator<Item = Row> + '_ {
        let open = self.entries.iter().flat_map(|e| {
            Table::ALL
                .into_iter()
                .zip(e.open)
                .filter(|(_, o)| !o.is_empty())
                .map(|(t, o)| Row::closing(t, e.id, &o))
        });
        open.chain(self.pending.iter().copied())
    }
}

/// The stored state (`None` for a ledger that never recorded a tick).
pub fn read(conn: &Connection) -> Result<Option<State>, LedgerError> {
    COUNTERS.read(conn)?.map(|b| State::decode(&b)).transpose()
}

pub fn write(conn: &Connection, bytes: &[u8]) -> Result<(), LedgerError> {
    COUNTERS.write(conn, bytes)
}

/// Rows per INSERT: one statement for many rows spends far less per row in SQLite's
/// VM than one statement each (2,500 rows a tick after a 5-minute boundary).
const CHUNK: usize = 100;

/// Add each row's bytes to its table (rows naming the same bucket add up).
pub fn add_rows(conn: &Connection, rows: &[Row]) -> Result<(), LedgerError> {
    for table in Table::ALL {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.table == table).collect();
        for chunk in mine.chunks(CHUNK) {
            // Full chunks share one cached statement; the tail goes a row at a time.
            let per_statement = if chunk.len() == CHUNK { CHUNK } else { 1 };
            let mut stmt = conn
                .prepare_cached(&add_statement(table, per_statement))
                .map_err(sql("preparing bucket writes"))?;
            for group in chunk.chunks(per_statement) {
                let values = group.iter().flat_map(|r| {
                    [
                        r.bucket,
                        r.id,
                        r.rx as i64,
                        r.tx as i64,
                        i64::from(r.estimated),
                    ]
                });
                stmt.execute(rusqlite::params_from_iter(values))
                    .map_err(sql("writing buckets"))?;
            }
        }
    }
    Ok(())
}

fn add_statement(table: Table, rows: usize) -> String {
    let values = vec!["(?, ?, ?, ?, ?)"; rows].join(", ");
    format!(
        "INSERT INTO {} (bucket, id, rx, tx, estimated) VALUES {values}
         ON CONFLICT (bucket, id) DO UPDATE SET rx = rx + excluded.rx, tx = tx + excluded.tx,
         estimated = estimated OR excluded.estimated",
        table.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let open = |start, rx| Open {
            start,
            rx,
            tx: 3,
            estimated: rx == 7,
        };
        State {
            boot_id: "b".into(),
            at_ms: 1_800_000_060_000,
            entries: vec![
                Entry {
                    id: 1,
                    ifindex: 7,
                    this_boot: true,
                    rx: u64::MAX,
                    tx: 0,
                    at_ms: 1_800_000_060_000,
                    open: [open(1_800_000_000, 5), open(1_799_996_400, 7)],
                },
                Entry {
                    id: 2,
                    ifindex: 9,
                    this_boot: false,
                    rx: 1,
                    tx: 2,
                    // Clock went back since: ages may be negative.
                    at_ms: 1_800_000_090_000,
                    open: [Open::default(), open(1_800_000_000, 1)],
                },
            ],
            pending: vec![Row {
                table: Table::Hour,
                id: 2,
                bucket: 1_799_992_800,
                rx: 10,
                tx: 0,
                estimated: true,
            }],
        }
    }

    #[test]
    fn round_trips_exactly() {
        let s = sample();
        let bytes = s.encode().unwrap();
        assert_eq!(State::decode(&bytes).unwrap(), s);
        // Compact: two interfaces and a pending row in well under a hundred bytes.
        assert!(bytes.len() < 100, "{} bytes", bytes.len());
    }

    #[test]
    fn unknown_or_damaged_state_is_an_error_not_a_guess() {
        let mut bytes = sample().encode().unwrap();
        let mut other = bytes.clone();
        other[0] = 9;
        let err = State::decode(&other).unwrap_err().to_string();
        assert!(err.contains("format 9"), "{err}");
        bytes.truncate(bytes.len() / 2);
        let err = State::decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("state row"), "{err}");
    }

    #[test]
    fn rows_add_up_in_full_chunks_and_in_the_tail() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::upgrade(&mut conn, 0, "b").unwrap();
        // 250 rows: two full chunks and a tail; bucket 0 of id 1 named three times.
        let rows: Vec<Row> = (0..250)
            .map(|i| Row {
                table: if i % 5 == 0 {
                    Table::Hour
                } else {
                    Table::FiveMinutes
                },
                id: if i % 100 == 7 { 1 } else { i },
                bucket: if i % 100 == 7 { 0 } else { 300 },
                rx: 10,
                tx: 1,
                estimated: i == 207,
            })
            .collect();
        add_rows(&conn, &rows).unwrap();
        let (n, rx, tx): (i64, i64, i64) = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM usage_5m) + (SELECT COUNT(*) FROM usage_hour),
                 (SELECT SUM(rx) FROM usage_5m) + (SELECT SUM(rx) FROM usage_hour),
                 (SELECT SUM(tx) FROM usage_5m) + (SELECT SUM(tx) FROM usage_hour)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((n, rx, tx), (248, 2500, 250));
        let (rx, est): (i64, bool) = conn
            .query_row(
                "SELECT rx, estimated FROM usage_5m WHERE id = 1 AND bucket = 0",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((rx, est), (30, true));
    }

    #[test]
    fn unwritten_is_every_open_bucket_and_every_pending_row() {
        let s = sample();
        let got: Vec<(Table, i64, i64, u64)> = s
            .unwritten()
            .map(|r| (r.table, r.id, r.bucket, r.rx))
            .collect();
        assert_eq!(
            got,
            [
                (Table::FiveMinutes, 1, 1_800_000_000, 5),
                (Table::Hour, 1, 1_799_996_400, 7),
                (Table::Hour, 2, 1_800_000_000, 1),
                (Table::Hour, 2, 1_799_992_800, 10),
            ]
        );
    }
}
