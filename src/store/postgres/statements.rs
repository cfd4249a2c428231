//! [`Statements`] on a PostgreSQL connection or transaction, and the statements
//! PostgreSQL spells its own way: row locks, `GREATEST`, and the report keys and hourly
//! traffic each sent in one statement as arrays (`UNNEST`), keys sorted so concurrent
//! agents touching the same rows lock them in the same order.

use std::collections::BTreeSet;

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::types::{ToSql, Type};

use super::pg;
use crate::model::day_curve;
use crate::model::ids::{InstanceId, Label};
use crate::model::percentile::Interval;
use crate::store::backend::{Arg, Curves, DAY_MS, Row, Statements, Value, clamp, merge_curves};
use crate::store::model::{StoreError, cause};
use crate::store::report::{Hours, Intervals};

/// The store's statements on `C`: a pooled connection (reads, single statements) or a
/// transaction on one.
pub struct Postgres<'c, C> {
    client: &'c C,
}

impl<'c, C: GenericClient> Postgres<'c, C> {
    pub fn new(client: &'c C) -> Postgres<'c, C> {
        Postgres { client }
    }

    async fn prepare(
        &self,
        what: &'static str,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, StoreError> {
        self.client.prepare_cached(sql).await.map_err(pg(what))
    }
}

/// `a` as what tokio-postgres binds.
fn bound<'a>(a: &'a Arg<'_>) -> &'a (dyn ToSql + Sync) {
    match a {
        Arg::Int(n) => n,
        Arg::OptInt(n) => n,
        Arg::Text(s) => s,
        Arg::OptText(s) => s,
        Arg::Bytes(b) => b,
        Arg::Texts(list) => list,
    }
}

fn value(r: &tokio_postgres::Row, k: usize) -> Result<Value, tokio_postgres::Error> {
    let ty = r.columns()[k].type_();
    Ok(if *ty == Type::INT8 {
        r.try_get::<_, Option<i64>>(k)?
            .map_or(Value::Null, Value::Int)
    } else if *ty == Type::INT4 {
        r.try_get::<_, Option<i32>>(k)?
            .map_or(Value::Null, |n| Value::Int(n.into()))
    } else if *ty == Type::BYTEA {
        r.try_get::<_, Option<Vec<u8>>>(k)?
            .map_or(Value::Null, Value::Bytes)
    } else {
        r.try_get::<_, Option<String>>(k)?
            .map_or(Value::Null, Value::Text)
    })
}

impl<C: GenericClient + Sync> Statements for Postgres<'_, C> {
    const NAME: &'static str = "postgres";
    const USES: &'static str = "SELECT resource, in_use, 0::BIGINT FROM usages WHERE instance = $1
        UNION ALL
        SELECT resource, 0::BIGINT, SUM(GREATEST(delta, 0))::BIGINT FROM reservations
        WHERE instance = $1 AND expires_ms > $2 GROUP BY resource";
    const ADD_USAGE: &'static str = "INSERT INTO usages (instance, resource, in_use)
        VALUES ($1, $2, GREATEST($3::BIGINT, 0))
        ON CONFLICT (instance, resource)
        DO UPDATE SET in_use = CASE
          WHEN $3::BIGINT > 0 AND usages.in_use > 9223372036854775807 - $3::BIGINT
          THEN 9223372036854775807
          ELSE GREATEST(usages.in_use + $3::BIGINT, 0) END";
    const TOUCH_AGENT: &'static str = "INSERT INTO agents (id, last_report_ms, last_seq)
        VALUES ($1, $2, $3)
        ON CONFLICT (id) DO UPDATE SET last_report_ms = excluded.last_report_ms,
          last_seq = GREATEST(agents.last_seq, excluded.last_seq)";

    async fn execute(
        &mut self,
        what: &'static str,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<u64, StoreError> {
        let s = self.prepare(what, sql).await?;
        let args: Vec<_> = args.iter().map(bound).collect();
        self.client.execute(&s, &args).await.map_err(pg(what))
    }

    async fn query(
        &mut self,
        what: &'static str,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Vec<Row>, StoreError> {
        let s = self.prepare(what, sql).await?;
        let args: Vec<_> = args.iter().map(bound).collect();
        let rows = self.client.query(&s, &args).await.map_err(pg(what))?;
        rows.iter()
            .map(|r| {
                let values = (0..r.len())
                    .map(|k| value(r, k))
                    .collect::<Result<_, _>>()
                    .map_err(pg(what))?;
                Ok(Row { what, values })
            })
            .collect()
    }

    /// Lock the instance's row (creating it): every change to its use or reservations
    /// goes through here first, so concurrent stores serialise per instance.
    async fn lock_instance(&mut self, i: &InstanceId) -> Result<(), StoreError> {
        let what = "locking an instance";
        let id = [Arg::Text(i.as_str())];
        self.execute(
            what,
            "INSERT INTO instances (id) VALUES ($1) ON CONFLICT (id) DO NOTHING",
            &id,
        )
        .await?;
        self.query(
            what,
            "SELECT 1 FROM instances WHERE id = $1 FOR UPDATE",
            &id,
        )
        .await
        .map(drop)
    }

    /// The reservation's instance, locked; the engine finds out after whether the
    /// reservation is still there (someone may have settled it while we waited).
    async fn lock_reservation(&mut self, id: &str) -> Result<(), StoreError> {
        let owner = self
            .query(
                "reading a reservation",
                "SELECT instance FROM reservations WHERE id = $1 LIMIT 1",
                &[Arg::Text(id)],
            )
            .await?;
        let Some(owner) = owner.first() else {
            return Ok(());
        };
        if let Ok(i) = InstanceId::new(&owner.get::<String>(0)?) {
            self.lock_instance(&i).await?;
        }
        Ok(())
    }

    async fn record_reports(
        &mut self,
        agent: &Label,
        seqs: &[u64],
        now: Timestamp,
    ) -> Result<BTreeSet<i64>, StoreError> {
        let what = "recording a report";
        let seqs: Vec<i64> = seqs.iter().copied().map(clamp).collect();
        let s = self
            .prepare(
                what,
                "INSERT INTO applied_reports (agent, seq, applied_ms)
                 SELECT $1, s, $3 FROM UNNEST($2::BIGINT[]) AS s
                 ON CONFLICT (agent, seq) DO NOTHING RETURNING seq",
            )
            .await?;
        let rows = self
            .client
            .query(&s, &[&agent.as_str(), &seqs, &now.as_millisecond()])
            .await
            .map_err(pg(what))?;
        rows.iter()
            .map(|r| r.try_get::<_, i64>(0).map_err(pg(what)))
            .collect()
    }

    async fn report_marks(
        &mut self,
        instances: &[&str],
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let what = "reading report marks";
        let s = self
            .prepare(
                what,
                "SELECT agent, instance, last_at_ms FROM report_marks
                 WHERE instance = ANY($1::TEXT[])",
            )
            .await?;
        let rows = self
            .client
            .query(&s, &[&instances])
            .await
            .map_err(pg(what))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(pg(what))?,
                    r.try_get(1).map_err(pg(what))?,
                    r.try_get(2).map_err(pg(what))?,
                ))
            })
            .collect()
    }

    async fn set_report_marks(
        &mut self,
        agent: &Label,
        marks: &[(&str, i64)],
    ) -> Result<(), StoreError> {
        let what = "recording report marks";
        let instances: Vec<&str> = marks.iter().map(|m| m.0).collect();
        let ats: Vec<i64> = marks.iter().map(|m| m.1).collect();
        let s = self
            .prepare(
                what,
                "INSERT INTO report_marks (agent, instance, last_at_ms)
                 SELECT $1, i, t FROM UNNEST($2::TEXT[], $3::BIGINT[]) AS m (i, t)
                 ON CONFLICT (instance, agent) DO UPDATE SET
                   last_at_ms = GREATEST(report_marks.last_at_ms, excluded.last_at_ms)",
            )
            .await?;
        self.client
            .execute(&s, &[&agent.as_str(), &instances, &ats])
            .await
            .map(drop)
            .map_err(pg(what))
    }

    async fn add_intervals(&mut self, intervals: &Intervals<'_>) -> Result<(), StoreError> {
        let what = "adding 5-minute traffic";
        let mut ids = Vec::with_capacity(intervals.len());
        let mut bs = Vec::with_capacity(intervals.len());
        let mut ups = Vec::with_capacity(intervals.len());
        let mut downs = Vec::with_capacity(intervals.len());
        let mut est = Vec::with_capacity(intervals.len());
        for ((i, b), interval) in intervals {
            ids.push(*i);
            bs.push(*b);
            ups.push(clamp(interval.upload));
            downs.push(clamp(interval.download));
            est.push(i64::from(interval.estimated));
        }
        let s = self
            .prepare(
                what,
                "INSERT INTO traffic_5m (instance, bucket_ms, upload, download, estimated)
                 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[],
                                      $5::BIGINT[])
                 ON CONFLICT (instance, bucket_ms) DO UPDATE SET
                   upload = CASE
                     WHEN traffic_5m.upload > 9223372036854775807 - excluded.upload
                     THEN 9223372036854775807 ELSE traffic_5m.upload + excluded.upload END,
                   download = CASE
                     WHEN traffic_5m.download > 9223372036854775807 - excluded.download
                     THEN 9223372036854775807 ELSE traffic_5m.download + excluded.download END,
                   estimated = GREATEST(traffic_5m.estimated, excluded.estimated)",
            )
            .await?;
        self.client
            .execute(&s, &[&ids, &bs, &ups, &downs, &est])
            .await
            .map(drop)
            .map_err(pg(what))
    }

    async fn intervals_of(
        &mut self,
        ids: &[&str],
        (from, to): (i64, i64),
    ) -> Result<Curves, StoreError> {
        let what = "reading 5-minute traffic";
        // One row per instance, its columns as arrays (binary on the wire): a month of a
        // thousand instances is a thousand rows, not nine million. The three arrays take
        // the same rows in the same order; the order itself is restored here.
        let s = self
            .prepare(
                what,
                "SELECT instance, array_agg(bucket_ms), array_agg(upload), array_agg(download),
                        array_agg(estimated)
                 FROM traffic_5m
                 WHERE instance = ANY($1::TEXT[]) AND bucket_ms >= $2 AND bucket_ms < $3
                 GROUP BY instance",
            )
            .await?;
        let rows = self
            .client
            .query(&s, &[&ids, &from, &to])
            .await
            .map_err(pg(what))?;
        let mut out = Curves::new();
        for r in rows {
            let name: String = r.try_get(0).map_err(pg(what))?;
            let buckets: Vec<i64> = r.try_get(1).map_err(pg(what))?;
            let ups: Vec<i64> = r.try_get(2).map_err(pg(what))?;
            let downs: Vec<i64> = r.try_get(3).map_err(pg(what))?;
            let est: Vec<i64> = r.try_get(4).map_err(pg(what))?;
            let mut curve: Vec<(i64, Interval)> = buckets
                .into_iter()
                .zip(ups.into_iter().zip(downs.into_iter().zip(est)))
                .map(|(b, (u, (d, e)))| {
                    let interval = Interval {
                        upload: u.max(0) as u64,
                        download: d.max(0) as u64,
                        estimated: e != 0,
                    };
                    (b, interval)
                })
                .collect();
            curve.sort_unstable_by_key(|(b, _)| *b);
            out.insert(name, curve);
        }
        let what = "reading packed days of 5-minute traffic";
        let s = self
            .prepare(
                what,
                "SELECT instance, day_ms, curve FROM traffic_days
                 WHERE instance = ANY($1::TEXT[]) AND day_ms > $2 AND day_ms < $3
                 ORDER BY instance, day_ms",
            )
            .await?;
        let rows = self
            .client
            .query(&s, &[&ids, &(from - DAY_MS), &to])
            .await
            .map_err(pg(what))?;
        let mut packed = Curves::new();
        for r in rows {
            let name: &str = r.try_get(0).map_err(pg(what))?;
            let day_ms: i64 = r.try_get(1).map_err(pg(what))?;
            let bytes: &[u8] = r.try_get(2).map_err(pg(what))?;
            let curve = day_curve::decode(day_ms.div_euclid(1000), bytes).map_err(|e| {
                StoreError::Database {
                    what,
                    source: cause(e),
                }
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
        let what = "adding traffic";
        let mut ids = Vec::with_capacity(hours.len());
        let mut hs = Vec::with_capacity(hours.len());
        let mut ups = Vec::with_capacity(hours.len());
        let mut downs = Vec::with_capacity(hours.len());
        for ((i, h), (u, d)) in hours {
            ids.push(*i);
            hs.push(*h);
            ups.push(clamp(*u));
            downs.push(clamp(*d));
        }
        let s = self
            .prepare(
                what,
                "INSERT INTO traffic_hours (instance, hour_ms, upload, download)
                 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[])
                 ON CONFLICT (instance, hour_ms) DO UPDATE SET
                   upload = CASE
                     WHEN traffic_hours.upload > 9223372036854775807 - excluded.upload
                     THEN 9223372036854775807 ELSE traffic_hours.upload + excluded.upload END,
                   download = CASE
                     WHEN traffic_hours.download > 9223372036854775807 - excluded.download
                     THEN 9223372036854775807 ELSE traffic_hours.download + excluded.download END",
            )
            .await?;
        self.client
            .execute(&s, &[&ids, &hs, &ups, &downs])
            .await
            .map_err(pg(what))?;
        let what = "adding a host's traffic";
        let share = self
            .prepare(
                what,
                "INSERT INTO traffic_by_agent (instance, hour_ms, agent, upload, download)
                 SELECT i, h, $5, u, d FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[]) AS t(i, h, u, d)
                 ON CONFLICT (instance, hour_ms, agent) DO UPDATE SET
                   upload = CASE
                     WHEN traffic_by_agent.upload > 9223372036854775807 - excluded.upload
                     THEN 9223372036854775807 ELSE traffic_by_agent.upload + excluded.upload END,
                   download = CASE
                     WHEN traffic_by_agent.download > 9223372036854775807 - excluded.download
                     THEN 9223372036854775807 ELSE traffic_by_agent.download + excluded.download END",
            )
            .await?;
        self.client
            .execute(&share, &[&ids, &hs, &ups, &downs, &agent.as_str()])
            .await
            .map(drop)
            .map_err(pg(what))
    }
}
