//! Every store operation as one function on a connection, inside a transaction the
//! caller opened: [`super::SqliteStore`] gives each its own, the group-commit writer
//! ([`super::writer`]) runs many in one.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rusqlite::{Connection, OptionalExtension, params};

use super::db;
use crate::model::ids::{InstanceId, Label};
use crate::model::token::{Role, TokenId, TokenInfo};
use crate::model::units::Rate;
use crate::store::model::{
    Deltas, Limit, Membership, Scope, Standing, StoreError, check, standings_from,
};
use crate::store::report::{Batch, Ingested, hourly};
use crate::store::traffic::{TrafficQuota, resolve};
use crate::store::view::{AgentView, Stats};

fn ts(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

pub fn set_limit(
    conn: &Connection,
    scope: &Scope,
    resource: &Label,
    limit: Option<Limit>,
) -> Result<(), StoreError> {
    let (kind, name) = scope.key();
    match limit {
        Some(l) => conn.execute(
            "INSERT INTO limits (scope_kind, scope, resource, hard_limit) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (scope_kind, scope, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
            params![kind, name, resource.as_str(), l.to_i64()],
        ),
        None => conn.execute(
            "DELETE FROM limits WHERE scope_kind = ?1 AND scope = ?2 AND resource = ?3",
            params![kind, name, resource.as_str()],
        ),
    }
    .map_err(db("writing a limit"))?;
    Ok(())
}

pub fn set_membership(
    conn: &Connection,
    instance: &InstanceId,
    m: &Membership,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO instances (id, project, class) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET project = excluded.project, class = excluded.class",
        params![
            instance.as_str(),
            m.project.as_ref().map(Label::as_str),
            m.class.as_ref().map(Label::as_str)
        ],
    )
    .map_err(db("writing an instance"))?;
    Ok(())
}

/// The instance's own project and class (not the project's class).
pub fn membership(conn: &Connection, instance: &InstanceId) -> Result<Membership, StoreError> {
    let row: Option<(Option<String>, Option<String>)> = conn
        .query_row(
            "SELECT project, class FROM instances WHERE id = ?1",
            params![instance.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db("reading an instance"))?;
    let (p, c) = row.unwrap_or_default();
    Ok(Membership {
        project: p.and_then(|p| Label::new(&p).ok()),
        class: c.and_then(|c| Label::new(&c).ok()),
    })
}

pub fn set_project_class(
    conn: &Connection,
    project: &Label,
    class: Option<&Label>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO projects (id, class) VALUES (?1, ?2)
         ON CONFLICT (id) DO UPDATE SET class = excluded.class",
        params![project.as_str(), class.map(Label::as_str)],
    )
    .map_err(db("writing a project"))?;
    Ok(())
}

pub fn project_class(conn: &Connection, project: &Label) -> Result<Option<String>, StoreError> {
    conn.query_row(
        "SELECT class FROM projects WHERE id = ?1",
        params![project.as_str()],
        |r| r.get::<_, Option<String>>(0),
    )
    .optional()
    .map(Option::flatten)
    .map_err(db("reading a project"))
}

/// (project, effective class) of an instance: its own class, else its project's.
fn chain_of(
    conn: &Connection,
    instance: &InstanceId,
) -> Result<(Option<String>, Option<String>), StoreError> {
    let row = conn
        .query_row(
            "SELECT i.project, COALESCE(i.class, p.class) FROM instances i
             LEFT JOIN projects p ON p.id = i.project WHERE i.id = ?1",
            params![instance.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db("reading an instance"))?;
    Ok(row.unwrap_or_default())
}

pub fn standings(
    conn: &Connection,
    instance: &InstanceId,
    now: Timestamp,
) -> Result<Vec<Standing>, StoreError> {
    let (project, class) = chain_of(conn, instance)?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT scope_kind, resource, hard_limit FROM limits
             WHERE (scope_kind = 'instance' AND scope = ?1)
                OR (scope_kind = 'project' AND scope = ?2)
                OR (scope_kind = 'class' AND scope = ?3)
                OR scope_kind = 'default'",
        )
        .map_err(db("reading limits"))?;
    let limits: Vec<(String, String, i64)> = stmt
        .query_map(params![instance.as_str(), project, class], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(db("reading limits"))?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT resource, in_use, 0 FROM usages WHERE instance = ?1
             UNION ALL
             SELECT resource, 0, SUM(MAX(delta, 0)) FROM reservations
             WHERE instance = ?1 AND expires_ms > ?2 GROUP BY resource",
        )
        .map_err(db("reading usage"))?;
    let uses: Vec<(String, i64, i64)> = stmt
        .query_map(params![instance.as_str(), now.as_millisecond()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(db("reading usage"))?;
    standings_from(limits, uses)
}

/// Check `deltas` against the standings and, if they fit, record the reservation.
pub fn reserve(
    conn: &Connection,
    instance: &InstanceId,
    deltas: &Deltas,
    id: &str,
    expires_ms: i64,
    now: Timestamp,
) -> Result<(), StoreError> {
    check(&standings(conn, instance, now)?, deltas).map_err(StoreError::OverQuota)?;
    let mut put = conn
        .prepare_cached(
            "INSERT INTO reservations (id, instance, resource, delta, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(db("writing a reservation"))?;
    for (resource, delta) in deltas {
        put.execute(params![
            id,
            instance.as_str(),
            resource.as_str(),
            delta,
            expires_ms
        ])
        .map_err(db("writing a reservation"))?;
    }
    Ok(())
}

/// Remove a reservation's rows, returning them; unknown id: not found.
fn take_reservation(conn: &Connection, id: &str) -> Result<Vec<(String, String, i64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "DELETE FROM reservations WHERE id = ?1 RETURNING instance, resource, delta",
        )
        .map_err(db("removing a reservation"))?;
    let rows: Vec<(String, String, i64)> = stmt
        .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|rows| rows.collect())
        .map_err(db("removing a reservation"))?;
    if rows.is_empty() {
        return Err(StoreError::NotFound {
            what: "reservation",
            name: id.to_owned(),
        });
    }
    Ok(rows)
}

pub fn commit(conn: &Connection, id: &str) -> Result<(), StoreError> {
    let rows = take_reservation(conn, id)?;
    let mut put = conn
        .prepare_cached(
            "INSERT INTO usages (instance, resource, in_use) VALUES (?1, ?2, MAX(?3, 0))
             ON CONFLICT (instance, resource) DO UPDATE SET in_use = MAX(in_use + ?3, 0)",
        )
        .map_err(db("writing usage"))?;
    for (instance, resource, delta) in rows {
        put.execute(params![instance, resource, delta])
            .map_err(db("writing usage"))?;
    }
    Ok(())
}

pub fn rollback(conn: &Connection, id: &str) -> Result<(), StoreError> {
    take_reservation(conn, id).map(|_| ())
}

/// Drop reservations that lapsed by `now`; how many reservations (not rows).
pub fn expire(conn: &Connection, now: Timestamp) -> Result<usize, StoreError> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM reservations WHERE expires_ms <= ?1 RETURNING id")
        .map_err(db("expiring reservations"))?;
    let ids: BTreeSet<String> = stmt
        .query_map(params![now.as_millisecond()], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(db("expiring reservations"))?;
    Ok(ids.len())
}

pub fn usage_set(
    conn: &Connection,
    instance: &InstanceId,
    resource: &Label,
    in_use: u64,
) -> Result<(), StoreError> {
    let n = i64::try_from(in_use).map_err(|_| StoreError::Invalid {
        field: resource.as_str().into(),
        reason: "too large".into(),
    })?;
    conn.execute(
        "INSERT INTO usages (instance, resource, in_use) VALUES (?1, ?2, ?3)
         ON CONFLICT (instance, resource) DO UPDATE SET in_use = excluded.in_use",
        params![instance.as_str(), resource.as_str(), n],
    )
    .map_err(db("writing usage"))?;
    Ok(())
}

/// Use of a counted resource back to zero (one instance, or every one); how many rows.
pub fn usage_reset(
    conn: &Connection,
    resource: &Label,
    instance: Option<&InstanceId>,
) -> Result<usize, StoreError> {
    conn.execute(
        "UPDATE usages SET in_use = 0
         WHERE resource = ?1 AND in_use <> 0 AND (?2 IS NULL OR instance = ?2)",
        params![resource.as_str(), instance.map(InstanceId::as_str)],
    )
    .map_err(db("resetting usage"))
}

/// Forget an instance: its use, reservations, limits, traffic quotas and membership.
/// Its traffic history stays (it is billing data).
pub fn destroy_instance(conn: &Connection, instance: &InstanceId) -> Result<(), StoreError> {
    let id = instance.as_str();
    for text in [
        "DELETE FROM usages WHERE instance = ?1",
        "DELETE FROM reservations WHERE instance = ?1",
        "DELETE FROM limits WHERE scope_kind = 'instance' AND scope = ?1",
        "DELETE FROM traffic_quotas WHERE scope_kind = 'instance' AND scope = ?1",
        "DELETE FROM instances WHERE id = ?1",
    ] {
        conn.execute(text, params![id])
            .map_err(db("destroying an instance"))?;
    }
    Ok(())
}

/// Forget a project: its limits and class; its instances leave it.
pub fn destroy_project(conn: &Connection, project: &Label) -> Result<(), StoreError> {
    let id = project.as_str();
    clear_scope(conn, &Scope::Project(project.clone()))?;
    conn.execute("DELETE FROM projects WHERE id = ?1", params![id])
        .and_then(|_| {
            conn.execute(
                "UPDATE instances SET project = NULL WHERE project = ?1",
                params![id],
            )
        })
        .map_err(db("destroying a project"))?;
    Ok(())
}

/// Remove every limit and traffic quota set at `scope`; whether there were any.
pub fn clear_scope(conn: &Connection, scope: &Scope) -> Result<bool, StoreError> {
    let (kind, name) = scope.key();
    let a = conn
        .execute(
            "DELETE FROM limits WHERE scope_kind = ?1 AND scope = ?2",
            params![kind, name],
        )
        .map_err(db("clearing limits"))?;
    let b = conn
        .execute(
            "DELETE FROM traffic_quotas WHERE scope_kind = ?1 AND scope = ?2",
            params![kind, name],
        )
        .map_err(db("clearing traffic quotas"))?;
    Ok(a + b > 0)
}

/// What is set at exactly `scope`.
pub fn scope_limits(
    conn: &Connection,
    scope: &Scope,
) -> Result<(BTreeMap<String, Limit>, Vec<TrafficQuota>), StoreError> {
    let (kind, name) = scope.key();
    let mut limits = BTreeMap::new();
    let mut stmt = conn
        .prepare_cached(
            "SELECT resource, hard_limit FROM limits WHERE scope_kind = ?1 AND scope = ?2",
        )
        .map_err(db("reading limits"))?;
    let rows = stmt
        .query_map(params![kind, name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(db("reading limits"))?;
    for row in rows {
        let (resource, v) = row.map_err(db("reading limits"))?;
        let l = Limit::from_i64(v).map_err(|reason| StoreError::Database {
            what: "reading limits",
            reason,
        })?;
        limits.insert(resource, l);
    }
    let traffic = traffic_rows(
        conn,
        "WHERE scope_kind = ?1 AND scope = ?2",
        params![kind, name],
    )?
    .into_iter()
    .map(|(_, q)| q)
    .collect();
    Ok((limits, traffic))
}

pub fn set_traffic_quota(
    conn: &Connection,
    scope: &Scope,
    q: &TrafficQuota,
) -> Result<(), StoreError> {
    let (kind, name) = scope.key();
    let (up, down) = q.on_exceed.rates();
    let bps = |r: Option<Rate>| r.map(|r| i64::try_from(r.bits_per_sec()).unwrap_or(i64::MAX));
    conn.execute(
        "INSERT INTO traffic_quotas
           (scope_kind, scope, resource, period, limit_bytes, on_exceed, upload_rate, download_rate)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (scope_kind, scope, resource, period) DO UPDATE SET
           limit_bytes = excluded.limit_bytes, on_exceed = excluded.on_exceed,
           upload_rate = excluded.upload_rate, download_rate = excluded.download_rate",
        params![
            kind,
            name,
            q.resource.as_str(),
            q.period.as_str(),
            i64::try_from(q.limit.get()).unwrap_or(i64::MAX),
            q.on_exceed.name(),
            bps(up),
            bps(down)
        ],
    )
    .map_err(db("writing a traffic quota"))?;
    Ok(())
}

/// Traffic quota rows with their scope kind, filtered by `filter` (a WHERE clause).
fn traffic_rows(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<(String, TrafficQuota)>, StoreError> {
    let sql = format!(
        "SELECT scope_kind, resource, period, limit_bytes, on_exceed, upload_rate, download_rate
         FROM traffic_quotas {filter}"
    );
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(db("reading traffic quotas"))?;
    let rows = stmt
        .query_map(args, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        })
        .map_err(db("reading traffic quotas"))?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, resource, period, limit, on_exceed, up, down) =
            row.map_err(db("reading traffic quotas"))?;
        let q = TrafficQuota::from_stored(&resource, &period, limit, &on_exceed, up, down)
            .map_err(|reason| StoreError::Database {
                what: "reading traffic quotas",
                reason,
            })?;
        out.push((kind, q));
    }
    Ok(out)
}

/// The traffic quotas in force for `instance`: per (resource, period), the most
/// specific level that sets one, with that level's name.
pub fn traffic_quotas(
    conn: &Connection,
    instance: &InstanceId,
) -> Result<Vec<(TrafficQuota, &'static str)>, StoreError> {
    let (project, class) = chain_of(conn, instance)?;
    let rows = traffic_rows(
        conn,
        "WHERE (scope_kind = 'instance' AND scope = ?1)
            OR (scope_kind = 'project' AND scope = ?2)
            OR (scope_kind = 'class' AND scope = ?3)
            OR scope_kind = 'default'",
        params![instance.as_str(), project, class],
    )?;
    Ok(resolve(rows))
}

/// Bytes (upload, download) of `instance` in hours starting in [start, end).
pub fn traffic_between(
    conn: &Connection,
    instance: &InstanceId,
    start: Timestamp,
    end: Timestamp,
) -> Result<(u64, u64), StoreError> {
    conn.query_row(
        "SELECT COALESCE(SUM(upload), 0), COALESCE(SUM(download), 0) FROM traffic_hours
         WHERE instance = ?1 AND hour_ms >= ?2 AND hour_ms < ?3",
        params![
            instance.as_str(),
            start.as_millisecond(),
            end.as_millisecond()
        ],
        |r| {
            Ok((
                r.get::<_, i64>(0)?.max(0) as u64,
                r.get::<_, i64>(1)?.max(0) as u64,
            ))
        },
    )
    .map_err(db("reading traffic"))
}

/// The `limit` instances with the most traffic in [start, end): (instance, upload,
/// download), biggest total first.
pub fn top_traffic(
    conn: &Connection,
    start: Timestamp,
    end: Timestamp,
    limit: usize,
) -> Result<Vec<(String, u64, u64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT instance, SUM(upload), SUM(download) FROM traffic_hours
             WHERE hour_ms >= ?1 AND hour_ms < ?2
             GROUP BY instance ORDER BY SUM(upload) + SUM(download) DESC, instance LIMIT ?3",
        )
        .map_err(db("ranking traffic"))?;
    stmt.query_map(
        params![
            start.as_millisecond(),
            end.as_millisecond(),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?.max(0) as u64,
                r.get::<_, i64>(2)?.max(0) as u64,
            ))
        },
    )
    .and_then(|rows| rows.collect())
    .map_err(db("ranking traffic"))
}

/// Forget `instance`'s traffic in [start, end) (a panel's period reset); hours removed.
pub fn traffic_reset(
    conn: &Connection,
    instance: &InstanceId,
    start: Timestamp,
    end: Timestamp,
) -> Result<usize, StoreError> {
    conn.execute(
        "DELETE FROM traffic_hours WHERE instance = ?1 AND hour_ms >= ?2 AND hour_ms < ?3",
        params![
            instance.as_str(),
            start.as_millisecond(),
            end.as_millisecond()
        ],
    )
    .map_err(db("resetting traffic"))
}

/// Add the batches not seen before to the hourly traffic; record their keys.
pub fn ingest(
    conn: &Connection,
    agent: &Label,
    batches: &[Batch],
    tz: &TimeZone,
    now: Timestamp,
) -> Result<Ingested, StoreError> {
    let mut out = Ingested::default();
    let mut fresh = Vec::with_capacity(batches.len());
    let mut key = conn
        .prepare_cached(
            "INSERT INTO applied_reports (agent, seq, applied_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (agent, seq) DO NOTHING",
        )
        .map_err(db("recording a report"))?;
    for b in batches {
        let seq = i64::try_from(b.seq).map_err(|_| StoreError::Invalid {
            field: "batches.seq".into(),
            reason: "too large".into(),
        })?;
        if key
            .execute(params![agent.as_str(), seq, now.as_millisecond()])
            .map_err(db("recording a report"))?
            == 0
        {
            out.duplicates.push(b.seq);
            continue;
        }
        out.applied.push(b.seq);
        fresh.push(b);
    }
    let (hours, samples) = hourly(fresh, tz);
    out.samples = samples;
    let mut add = conn
        .prepare_cached(
            "INSERT INTO traffic_hours (instance, hour_ms, upload, download) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (instance, hour_ms) DO UPDATE SET
               upload = upload + excluded.upload, download = download + excluded.download",
        )
        .map_err(db("adding traffic"))?;
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for ((instance, hour), (up, down)) in hours {
        add.execute(params![instance, hour, clamp(up), clamp(down)])
            .map_err(db("adding traffic"))?;
    }
    if let Some(last) = batches.iter().map(|b| b.seq).max() {
        conn.execute(
            "INSERT INTO agents (id, last_report_ms, last_seq) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET last_report_ms = excluded.last_report_ms,
               last_seq = MAX(last_seq, excluded.last_seq)",
            params![agent.as_str(), now.as_millisecond(), clamp(last)],
        )
        .map_err(db("recording an agent"))?;
    }
    Ok(out)
}

/// Forget report keys recorded before `before` (a retry is never that late).
pub fn prune_applied(conn: &Connection, before: Timestamp) -> Result<usize, StoreError> {
    conn.execute(
        "DELETE FROM applied_reports WHERE applied_ms < ?1",
        params![before.as_millisecond()],
    )
    .map_err(db("pruning report keys"))
}

/// Names of every class or project something is set for.
pub fn scope_names(conn: &Connection, kind: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT scope FROM limits WHERE scope_kind = ?1
             UNION SELECT scope FROM traffic_quotas WHERE scope_kind = ?1
             UNION SELECT class FROM projects WHERE ?1 = 'class' AND class IS NOT NULL
             UNION SELECT class FROM instances WHERE ?1 = 'class' AND class IS NOT NULL
             UNION SELECT id FROM projects WHERE ?1 = 'project'
             ORDER BY 1",
        )
        .map_err(db("listing"))?;
    stmt.query_map(params![kind], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(db("listing"))
}

pub fn stats(conn: &Connection, now: Timestamp) -> Result<Stats, StoreError> {
    let count = |sql: &str| -> Result<u64, StoreError> {
        conn.query_row(sql, params![now.as_millisecond()], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(db("counting"))
    };
    let mut stmt = conn
        .prepare_cached("SELECT id, last_report_ms, last_seq FROM agents ORDER BY id")
        .map_err(db("listing agents"))?;
    let agents = stmt
        .query_map([], |r| {
            Ok(AgentView {
                agent: r.get(0)?,
                last_report: ts(r.get(1)?),
                last_seq: r.get::<_, i64>(2)?.max(0) as u64,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(db("listing agents"))?;
    Ok(Stats {
        backend: "sqlite".into(),
        instances: count(
            "SELECT COUNT(*) FROM (SELECT id FROM instances UNION SELECT instance FROM usages
             UNION SELECT instance FROM traffic_hours) WHERE ?1 IS NOT NULL",
        )?,
        projects: count("SELECT COUNT(*) FROM projects WHERE ?1 IS NOT NULL")?,
        classes: scope_names(conn, "class")?.len() as u64,
        active_reservations: count(
            "SELECT COUNT(DISTINCT id) FROM reservations WHERE expires_ms > ?1",
        )?,
        applied_reports: count("SELECT COUNT(*) FROM applied_reports WHERE ?1 IS NOT NULL")?,
        agents,
    })
}

pub fn token_insert(
    conn: &Connection,
    id: &TokenId,
    digest: &[u8; 32],
    role: &Role,
    now: Timestamp,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO tokens (id, digest, role, host, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            id.as_str(),
            &digest[..],
            role.name(),
            role.host().map(Label::as_str),
            now.as_millisecond()
        ],
    )
    .map_err(db("writing a token"))?;
    Ok(())
}

/// A live (not revoked) token's digest and role.
pub fn token_get(conn: &Connection, id: &TokenId) -> Result<Option<(Vec<u8>, Role)>, StoreError> {
    let row: Option<(Vec<u8>, String, Option<String>)> = conn
        .query_row(
            "SELECT digest, role, host FROM tokens WHERE id = ?1 AND revoked_ms IS NULL",
            params![id.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(db("reading a token"))?;
    row.map(|(d, role, host)| Ok((d, Role::from_parts(&role, host.as_deref())?)))
        .transpose()
}

pub fn token_list(conn: &Connection) -> Result<Vec<TokenInfo>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, role, host, created_ms, revoked_ms FROM tokens ORDER BY created_ms, id",
        )
        .map_err(db("listing tokens"))?;
    type Row = (String, String, Option<String>, i64, Option<i64>);
    let rows: Vec<Row> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(db("listing tokens"))?;
    rows.into_iter()
        .map(|(id, role, host, created, revoked)| {
            let role = Role::from_parts(&role, host.as_deref())?;
            Ok(TokenInfo {
                id: id.parse()?,
                role: role.name(),
                host: role.host().map(|h| h.as_str().to_owned()),
                created: ts(created),
                revoked: revoked.map(ts),
            })
        })
        .collect()
}

/// Revoke a token; not found if there is no live token with that id.
pub fn token_revoke(conn: &Connection, id: &TokenId, now: Timestamp) -> Result<(), StoreError> {
    let n = conn
        .execute(
            "UPDATE tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
            params![id.as_str(), now.as_millisecond()],
        )
        .map_err(db("revoking a token"))?;
    if n == 0 {
        return Err(StoreError::NotFound {
            what: "token",
            name: id.to_string(),
        });
    }
    Ok(())
}
