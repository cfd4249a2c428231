//! [`Statements`] on a SQLite connection inside a transaction the caller opened
//! ([`super::SqliteStore`] gives each unit of work its own, the group-commit writer
//! ([`super::writer`]) runs many in one), and the statements SQLite spells its own way.
//!
//! Every statement is prepared once and cached: parsing them per request cost more than
//! the requests. Nothing here awaits: each future is ready when first polled.

use std::collections::BTreeSet;

use jiff::Timestamp;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, params};

use super::db;
use crate::model::day_curve;
use crate::model::ids::{InstanceId, Label};
use crate::model::percentile::Interval;
use crate::store::backend::{
    Arg, Curves, DAY_MS, Row, Statements, Value, clamp, for_sqlite, merge_curves,
};
use crate::store::model::{StoreError, cause};
use crate::store::report::{Hours, Intervals};

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let v = match *self {
            Arg::Int(n) | Arg::OptInt(Some(n)) => ValueRef::Integer(n),
            Arg::Text(s) | Arg::OptText(Some(s)) => ValueRef::Text(s.as_bytes()),
            Arg::Bytes(b) => ValueRef::Blob(b),
            Arg::OptInt(None) | Arg::OptText(None) => ValueRef::Null,
            // `json_each` reads it (see `for_sqlite`).
            Arg::Texts(list) => {
                let json = serde_json::to_string(list)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                return Ok(ToSqlOutput::from(json));
            }
        };
        Ok(ToSqlOutput::Borrowed(v))
    }
}

fn value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Real(_) => Value::Real,
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

/// The store's statements on one SQLite connection.
pub struct Sqlite<'c> {
    conn: &'c Connection,
}

impl<'c> Sqlite<'c> {
    pub fn new(conn: &'c Connection) -> Sqlite<'c> {
        Sqlite { conn }
    }

    fn prepare(
        &self,
        what: &'static str,
        sql: &str,
    ) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
        self.conn.prepare_cached(&for_sqlite(sql)).map_err(db(what))
    }
}

impl Statements for Sqlite<'_> {
    const NAME: &'static str = "sqlite";
    const USES: &'static str = "SELECT resource, in_use, 0 FROM usages WHERE instance = $1
        UNION ALL
        SELECT resource, 0, SUM(MAX(delta, 0)) FROM reservations
        WHERE instance = $1 AND expires_ms > $2 GROUP BY resource";
    const ADD_USAGE: &'static str = "INSERT INTO usages (instance, resource, in_use)
        VALUES ($1, $2, MAX($3, 0))
        ON CONFLICT (instance, resource) DO UPDATE SET in_use = CASE
          WHEN $3 > 0 AND in_use > 9223372036854775807 - $3 THEN 9223372036854775807
          ELSE MAX(in_use + $3, 0) END";
    const TOUCH_AGENT: &'static str = "INSERT INTO agents (id, last_report_ms, last_seq)
        VALUES ($1, $2, $3)
        ON CONFLICT (id) DO UPDATE SET last_report_ms = excluded.last_report_ms,
          last_seq = MAX(last_seq, excluded.last_seq)";

    async fn execute(
        &mut self,
        what: &'static str,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<u64, StoreError> {
        let n = self
            .prepare(what, sql)?
            .execute(rusqlite::params_from_iter(args))
            .map_err(db(what))?;
        Ok(n as u64)
    }

    async fn query(
        &mut self,
        what: &'static str,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.prepare(what, sql)?;
        let width = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args))
            .map_err(db(what))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(db(what))? {
            let values = (0..width)
                .map(|k| r.get_ref(k).map(value))
                .collect::<Result<_, _>>()
                .map_err(db(what))?;
            out.push(Row { what, values });
        }
        Ok(out)
    }

    /// The transaction is `BEGIN IMMEDIATE`: it holds the database's write lock already.
    async fn lock_instance(&mut self, _: &InstanceId) -> Result<(), StoreError> {
        Ok(())
    }

    async fn lock_reservation(&mut self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// One insert per key: SQLite has no arrays to pass them in at once.
    async fn record_reports(
        &mut self,
        agent: &Label,
        seqs: &[u64],
        now: Timestamp,
    ) -> Result<BTreeSet<i64>, StoreError> {
        let mut key = self.prepare(
            "recording a report",
            "INSERT INTO applied_reports (agent, seq, applied_ms) VALUES ($1, $2, $3)
             ON CONFLICT (agent, seq) DO NOTHING",
        )?;
        let mut fresh = BTreeSet::new();
        for &seq in seqs {
            let seq = i64::try_from(seq).map_err(|_| StoreError::Invalid {
                field: "batches.seq".into(),
                reason: "too large".into(),
            })?;
            let n = key
                .execute(params![agent.as_str(), seq, now.as_millisecond()])
                .map_err(db("recording a report"))?;
            if n > 0 {
                fresh.insert(seq);
            }
        }
        Ok(fresh)
    }

    async fn report_marks(
        &mut self,
        instances: &[&str],
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let what = "reading report marks";
        let mut read = self.prepare(
            what,
            "SELECT agent, instance, last_at_ms FROM report_marks WHERE instance = $1",
        )?;
        let mut out = Vec::new();
        for i in instances {
            let rows = read
                .query_map(params![i], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(db(what))?;
            for row in rows {
                out.push(row.map_err(db(what))?);
            }
        }
        Ok(out)
    }

    async fn set_report_marks(
        &mut self,
        agent: &Label,
        marks: &[(&str, i64)],
    ) -> Result<(), StoreError> {
        let what = "recording report marks";
        let mut set = self.prepare(
            what,
            "INSERT INTO report_marks (agent, instance, last_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (instance, agent) DO UPDATE SET
               last_at_ms = MAX(last_at_ms, excluded.last_at_ms)",
        )?;
        for (instance, at) in marks {
            set.execute(params![agent.as_str(), instance, at])
                .map_err(db(what))?;
        }
        Ok(())
    }

    async fn add_intervals(&mut self, intervals: &Intervals<'_>) -> Result<(), StoreError> {
        let what = "adding 5-minute traffic";
        let mut add = self.prepare(
            what,
            "INSERT INTO traffic_5m (instance, bucket_ms, upload, download, estimated)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (instance, bucket_ms) DO UPDATE SET
               upload = CASE WHEN upload > 9223372036854775807 - excluded.upload
                 THEN 9223372036854775807 ELSE upload + excluded.upload END,
               download = CASE WHEN download > 9223372036854775807 - excluded.download
                 THEN 9223372036854775807 ELSE download + excluded.download END,
               estimated = MAX(estimated, excluded.estimated)",
        )?;
        for ((instance, bucket), i) in intervals {
            add.execute(params![
                instance,
                bucket,
                clamp(i.upload),
                clamp(i.download),
                i64::from(i.estimated)
            ])
            .map_err(db(what))?;
        }
        Ok(())
    }

    async fn intervals_of(
        &mut self,
        ids: &[&str],
        (from, to): (i64, i64),
    ) -> Result<Curves, StoreError> {
        let what = "reading 5-minute traffic";
        let mut read = self.prepare(
            what,
            "SELECT instance, bucket_ms, upload, download, estimated FROM traffic_5m
             WHERE instance = ANY($1::TEXT[]) AND bucket_ms >= $2 AND bucket_ms < $3
             ORDER BY instance, bucket_ms",
        )?;
        let mut rows = read
            .query(params![Arg::Texts(ids), from, to])
            .map_err(db(what))?;
        let mut out = Curves::new();
        // Rows come instance by instance: one string per instance, not per row.
        let mut current: Option<(String, Vec<(i64, Interval)>)> = None;
        while let Some(r) = rows.next().map_err(db(what))? {
            let int = |i| {
                r.get_ref(i)
                    .and_then(|v| v.as_i64().map_err(rusqlite::Error::from))
                    .map_err(db(what))
            };
            let name = r
                .get_ref(0)
                .and_then(|v| v.as_str().map_err(rusqlite::Error::from))
                .map_err(db(what))?;
            let interval = Interval {
                upload: int(2)?.max(0) as u64,
                download: int(3)?.max(0) as u64,
                estimated: int(4)? != 0,
            };
            match &mut current {
                Some((n, curve)) if n == name => curve.push((int(1)?, interval)),
                _ => {
                    if let Some((n, curve)) = current.take() {
                        out.insert(n, curve);
                    }
                    current = Some((name.to_owned(), vec![(int(1)?, interval)]));
                }
            }
        }
        if let Some((n, curve)) = current {
            out.insert(n, curve);
        }
        drop(rows);
        let what = "reading packed days of 5-minute traffic";
        let mut read = self.prepare(
            what,
            "SELECT instance, day_ms, curve FROM traffic_days
             WHERE instance = ANY($1::TEXT[]) AND day_ms > $2 AND day_ms < $3
             ORDER BY instance, day_ms",
        )?;
        let mut rows = read
            .query(params![Arg::Texts(ids), from - DAY_MS, to])
            .map_err(db(what))?;
        let mut packed = Curves::new();
        while let Some(r) = rows.next().map_err(db(what))? {
            let name = r
                .get_ref(0)
                .and_then(|v| v.as_str().map_err(rusqlite::Error::from))
                .map_err(db(what))?;
            let day_ms: i64 = r.get(1).map_err(db(what))?;
            let bytes = r
                .get_ref(2)
                .and_then(|v| v.as_blob().map_err(rusqlite::Error::from))
                .map_err(db(what))?;
            let day = day_ms.div_euclid(1000);
            let curve = day_curve::decode(day, bytes).map_err(|e| StoreError::Database {
                what,
                source: cause(e),
            })?;
            let into = match packed.get_mut(name) {
                Some(c) => c,
                None => packed.entry(name.to_owned()).or_default(),
            };
            into.extend(
                curve
                    .into_iter()
                    .map(|(t, i)| (t * 1000, i))
                    .filter(|(t, _)| (from..to).contains(t)),
            );
        }
        Ok(merge_curves(packed, out))
    }

    async fn add_traffic(&mut self, agent: &Label, hours: &Hours<'_>) -> Result<(), StoreError> {
        let mut add = self.prepare(
            "adding traffic",
            "INSERT INTO traffic_hours (instance, hour_ms, upload, download) VALUES ($1, $2, $3, $4)
             ON CONFLICT (instance, hour_ms) DO UPDATE SET
               upload = CASE WHEN upload > 9223372036854775807 - excluded.upload
                 THEN 9223372036854775807 ELSE upload + excluded.upload END,
               download = CASE WHEN download > 9223372036854775807 - excluded.download
                 THEN 9223372036854775807 ELSE download + excluded.download END",
        )?;
        for ((instance, hour), (up, down)) in hours {
            add.execute(params![instance, hour, clamp(*up), clamp(*down)])
                .map_err(db("adding traffic"))?;
        }
        let mut share = self.prepare(
            "adding a host's traffic",
            "INSERT INTO traffic_by_agent (instance, hour_ms, agent, upload, download)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (instance, hour_ms, agent) DO UPDATE SET
               upload = CASE WHEN upload > 9223372036854775807 - excluded.upload
                 THEN 9223372036854775807 ELSE upload + excluded.upload END,
               download = CASE WHEN download > 9223372036854775807 - excluded.download
                 THEN 9223372036854775807 ELSE download + excluded.download END",
        )?;
        for ((instance, hour), (up, down)) in hours {
            share
                .execute(params![
                    instance,
                    hour,
                    agent.as_str(),
                    clamp(*up),
                    clamp(*down)
                ])
                .map_err(db("adding a host's traffic"))?;
        }
        Ok(())
    }
}
